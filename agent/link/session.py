"""The meter side of the MQTT link as a sans-I/O state machine.

A transport (paho on CPython, ``agent/link/umqtt.py`` on MicroPython)
feeds it what happened - ``connected``, ``disconnected``, ``received``,
``puback`` - with time as inputs, and carries out the ``Out`` messages it
returns.  The agent shell hands verified commands to the meter core and
feeds the core's Ack/Publish actions back through ``ack`` and ``event``.

Durability: ``dirty`` is set whenever an event or ack entered the outbox
or the replay guard changed; the shell must then commit ``snapshot()``
before it publishes the ``Out``s returned by the same call (durable
before sent).  PUBACK removals and telemetry ride along with the next
commit.
"""

from agent import results
from agent.config import BOOL, STR, Field
from agent.link import envelope, topics
from agent.link.outbox import CRITICAL, EVENT, TELE, Outbox
from agent.link.replay import ReplayGuard

# Event kinds about money or the relay: never dropped from the outbox.
CRITICAL_KINDS = (
    "topup",
    "topup_refused",
    "command",
    "close",
    "trip",
    "relay_state",
    "relay_failed",
    "tariff",
    "power_down",
    "power_up",
)

# Link settings for Home Assistant (part of the agent's ``link`` config section).
HA_FIELDS = {
    "ha_discovery": Field(BOOL, False, doc="publish Home Assistant MQTT discovery and a PLAINTEXT state "
                          "topic pm/<id>/ha (gives up payload sealing for it: local broker only)"),
    "ha_prefix": Field(STR, topics.HA_PREFIX, doc="Home Assistant discovery prefix"),
    "ha_currency": Field(STR, "CNY", doc="currency of the balance sensor"),
}

REJECT_BURST = 10  # link_reject events allowed per REJECT_PERIOD_MS, the rest counted
REJECT_PERIOD_MS = 60000


class Out:
    """One MQTT publish to do.  ``seq`` is the outbox sequence (0 if none):
    report its PUBACK with ``Session.puback(seq)``."""

    __slots__ = ("topic", "payload", "qos", "retain", "seq")

    def __init__(self, topic, payload, qos, retain, seq=0):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.seq = seq

    def __repr__(self):
        return "Out(%r, %d bytes, qos=%d, retain=%r, seq=%d)" % (
            self.topic, len(self.payload), self.qos, self.retain, self.seq)


class Inbound:
    """A command that passed every link check: hand it to the core.

    ``name`` is ``topup`` or a core command name; ``args`` a dict; ``ref``
    the head-end's reference; ``n`` its sequence number (commit it with
    ``Session.commit(n)`` in the same durable commit as its effect).
    """

    __slots__ = ("name", "args", "ref", "n")

    def __init__(self, name, args, ref, n):
        self.name = name
        self.args = args
        self.ref = ref
        self.n = n

    def __repr__(self):
        return "Inbound(%r, %r, ref=%r, n=%d)" % (self.name, self.args, self.ref, self.n)


