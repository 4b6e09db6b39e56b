"""One linked meter: the core on its Device, the TokenGuard, the link Session.

Portable and still sans-I/O: the shell feeds it local events, broker
messages and keypad entries with the time, and carries out what it
returns - hardware actions (PulseCoil, Alarm; Acks of DL/T 645 commands)
and MQTT ``Out``s for the transport.

Durability.  The ``Device`` (agent/device.py) owns the store and every
commit.  The guard and the session are registered as Device parts, so
the one atomic commit holds ``{meter, tokens, link}``.  Every event goes
through ``Device.feed(event, before_commit)``: the callback sees the
core's actions before the Device commits, and there an accepted token is
marked used, the core's records and acks enter the outbox and the state
summary is updated, so all of it is in that event's one commit.  What
changes only the guard or the session (a keypad lockout, a key change,
a refused message) is committed with ``Device.commit(reason)``.  So no
ack is published and no relay is closed before the credit, the used
token, the used command sequence and the outbox entry are on disk.
``Out``s made while a commit fails are held back until one succeeds, and so
are outbox entries a PUBACK or a reconnection would send meanwhile
(transports report PUBACKs through ``puback``).  Telemetry takes an
outbox sequence too, so it is committed with the event that sends it.

Token handling (MQTT and keypad):
- top-ups -> ``TopUp``; management commands -> ``Command``; the token is
  marked used only when the core accepted it (a top-up refused by the
  hoarding limit stays usable later);
- ``key_change`` -> ``guard.accept`` (installs the new key) + commit + ack,
  never the core;
- ``set_clock`` -> a ``SetClock`` event (and ``on_clock(wall)`` so the
  shell sets the RTC) + ack;
- keypad: add -> ``TopUp``, set -> ``Command set_credit``, disable ->
  ``Command set_mode postpaid``, counter sync -> accept + commit; a wrong
  entry advances the lockout, which is committed before ``keypad``
  returns (a power cycle between guesses must not forget it).
"""

from agent import results
from agent.codec import msgpack
from agent.events import Command, SetClock, TopUp

TELEMETRY_S = 300

# Token kinds and commands as agent.tokens.mqtt names them (a test checks
# they agree).  Not imported: agent.tokens brings the keypad tables, and
# this module must still import in a 128K MicroPython heap.
TOPUP = "topup"
COMMAND = "command"
KEY_CHANGE = "key_change"
SET_CLOCK = "set_clock"


def record_body(rec):
    """An event record as the map published on ``evt``."""
    return {"data": rec.data, "kind": rec.kind, "reason": rec.reason, "seq": rec.seq, "wall": rec.wall}


def summary(meter):
    """What telemetry and the retained state carry (ints and strings only).

    ``chg`` is the money charged for energy ever (minor units), so the
    head-end can check ``bal == opening + credited - chg`` exactly.
    """
    pos = meter.relay_position
    return {
        "alarm": meter.alarm_level,
        "bal": meter.balance,
        "chg": meter.account.charged,
        "limits": meter.limits,
        "mode": meter.payment_mode,
        "rates": list(meter.rate_energy_wh),
        "relay": meter.relay_state,
        "relay_pos": "unknown" if pos is None else ("closed" if pos else "open"),
        "wh": meter.energy_wh,
    }


class _Part:
    """A Device part over an object with ``snapshot()``/``restore(value)``.

    The Device restores ``None`` when the store had nothing (or nothing
    that fits).  With ``fresh`` the object then goes back to how it was
    built (a failed restore of a damaged copy may have changed part of
    it); without, it is left as it is (for objects whose ``restore``
    checks everything before changing anything, like the TokenGuard,
    whose snapshot is too large to keep a second copy of on a board).
    """

    def __init__(self, obj, fresh):
        self.obj = obj
        # A deep copy: the live object's lists change as it runs.
        self.fresh = msgpack.unpack(msgpack.pack(obj.snapshot())) if fresh else None

    def snapshot(self):
        return self.obj.snapshot()

    def restore(self, value):
        if value is None:
            value = self.fresh
        if value is not None:
            self.obj.restore(value)

    def marks(self):
        return self.obj.marks()

    def raise_marks(self, value):
        self.obj.raise_marks(value)


