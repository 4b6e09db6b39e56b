"""The head-end's MQTT side: seal commands, open what meters send.

``Fleet`` knows the keys (derived per meter from the master key: one key
per meter, a stolen meter key opens nothing else).  Every token and
command takes its sequence from the token ledger (``headend.ledger``,
shared with ``pmeter vend``/``batch``), which the shadow
(``headend.shadow.Shadow``) also reads to reconcile.  ``HeadEnd`` is a paho-mqtt 2.x client (its own
network thread) that publishes on ``pm/<id>/cmd`` and feeds every message
from ``pm/+/...`` into the shadow, de-duplicated by (meter, q).
"""

import os
import queue
import ssl
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import crypto
from agent.link import envelope, topics
from agent.tokens import mqtt as tokens_mqtt
from hw.mqtt_paho import nodelay

from . import vend
from .ledger import ref as ledger_ref

DEFAULT_TTL_S = 86400  # commands expire after a day: generous for meter clock skew


class Fleet:
    """Keys of every meter, from the head-end master key."""

    def __init__(self, master, revision=0, prefix=topics.PREFIX):
        if not isinstance(master, (bytes, bytearray)) or len(master) < 16:
            raise ValueError("master key must be at least 16 bytes")
        self.master = bytes(master)
        self.revision = revision
        self.prefix = prefix
        self._keys = {}

    def meter_key(self, meter_id):
        """The meter's token key (what its TokenGuard is configured with)."""
        return crypto.derive_key(self.master, meter_id, self.revision, crypto.METER)

    def link_key(self, meter_id):
        """The meter's link key (what its Session seals with)."""
        return crypto.derive_key(self.master, meter_id, self.revision, crypto.LINK)

    def keys(self, meter_id):
        """LinkKeys of ``meter_id`` (cached)."""
        k = self._keys.get(meter_id)
        if k is None:
            k = envelope.LinkKeys(self.link_key(meter_id))
            self._keys[meter_id] = k
        return k

    def topup_token(self, meter_id, seq, amount, wall, ttl=DEFAULT_TTL_S):
        """Token bytes crediting ``amount`` minor units to ``meter_id``."""
        t = tokens_mqtt.Token(meter_id, seq, tokens_mqtt.TOPUP, wall, wall + ttl, self.revision, amount=amount)
        return tokens_mqtt.encode(t, self.meter_key(meter_id))

    def command_token(self, meter_id, seq, name, args, wall, ttl=DEFAULT_TTL_S):
        """Token bytes of management command ``name``."""
        t = tokens_mqtt.Token(meter_id, seq, tokens_mqtt.COMMAND, wall, wall + ttl, self.revision,
                              command=name, args=args)
        return tokens_mqtt.encode(t, self.meter_key(meter_id))

    def seal_token(self, meter_id, n, token, ref, wall, ttl=DEFAULT_TTL_S):
        """``(topic, payload)`` of a sealed command carrying ``token``."""
        t = topics.topic(meter_id, topics.CMD, self.prefix)
        payload = envelope.seal_command(self.keys(meter_id), os.urandom(16), t, meter_id, n, "token",
                                        {"token": token}, ref, wall, wall + ttl)
        return t, payload

    def open(self, topic, payload):
        """``(meter_id, leaf, fields)`` of a meter's message; raises envelope.Reject."""
        where = topics.parse(topic, self.prefix)
        if where is None:
            raise envelope.Reject("malformed", "not a meter topic: %r" % (topic,))
        meter_id, leaf = where
        if leaf == topics.STATUS:
            return meter_id, leaf, {"b": bytes(payload).decode("ascii", "replace")}
        return meter_id, leaf, envelope.open_uplink(self.keys(meter_id), topic, payload, leaf, meter_id)