class Session:
    """The link state of one meter: keys, outbox, replay guard, connection."""

    def __init__(self, meter_id, keys, nonce_prefix, prefix=topics.PREFIX,
                 outbox=None, guard=None, boot=0, fw="", key_rev=0,
                 max_payload=envelope.MAX_PAYLOAD, ha=None):
        if not topics.valid_meter_id(meter_id):
            raise ValueError("meter id %r: must be 12 digits" % (meter_id,))
        self.meter_id = meter_id
        self.keys = keys
        self.nonces = envelope.Nonces(nonce_prefix)
        # The outbox's identity: random at first boot, then kept in the
        # store.  A meter whose store was lost restarts its ``q`` from 1
        # under a new epoch, so the head-end does not take its new entries
        # for re-sends of old ones (it de-duplicates by (meter, epoch, q)).
        self.epoch = ((nonce_prefix[0] & 0x7F) << 24) | (nonce_prefix[1] << 16) | (nonce_prefix[2] << 8) | nonce_prefix[3]
        self.prefix = prefix
        self.outbox = outbox if outbox is not None else Outbox()
        self.guard = guard if guard is not None else ReplayGuard()
        self.boot = boot
        self.fw = fw
        self.key_rev = key_rev
        self.max_payload = max_payload
        # Home Assistant discovery: None (off, the default) or the validated
        # HA_FIELDS dict with ha_discovery true.
        self.ha = ha if ha and ha.get("ha_discovery") else None
        self.online = False
        self.dirty = False
        self.last_event_seq = 0
        self.state = None  # latest state body, republished on connect
        self.rejected = 0  # messages refused since boot
        self.last_reject = None  # (code, why, ref) of the last refused message
        self._reject_window = 0
        self._reject_budget = REJECT_BURST
        self._suppressed = 0
        self._pending_n = {}  # ref -> n of commands handed to the core
        self._topic_cache = {}

    # ------------------------------------------------------------ topics

    def topic(self, leaf):
        """This meter's topic for ``leaf``."""
        t = self._topic_cache.get(leaf)
        if t is None:
            t = topics.topic(self.meter_id, leaf, self.prefix)
            self._topic_cache[leaf] = t
        return t

    def will(self):
        """The MQTT will to set at connect: retained ``offline`` status."""
        return Out(self.topic(topics.STATUS), topics.OFFLINE, 1, True)

    def subscriptions(self):
        """``(topic, qos)`` to subscribe to after every connect."""
        return [(self.topic(topics.CMD), 1)]

    # ------------------------------------------------------------ sealing

    def _seal(self, leaf, fields, wall):
        fields["m"] = self.meter_id
        fields["k"] = leaf
        fields["t"] = wall
        t = self.topic(leaf)
        return envelope.seal(self.keys.up, self.nonces.next(), t, fields)

    def _drain(self, wall):
        # Outbox entries that may go out now (window permitting).
        if not self.online:
            return []
        outs = []
        for item in self.outbox.take():
            seq, leaf, body = item[0], item[2], item[3]
            payload = self._seal(leaf, {"q": seq, "b": body}, wall)
            outs.append(Out(self.topic(leaf), payload, 1, False, seq))
        return outs

    def _queue(self, cls, leaf, body, wall):
        seq = self.outbox.add(cls, leaf, body)
        if cls != TELE:
            self.dirty = True
        return seq, self._drain(wall)

    # ------------------------------------------------------------ transport events

    def connected(self, wall, mono):
        """The transport connected (and subscribed): status, birth, state, replay."""
        self.online = True
        self.outbox.disconnected()  # anything marked in flight belongs to the old connection
        outs = [Out(self.topic(topics.STATUS), topics.ONLINE, 1, True)]
        birth = {
            "boot": self.boot,
            "dropped": list(self.outbox.dropped),
            "epoch": self.epoch,
            "fw": self.fw,
            "key_rev": self.key_rev,
            "last_evt": self.last_event_seq,
            "last_q": self.outbox.next_seq - 1,
            # The highest command sequence used: a head-end whose ledger was
            # lost or replaced learns to issue above it (no silent already_used).
            "n": self.guard.high,
            "pending": self.outbox.pending(),
        }
        outs.append(Out(self.topic(topics.BIRTH), self._seal(topics.BIRTH, {"b": birth}, wall), 1, False))
        if self.state is not None:
            outs.append(self._state_out(wall))
        if self.ha is not None:
            for t, payload in topics.ha_discovery(self.meter_id, self.prefix, self.ha.get("ha_prefix", topics.HA_PREFIX),
                                                  self.ha.get("ha_currency", "CNY")):
                outs.append(Out(t, payload, 1, True))
            if self.state is not None:
                outs.append(self._ha_out(self.state))
        outs.extend(self._drain(wall))
        return outs

    def _ha_out(self, body):
        # Plaintext, retained, not from the outbox: HA only needs the latest.
        return Out(self.topic(topics.HA), topics.ha_state(body), 1, True)

    def disconnected(self):
        """The connection dropped: in-flight entries will be sent again."""
        self.online = False
        self.outbox.disconnected()

    def puback(self, seq, wall):
        """PUBACK of outbox entry ``seq``: remove it, send what the window allows."""
        # A removal need not be committed at once (the next commit carries
        # it): at worst an entry is sent twice after a power cut.
        if seq:
            self.outbox.acked(seq)
        return self._drain(wall)

    def received(self, topic, payload, wall, mono, retained=False):
        """A message arrived.  Returns ``(inbound_or_None, outs)``.

        Never raises on bad input: a refused message gives a ``link_reject``
        event (rate limited) and, when it was authenticated, an ack.
        """
        size = len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0
        fields = None
        try:
            where = topics.parse(topic, self.prefix)
            if where is None or where[1] != topics.CMD:
                raise envelope.Reject(results.MALFORMED, "not a command topic: %r" % (topic,))
            if where[0] != self.meter_id:
                raise envelope.Reject(results.WRONG_METER, "topic is for meter %s" % where[0])
            if retained:
                raise envelope.Reject(results.REFUSED, "retained command (commands must never be retained)")
            fields = envelope.open_map(self.keys.down, topic, payload, self.max_payload)
            inbound = self._check_command(fields, wall)
        except envelope.Reject as r:
            return None, self._reject(r, topic, size, fields, wall, mono)
        self._pending_n[inbound.ref] = inbound.n
        return inbound, []

    def _check_command(self, f, wall):
        m = envelope.need(f, "m", str, "the meter id, a string")
        if m != self.meter_id:
            raise envelope.Reject(results.WRONG_METER, "field 'm' is meter %s, this is %s" % (m, self.meter_id))
        if envelope.need(f, "k", str, "the topic leaf") != topics.CMD:
            raise envelope.Reject(results.MALFORMED, "field 'k' must be 'cmd'")
        n = envelope.need(f, "n", int, "the command sequence, an int")
        x = envelope.need(f, "x", int, "the expiry, Unix seconds")
        name = envelope.need(f, "c", str, "the command name, a string")
        args = envelope.need(f, "a", dict, "the arguments, a map")
        ref = envelope.need(f, "r", (str, int), "the reference, a string or int")
        envelope.need(f, "t", int, "the time sealed, Unix seconds")
        problem = self.guard.check(n, wall, x)
        if problem is not None:
            raise envelope.Reject(problem, "command sequence %r: %s" % (n, problem))
        return Inbound(name, args, ref, n)

    def _reject(self, r, topic, size, fields, wall, mono):
        self.rejected += 1
        # (code, why, ref or None) for the shell's log, which is not rate limited.
        self.last_reject = (r.code, r.why, fields.get("r") if isinstance(fields, dict) else None)
        outs = []
        # Authenticated sender (the message opened): answer it so --wait ends.
        if isinstance(fields, dict) and "r" in fields and isinstance(fields.get("r"), (str, int)) \
                and not isinstance(fields.get("r"), bool) and fields.get("m") == self.meter_id:
            n = fields.get("n") if isinstance(fields.get("n"), int) else 0
            outs.extend(self.ack(fields["r"], r.code, None, wall, n))
        if mono - self._reject_window >= REJECT_PERIOD_MS:
            self._reject_window = mono
            self._reject_budget = REJECT_BURST
        if self._reject_budget <= 0:
            self._suppressed += 1
            return outs
        self._reject_budget -= 1
        t = topic if isinstance(topic, str) else repr(topic)
        body = {"code": r.code, "why": r.why[:200], "topic": t[:100], "size": size,
                "suppressed": self._suppressed, "kind": "link_reject", "wall": wall}
        self._suppressed = 0
        _seq, more = self._queue(EVENT, topics.EVT, body, wall)
        return outs + more

    # ------------------------------------------------------------ from the shell / core

    def commit(self, n):
        """Record command sequence ``n`` as used (part of the durable commit)."""
        if self.guard.check(n) is None:
            self.guard.commit(n)
            self.dirty = True

    def ack(self, ref, code, balance, wall, n=None):
        """Queue the ack of command ``ref`` (code from agent.results)."""
        if n is None:
            n = self._pending_n.pop(ref, 0)
        body = {"r": ref, "n": n, "code": code, "bal": balance}
        _seq, outs = self._queue(CRITICAL, topics.ACK, body, wall)
        return outs

    def event(self, record, wall):
        """Queue an event record (a dict with at least 'seq' and 'kind')."""
        kind = record.get("kind", "")
        seq = record.get("seq")
        if isinstance(seq, int) and seq > self.last_event_seq:
            self.last_event_seq = seq
        cls = CRITICAL if kind in CRITICAL_KINDS else EVENT
        _seq, outs = self._queue(cls, topics.EVT, record, wall)
        return outs

    def telemetry(self, body, wall):
        """Queue periodic telemetry (dropped first when the outbox is full)."""
        body["dropped"] = list(self.outbox.dropped)
        body["pending"] = self.outbox.pending()
        _seq, outs = self._queue(TELE, topics.TELE, body, wall)
        if self.ha is not None and self.online:
            outs.append(self._ha_out(body))
        return outs

    def can_accept_money(self):
        """False when a money entry could not be queued: refuse top-ups then."""
        return self.outbox.can_accept_critical()

    def set_state(self, body, wall):
        """New state snapshot: published retained now if online, else on connect.

        The body gains ``evt``: the last event record sequence it includes,
        so the head-end knows exactly which credits the balance contains.
        """
        body = dict(body)
        body["evt"] = self.last_event_seq
        self.state = body
        if not self.online:
            return []
        if self.ha is not None:
            return [self._state_out(wall), self._ha_out(body)]
        return [self._state_out(wall)]

    def _state_out(self, wall):
        payload = self._seal(topics.STATE, {"b": self.state}, wall)
        return Out(self.topic(topics.STATE), payload, 1, True)

    # ------------------------------------------------------------ persistence

    def snapshot(self):
        """What the store must keep: outbox, replay guard, last event seq."""
        self.dirty = False
        return {"epoch": self.epoch, "guard": self.guard.snapshot(), "last_evt": self.last_event_seq,
                "outbox": self.outbox.snapshot()}

    def restore(self, snap):
        """Load a ``snapshot()``; ValueError naming the field if it does not fit."""
        if not isinstance(snap, dict):
            raise ValueError("link snapshot: must be a map")
        self.outbox.restore(snap.get("outbox"))
        self.guard.restore(snap.get("guard"))
        last = snap.get("last_evt", 0)
        if not isinstance(last, int) or last < 0:
            raise ValueError("link snapshot field 'last_evt': must be an int >= 0")
        epoch = snap.get("epoch", self.epoch)  # older snapshots have none: keep this boot's
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError("link snapshot field 'epoch': must be an int >= 0")
        self.last_event_seq = last
        self.epoch = epoch
        self.dirty = False