class LinkedMeter:
    """Runs a Device (core + store) with its TokenGuard behind a link Session.

    Build it before ``boot``: it registers the guard and the session as
    Device parts ``tokens`` and ``link``.
    ``on_clock(wall)`` is called when a verified command sets the clock;
    ``on_record(record)`` sees every event record (for logging);
    ``on_refusal(source, ref, code, why)`` every refused token or command
    ("mqtt" or "keypad"; ref None when unknown), for the device's log.
    """

    def __init__(self, device, guard, session, *, telemetry_s=TELEMETRY_S, telemetry_offset_s=0, on_clock=None, on_record=None,
                 on_refusal=None):
        self.device = device
        self.guard = guard
        self.session = session
        self.telemetry_s = telemetry_s
        # Each meter reports at its own second of the period, so a fleet
        # does not burst at the top of every period.
        self.telemetry_offset_s = telemetry_offset_s % telemetry_s
        self.on_clock = on_clock
        self.on_record = on_record
        self.on_refusal = on_refusal
        self.next_tele = None
        device.add_part("tokens", _Part(guard, False))
        device.add_part("link", _Part(session, True))
        self._wall = 0
        self._outs = []  # Outs made while processing the current call
        self._held = []  # Outs waiting for a commit that works
        self._mqtt_refs = {}  # refs of MQTT commands in the core: their acks go to the outbox
        self._token = None  # (ref, token) being applied: marked used if the core accepts it
        self._acked = None  # code of the core's ack for it
        self._dirty = False  # the guard changed outside the core (lockout, sync, key change)
        self._seen = {}  # seqs of records already queued in this call
        self._tele = False  # telemetry is due with the event being fed

    # ------------------------------------------------------------ reads

    @property
    def meter(self):
        """The core (None before ``boot``)."""
        return self.device.meter

    @property
    def commits(self):
        """Commits made so far."""
        return self.device.commits

    # ------------------------------------------------------------ before the commit

    def _queue_record(self, rec):
        # Each record enters the outbox once, whichever path saw it first.
        if rec.seq in self._seen:
            return False
        self._seen[rec.seq] = True
        if self.on_record is not None:
            self.on_record(rec)
        self._outs.extend(self.session.event(record_body(rec), self._wall))
        return True

    def _refused(self, source, ref, code, why=None):
        if self.on_refusal is not None and code != results.ACCEPTED:
            self.on_refusal(source, ref, code, why)

    def _before_commit(self, actions):
        # Device.feed's callback: the core's actions, before the one commit.
        s = self.session
        wall = self._wall
        persist = False
        for a in actions:
            kind = a.kind
            if kind == "persist":
                persist = True
            elif kind == "publish":
                self._queue_record(a.record)
            elif kind == "ack":
                tok = self._token
                if tok is not None and a.ref == tok[0]:
                    code = a.code
                    if code == results.ACCEPTED:
                        code = self.guard.accept(tok[1])
                    self._acked = code
                    self._refused("mqtt" if a.ref in self._mqtt_refs else "keypad", a.ref, code)
                if a.ref in self._mqtt_refs:
                    del self._mqtt_refs[a.ref]
                    self._outs.extend(s.ack(a.ref, a.code, a.balance, wall))
        if persist:
            self._outs.extend(s.set_state(summary(self.device.meter), wall))
        if self._tele:
            # No commit of its own: the session's outbox lease keeps
            # uncommitted telemetry numbers from being reused after a cut.
            self._tele = False
            self._outs.extend(s.telemetry(summary(self.device.meter), wall))
        if s.dirty or self._dirty:
            # The Device commits now.  If that fails, the Outs are held and
            # every later commit (the Device retries) holds the guard too.
            self._dirty = False
            return "link"
        return None

    def _after(self, actions):
        # Queue the records the Device made after its commit (a commit that
        # failed or recovered), commit what is still dirty, then release
        # the Outs if the commits worked.
        s = self.session
        dev = self.device
        # At most a few rounds: a failing store adds one record, then stops.
        for _ in range(3):
            late = False
            for a in actions:
                if a.kind == "publish" and self._queue_record(a.record):
                    late = True
            if not (late or s.dirty or self._dirty):
                break
            self._dirty = False
            actions.extend(dev.commit("link"))
        self._seen = {}
        if self.device.store_error is None:
            outs = self._held + self._outs
            self._held = []
        else:
            self._held.extend(self._outs)
            outs = []
        self._outs = []
        hw = []
        for a in actions:
            if a.kind == "publish" or a.kind == "persist":
                continue
            hw.append(a)
        return hw, outs

    def _feed(self, event, wall):
        self._wall = wall
        return self.device.feed(event, self._before_commit)

    # ------------------------------------------------------------ local events

    def boot(self, wall, mono):
        """Load the store and boot the core: (actions, Outs)."""
        self._wall = wall
        actions = self.device.boot(wall, mono, self._before_commit)
        m = self.device.meter
        self.session.boot = m.boots
        self.session.key_rev = self.guard.revision
        if self.session.state is None:
            self.session.state = summary(m)
        return self._after(actions)

    def handle(self, event, wall):
        """Feed a local event (Tick, Pulses, Edge, Tamper, Shutdown, ...): (actions, Outs).

        ``actions`` are what the shell carries out: PulseCoil, Alarm, and
        Acks of commands that did not come over MQTT (DL/T 645).
        """
        if event.kind == "set_clock" and self.on_clock is not None:
            self.on_clock(event.wall)
        if self.next_tele is None:
            self.next_tele = self._next_report(wall)
        elif wall >= self.next_tele:
            # Telemetry takes an outbox sequence: it is committed with this
            # event before it goes out, or a power cut would hand its
            # (epoch, seq) to another entry, which the head-end would then
            # drop as a duplicate.
            self.next_tele = self._next_report(wall)
            self._tele = True
        return self._after(self._feed(event, wall))

    def _next_report(self, wall):
        """The next wall second after ``wall`` at this meter's offset in the period."""
        period = self.telemetry_s
        off = self.telemetry_offset_s
        return wall - (wall - off) % period + period

    def idle(self, budget):
        """Idle-time upkeep (keypad checkpoint table); returns the work done."""
        return self.guard.work(budget)

    def next_deadline(self):
        """Wall second of the next Tick the core, a checkpoint or telemetry needs (or None)."""
        best = self.device.next_deadline()
        tele = self.next_tele
        if tele is not None and (best is None or tele < best):
            best = tele
        return best

    # ------------------------------------------------------------ MQTT

    def connected(self, wall, mono):
        """The transport connected: birth, status, state and the outbox replay."""
        if self.session.state is None:
            self.session.state = summary(self.device.meter)
        return self._release(self.session.connected(wall, mono))

    def puback(self, seq, wall):
        """PUBACK of outbox entry ``seq`` (from the transport): the Outs it lets go."""
        return self._release(self.session.puback(seq, wall))

    def _release(self, outs):
        # While commits fail the outbox holds entries that are not on disk
        # (an ack whose commit failed): outbox entries wait for a commit
        # that works, as the Outs of the failed call do.
        if self.device.store_error is None:
            return outs
        now = []
        for o in outs:
            if o.seq:
                self._held.append(o)
            else:
                now.append(o)
        return now

    def received(self, topic, payload, wall, mono, retained=False):
        """A message from the broker: (actions, Outs).

        Never raises, except MemoryError: out of memory half-way through a
        command, the meter may hold a credit its store does not have, and
        answering "refused" then would invite the head-end to pay it again.
        It propagates, and the shell restarts from the store (agent.app).
        """
        self._wall = wall
        rejected = self.session.rejected
        try:
            inbound, outs = self.session.received(topic, payload, wall, mono, retained)
        except MemoryError:
            raise
        except Exception as e:  # a bug in a check must not take the meter down
            inbound = None
            outs = self.session.event({"kind": "link_reject", "code": results.MALFORMED,
                                       "why": "internal: %r" % (e,), "wall": wall}, wall)
            self._refused("mqtt", None, results.MALFORMED, "internal: %r" % (e,))
        self._outs.extend(outs)
        if inbound is None:
            if self.session.rejected != rejected:
                code, why, ref = self.session.last_reject
                self._refused("mqtt", ref, code, why)
            return self._after([])
        try:
            return self._inbound(inbound, wall, mono)
        except MemoryError:
            raise
        except Exception as e:  # a bug in the core must not take the meter down nor eat the sequence unanswered
            return self._failed(inbound, e, wall)
        finally:
            self._token = None

    def _failed(self, inbound, e, wall):
        # The command raised: its sequence is used, and the sender gets an answer.
        s = self.session
        ref = inbound.ref
        self._mqtt_refs.pop(ref, None)
        s.commit(inbound.n)
        why = ("internal: %r" % (e,))[:200]
        self._refused("mqtt", ref, results.REFUSED, why)
        self._outs.extend(s.ack(ref, results.REFUSED, self.device.meter.balance, wall))
        self._outs.extend(s.event({"code": results.REFUSED, "kind": "token_reject", "ref": ref,
                                   "why": why, "wall": wall}, wall))
        return self._after([])

    def _inbound(self, inbound, wall, mono):
        s = self.session
        ref = inbound.ref
        token = None
        token_bytes = inbound.args.get("token") if inbound.name == "token" else None
        if inbound.name != "token":
            code = results.UNKNOWN_COMMAND
        elif not isinstance(token_bytes, (bytes, bytearray)):
            code = results.MALFORMED
        elif not s.can_accept_money():
            code = results.REFUSED
        else:
            code, token = self.guard.check(bytes(token_bytes), wall)
        # The command sequence is used whatever the outcome, in the same commit.
        s.commit(inbound.n)
        m = self.device.meter
        if code != results.ACCEPTED:
            self._refused("mqtt", ref, code)
            self._outs.extend(s.ack(ref, code, m.balance, wall))
            self._outs.extend(s.event({"code": code, "kind": "token_reject", "ref": ref, "wall": wall}, wall))
            return self._after([])
        if token.kind == COMMAND and token.command == KEY_CHANGE:
            code = self.guard.accept(token)
            self._refused("mqtt", ref, code)
            s.key_rev = self.guard.revision
            self._dirty = True
            self._outs.extend(s.ack(ref, code, m.balance, wall))
            self._outs.extend(s.event({"code": code, "kind": "key_change", "ref": ref,
                                       "revision": self.guard.revision, "wall": wall}, wall))
            return self._after([])
        if token.kind == COMMAND and token.command == SET_CLOCK:
            new = token.args["wall"]
            code = self.guard.accept(token)
            self._refused("mqtt", ref, code)
            self._outs.extend(s.ack(ref, code, m.balance, wall))
            if code != results.ACCEPTED:
                return self._after([])
            if self.on_clock is not None:
                self.on_clock(new)
            return self._after(self._feed(SetClock(new, mono, "mqtt"), new))
        if token.kind == TOPUP:
            event = TopUp(token.amount, ref, wall, mono, "mqtt")
        else:
            event = Command(token.command, token.args, ref, wall, mono)
        self._mqtt_refs[ref] = True
        self._token = (ref, token)
        self._acked = None
        actions = self._feed(event, wall)
        if self._acked is None:
            # The core always acks; if it ever does not, the sender still gets an answer.
            self._mqtt_refs.pop(ref, None)
            self._outs.extend(s.ack(ref, results.REFUSED, self.device.meter.balance, wall))
        elif self._acked == results.ACCEPTED and event.kind == "command" and event.name == "set_credit" \
                and self.device.state_lost:
            # The head-end restored the balance of a meter whose store was lost
            # (pmeter restore): the balance accounts for every token issued
            # before this one, so they all count as used; end guarantee.
            self.guard.supersede(token.seq, token.args.get("kp"))
            s.supersede(inbound.n)
            actions.extend(self.device.clear_state_lost(wall, mono, self._before_commit))
        return self._after(actions)

    def commit_part(self):
        """Commit a part changed outside any event (a keypad or DL/T 645 lockout): (actions, Outs)."""
        self._dirty = True
        return self._after([])

    # ------------------------------------------------------------ keypad

    def keypad(self, digits, wall, mono):
        """A code typed on the keypad: (result code, actions, Outs)."""
        self._wall = wall
        code, tok = self.guard.check_keypad(digits, wall, mono)
        if code != results.ACCEPTED:
            lock_ms = self.guard.keypad_lock_ms(mono)
            self._refused("keypad", None, code, "keypad locked for %d s" % ((lock_ms + 999) // 1000) if lock_ms else None)
        if code == results.BAD_MAC:
            # The lockout advanced: durable before the next entry is taken.
            hw, outs = self.commit_part()
            return code, hw, outs
        if code != results.ACCEPTED:
            return code, [], []
        if tok.kind == "sync":
            code = self.guard.accept(tok)
            self._refused("keypad", tok.ref, code)
            hw, outs = self.commit_part()
            return code, hw, outs
        if tok.kind == "topup":
            event = TopUp(tok.amount, tok.ref, wall, mono, "keypad")
        elif tok.kind == "set_credit":
            event = Command("set_credit", {"amount": tok.amount}, tok.ref, wall, mono)
        else:
            event = Command(tok.command, tok.args, tok.ref, wall, mono)
        self._token = (tok.ref, tok)
        self._acked = None
        try:
            actions = self._feed(event, wall)
            code = self._acked if self._acked is not None else results.REFUSED
        finally:
            self._token = None
        if code == results.ACCEPTED and tok.kind == "set_credit" and self.device.state_lost:
            # A keypad SET code from the vendor is a keypad-only meter's way out
            # of state_lost: it sets the balance and supersedes every older code.
            actions.extend(self.device.clear_state_lost(wall, mono, self._before_commit))
        hw, outs = self._after(actions)
        return code, [a for a in hw if not (a.kind == "ack" and a.ref == tok.ref)], outs

    # ------------------------------------------------------------ DL/T 645

    def dispatch(self, events, wall):
        """Core events from the DL/T 645 slave: (actions incl. their Acks, Outs)."""
        actions = []
        outs = []
        for event in events:
            hw, o = self.handle(event, wall)
            actions.extend(hw)
            outs.extend(o)
        return actions, outs

    @staticmethod
    def meter_acked(actions, ref):
        """True if the core acknowledged ``ref`` itself."""
        for a in actions:
            if a.kind == "ack" and a.ref == ref:
                return True
        return False