class HeadEnd:
    """A connected head-end: push commands, collect acks, feed the shadow."""

    def __init__(self, fleet, shadow, host, port, tls=None, client_id=None, username=None,
                 password=None, protocol=mqtt.MQTTv5, session_expiry_s=7 * 86400, group=None):
        self.fleet = fleet
        # With a group, a shared subscription ($share/<group>/...): the broker
        # splits the meters' messages between the head-ends of the group.
        self.group = group
        self.shadow = shadow
        self._acks = {}  # ref -> Queue of ack fields
        self._lock = threading.Lock()
        self.rejected = 0
        self._ready = threading.Event()
        self._inbox = queue.Queue()
        if client_id is None:
            # The shipped broker uses the certificate's name or the user name
            # as client id whatever is asked (deploy/mosquitto/pmeter.conf):
            # ask for that same name so logs and sessions agree.
            from .pki import cert_name

            client_id = username or (tls is not None and tls.cert and cert_name(tls.cert)) or "headend"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                        clean_session=None if protocol == mqtt.MQTTv5 else False)
        if tls is not None:
            c.tls_set(ca_certs=str(tls.ca), certfile=tls.cert and str(tls.cert), keyfile=tls.key and str(tls.key),
                      cert_reqs=ssl.CERT_REQUIRED)
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._ready.set()
        self.client = c
        self.host = host
        self.port = port
        self.protocol = protocol
        self.session_expiry_s = session_expiry_s
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._states = {}  # meter -> its last state body recorded (wait_state)
        # Called as f(meter_id, leaf, fields, retained) on the worker after each message
        # is in the shadow (the service's delivery queue and notifications).
        self.listeners = []
        self._state_cv = threading.Condition()

    def start(self, timeout=10.0, background=False):
        """Connect, subscribe to the fleet, start the network thread.

        With ``background`` (a long-running service), return at once: the
        network thread connects, and reconnects whenever the broker is lost.
        """
        # A persistent session: what meters send while the head-end is away
        # is queued by the broker (QoS 1) instead of lost.
        connect = self.client.connect_async if background else self.client.connect
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            connect(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        else:
            connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._worker.start()
        if background:
            return self
        if not self._ready.wait(timeout):
            raise RuntimeError("head-end: no SUBACK from %s:%s within %.0f s" % (self.host, self.port, timeout))
        # What the persistent session queued came before the SUBACK: have it
        # in the shadow (births raise the ledger's floors) before vending.
        self.flush(timeout)
        return self

    def flush(self, timeout=10.0):
        """Wait until every message received so far is in the shadow."""
        done = threading.Event()
        self._inbox.put(done)
        return done.wait(timeout)

    def stop(self):
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
        self._inbox.put(None)
        if self._worker.is_alive():
            self._worker.join(10)  # everything received is in the shadow before we return

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        nodelay(client)
        share = "$share/%s/" % self.group if self.group else ""
        client.subscribe([(share + topics.fleet(leaf, self.fleet.prefix), 1) for leaf in topics.METER_LEAVES])

    def _on_message(self, client, userdata, msg):
        # Keep paho's thread quick: SQLite work happens on our worker.  An
        # ack wakes its waiting push at once, not behind the shadow writes
        # of the events the meter sent before it.
        payload = bytes(msg.payload)
        if msg.topic.endswith("/" + topics.ACK):
            try:
                meter_id, _, fields = self.fleet.open(msg.topic, payload)
                self._wake(meter_id, fields)
            except Exception:
                pass  # counted as rejected by the worker
        self._inbox.put((msg.topic, payload, msg.retain))

    def _wake(self, meter_id, fields):
        # References are per meter ("mqtt:1" exists for every meter): a
        # waiter registered with its meter only hears that meter's ack.
        ref = fields.get("b", {}).get("r")
        with self._lock:
            q = self._acks.get((meter_id, ref)) or self._acks.get(ref)  # wait_ack removes it
        if q is not None:
            q.put(fields)

    def _work(self):
        while True:
            item = self._inbox.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._handle(*item)
            except Exception:  # one bad message must not stop the head-end
                self.rejected += 1

    def _handle(self, topic, payload, retained):
        try:
            meter_id, leaf, fields = self.fleet.open(topic, payload)
        except envelope.Reject:
            self.rejected += 1
            return
        if self.shadow is not None:
            self.shadow.record(meter_id, leaf, fields, int(time.time()))
        for listener in self.listeners:
            listener(meter_id, leaf, fields, retained)
        if leaf == topics.STATE and isinstance(fields.get("b"), dict):
            with self._state_cv:
                self._states[meter_id] = fields["b"]
                self._state_cv.notify_all()

    def wait_state(self, meter_id, cond, timeout):
        """Wait up to ``timeout`` s until the last recorded state body of ``meter_id`` satisfies ``cond``."""
        with self._state_cv:
            return self._state_cv.wait_for(lambda: cond(self._states.get(meter_id) or {}), timeout)

    def expect(self, ref, meter_id=None):
        """Start waiting for the ack of ``ref`` (before publishing it); of ``meter_id`` only, if given."""
        with self._lock:
            self._acks[ref if meter_id is None else (meter_id, ref)] = queue.Queue()

    def wait_ack(self, ref, timeout, meter_id=None):
        """The ack fields of ``ref`` (see ``expect``), or None after ``timeout`` seconds."""
        key = ref if meter_id is None else (meter_id, ref)
        with self._lock:
            q = self._acks.get(key)
        if q is None:
            return None
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            with self._lock:
                if self._acks.get(key) is q:
                    del self._acks[key]

    def publish(self, topic, payload):
        """Publish a command (QoS 1, never retained); waits for its PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=False)
        info.wait_for_publish(10)

    @property
    def ledger(self):
        """The token ledger every sequence comes from (the shadow's)."""
        return self.shadow.ledger

    def _push(self, meter_id, seq, token, wait, wall):
        ref, t0 = self._send(meter_id, seq, token, wall)
        ack = self.wait_ack(ref, wait, meter_id) if wait else None
        return ref, ack, time.perf_counter() - t0

    def _send(self, meter_id, seq, token, wall):
        # Publish once (QoS 1): a meter offline now never gets it (meters
        # use clean sessions and nothing here re-sends).
        ref = ledger_ref("mqtt", seq)
        topic, payload = self.fleet.seal_token(meter_id, seq, token, ref, wall)
        self.expect(ref, meter_id)
        t0 = time.perf_counter()
        self.publish(topic, payload)
        return ref, t0

    def send_command(self, meter_id, name, args, wall=None, operator=None):
        """Issue command ``name`` through the ledger and publish it; its ref (collect with ``wait_acks``)."""
        wall = int(time.time()) if wall is None else wall
        seq, token = vend.command(self.ledger, self.fleet.master, meter_id, name, args, wall, operator=operator)
        return self._send(meter_id, seq, token, wall)[0]

    def wait_acks(self, sent, timeout):
        """``{(meter_id, ref): ack fields}`` of those ``sent`` (pairs) answered within ``timeout`` s in all."""
        deadline = time.monotonic() + timeout
        out = {}
        for meter_id, ref in sent:
            ack = self.wait_ack(ref, max(0.0, deadline - time.monotonic()), meter_id)
            if ack is not None:
                out[(meter_id, ref)] = ack
        return out

    def push_topup(self, meter_id, amount, wait=10.0, wall=None, operator=None):
        """Vend ``amount`` minor units to ``meter_id`` and wait for its ack.

        Returns ``(ref, ack fields or None, seconds)``.  The sequence comes
        from the ledger, which records the token before it is published, so
        a crash cannot mint untracked credit and no other vending process
        (``pmeter vend``, another head-end) can take the same sequence.
        """
        wall = int(time.time()) if wall is None else wall
        seq, token = vend.topup(self.ledger, self.fleet.master, meter_id, amount, wall, operator=operator)
        return self._push(meter_id, seq, token, wait, wall)

    def push_revend(self, meter_id, refused_ref, wait=10.0, wall=None, operator=None):
        """Pay out again the credit of top-up ``refused_ref`` the meter refused (see ``vend.revend``)."""
        wall = int(time.time()) if wall is None else wall
        seq, token = vend.revend(self.ledger, self.fleet.master, meter_id, refused_ref, wall, operator=operator)
        return self._push(meter_id, seq, token, wait, wall)

    def push_command(self, meter_id, name, args, wait=10.0, wall=None, operator=None):
        """Issue management command ``name`` through the ledger, send it, wait for its ack."""
        wall = int(time.time()) if wall is None else wall
        seq, token = vend.command(self.ledger, self.fleet.master, meter_id, name, args, wall, operator=operator)
        return self._push(meter_id, seq, token, wait, wall)

    def restore(self, meter_id, wait=10.0, wall=None, amount=None):
        """Give a meter that lost its store its balance back from the shadow.

        Sends ``set_credit {amount}`` as an authenticated command token
        (``Shadow.restore_plan`` computes the amount unless given).
        Returns ``(plan, ref, ack, seconds)``; ValueError if there is
        nothing to restore.
        """
        plan = self.shadow.restore_plan(meter_id)
        if amount is not None:
            plan["amount"] = amount
        args = {"amount": plan["amount"]}
        # The meter counts every token issued before this one as used; "kp"
        # carries the keypad codes' high-water mark (its store may be gone).
        kp = max((t["seq"] for t in self.ledger.tokens(meter_id) if t["channel"] == "keypad"), default=0)
        if kp:
            args["kp"] = kp
        ref, ack, secs = self.push_command(meter_id, "set_credit", args, wait, wall, operator="restore")
        return plan, ref, ack, secs
