"""The CPython MQTT transport: paho-mqtt 2.x driving a link Session.

Thin: it moves bytes between the broker and ``agent.link`` and owns no
protocol state.  Choices, and why:

- ``CallbackAPIVersion.VERSION2`` (v1 callbacks are deprecated), MQTT 5,
  falling back to 3.1.1 once if the broker refuses protocol 5.
- One thread: ``step()`` runs ``client.loop()`` and everything else from
  the caller's main loop, so the core is never entered from two threads.
  Callbacks only append to a list; each is wrapped so an exception in it
  is counted and logged and never stops the loop or reconnection (paho
  stops reconnecting when a callback raises).
- Reconnection is ours (``agent.link.backoff``: exponential, jittered,
  capped), not paho's (no jitter), and never exits the process.
- A fresh paho client per connection: paho's in-RAM queue of unacknowledged
  messages would re-send them after a reconnect on top of our durable
  outbox's replay; one source of truth (the outbox) is simpler to reason
  about.
- Clean start / clean session: the meter resubscribes and replays on every
  connect, so nothing depends on the broker's session.
"""

import os
import random
import ssl
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.link.backoff import Backoff


def mono_ms():
    """Monotonic milliseconds (int)."""
    return time.monotonic_ns() // 1000000


def wall_s():
    """Wall clock, Unix seconds UTC (int)."""
    return int(time.time())


class TLS:
    """TLS settings: CA file, and the client certificate/key (per meter)."""

    __slots__ = ("ca", "cert", "key")

    def __init__(self, ca, cert=None, key=None):
        self.ca = str(ca)
        self.cert = str(cert) if cert else None
        self.key = str(key) if key else None


class PahoTransport:
    """Keeps one link (``handler``) connected to a broker.

    ``handler`` has ``connected(wall, mono) -> outs``,
    ``received(topic, payload, wall, mono, retained) -> (hw, outs)``,
    ``puback(seq, wall) -> outs`` and a ``session`` (for ``will``,
    ``subscriptions``, ``disconnected``) - an ``agent.link.agent.LinkedMeter`` or anything
    shaped like it.  Hardware actions returned by ``received`` are passed
    to ``on_hw(actions)``.
    """

    def __init__(self, handler, host, port, client_id, tls=None, username=None, password=None,
                 keepalive=30, backoff=None, on_hw=None, log=None, rng=None, protocol=mqtt.MQTTv5):
        self.handler = handler
        self.host = host
        self.port = port
        self.client_id = client_id
        self.tls = tls
        self.username = username
        self.password = password
        self.keepalive = keepalive
        self.backoff = backoff or Backoff()
        self.on_hw = on_hw or (lambda actions: None)
        self.log = log or (lambda msg: sys.stderr.write("mqtt: %s\n" % msg))
        self.rng = rng or random.SystemRandom()
        self.protocol = protocol
        self.client = None
        self.connected = False
        self.next_attempt = 0
        self.callback_errors = 0
        self.connects = 0
        self._events = []
        self._mids = {}  # paho mid -> outbox seq, for the current client only

    # ------------------------------------------------------------ callbacks (paho thread = ours)

    def _guard(self, fn):
        def wrapped(*args):
            try:
                fn(*args)
            except Exception as e:  # never let a callback stop paho's loop
                self.callback_errors += 1
                self.log("callback %s failed: %r" % (getattr(fn, "__name__", "?"), e))
        return wrapped

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._events.append(("connack", client, reason_code))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._events.append(("disconnect", client, reason_code))

    def _on_message(self, client, userdata, msg):
        self._events.append(("message", client, (msg.topic, bytes(msg.payload), bool(msg.retain))))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._events.append(("puback", client, mid))

    # ------------------------------------------------------------ connection

    def _new_client(self):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol,
                        clean_session=None if self.protocol == mqtt.MQTTv5 else True)
        if self.tls is not None:
            c.tls_set(ca_certs=self.tls.ca, certfile=self.tls.cert, keyfile=self.tls.key,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        will = self.handler.session.will()
        c.will_set(will.topic, will.payload, will.qos, will.retain)
        c.on_connect = self._guard(self._on_connect)
        c.on_disconnect = self._guard(self._on_disconnect)
        c.on_message = self._guard(self._on_message)
        c.on_publish = self._guard(self._on_publish)
        c.connect_timeout = 5.0
        return c

    def _attempt(self, mono):
        client = self._new_client()
        try:
            if self.protocol == mqtt.MQTTv5:
                client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=True)
            else:
                client.connect(self.host, self.port, keepalive=self.keepalive)
        except Exception as e:  # refused, unreachable, TLS failure: back off and retry
            self._schedule(mono, "connect to %s:%s failed: %r" % (self.host, self.port, e))
            try:
                client.socket() and client.socket().close()
            except Exception:
                pass
            return
        nodelay(client)
        self.client = client
        self._mids = {}

    def _schedule(self, mono, why):
        delay = self.backoff.next_delay(self.rng.getrandbits(32))
        self.next_attempt = mono + delay
        self.log("%s; retry in %d ms" % (why, delay))

    def _lost(self, mono, why):
        if self.connected:
            self.handler.session.disconnected()
            self.backoff.disconnected(mono)
        self.connected = False
        client, self.client = self.client, None
        if client is not None:
            try:
                client.disconnect()
            except Exception:
                pass
            try:
                sock = client.socket()
                if sock is not None:
                    sock.close()
            except Exception:
                pass
        self._mids = {}
        self._schedule(mono, why)

    # ------------------------------------------------------------ publishing

    def send(self, outs):
        """Publish ``outs`` (from the link) now; dropped silently if offline
        (the outbox keeps what matters and replays it on connect)."""
        if not self.connected or self.client is None:
            return
        for o in outs:
            try:
                info = self.client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain)
            except Exception as e:
                self.log("publish on %s failed: %r" % (o.topic, e))
                continue
            if o.seq and info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._mids[info.mid] = o.seq

    # ------------------------------------------------------------ the loop

    def step(self, timeout=0.05):
        """One pass: connect when due, run paho's loop, dispatch what happened."""
        mono = mono_ms()
        if self.client is None:
            if mono >= self.next_attempt:
                self._attempt(mono)
            else:
                time.sleep(min(timeout, (self.next_attempt - mono) / 1000.0))
            if self.client is None:
                return
        try:
            rc = self.client.loop(timeout)
        except Exception as e:
            rc = -1
            self.log("loop error: %r" % (e,))
        self._dispatch()
        if rc != mqtt.MQTT_ERR_SUCCESS and self.client is not None:
            self._lost(mono_ms(), "connection lost (rc=%s)" % (rc,))

    def _dispatch(self):
        events, self._events = self._events, []
        for kind, client, data in events:
            if client is not self.client:
                continue  # a stale client's late callback
            try:
                self._handle(kind, data)
            except Exception as e:  # a bug in the link must not stop the transport
                self.callback_errors += 1
                self.log("handling %s failed: %r" % (kind, e))

    def _handle(self, kind, data):
        mono = mono_ms()
        wall = wall_s()
        if kind == "connack":
            rc = data
            if rc.is_failure:
                if self.protocol == mqtt.MQTTv5 and rc.value in (0x84, 1):  # unsupported protocol version
                    self.log("broker refuses MQTT 5: falling back to 3.1.1")
                    self.protocol = mqtt.MQTTv311
                self._lost(mono, "broker refused the connection: %s" % (rc,))
                return
            self.connected = True
            self.connects += 1
            self.backoff.connected(mono)
            for topic, qos in self.handler.session.subscriptions():
                self.client.subscribe(topic, qos)
            self.send(self.handler.connected(wall, mono))
        elif kind == "disconnect":
            self._lost(mono, "disconnected: %s" % (data,))
        elif kind == "message":
            topic, payload, retained = data
            hw, outs = self.handler.received(topic, payload, wall, mono, retained)
            if hw:
                self.on_hw(hw)
            self.send(outs)
        elif kind == "puback":
            seq = self._mids.pop(data, 0)
            if seq:
                self.send(self.handler.puback(seq, wall))

    def close(self):
        """Disconnect cleanly (the broker then does NOT publish the will)."""
        if self.client is not None:
            try:
                self.client.disconnect()
                self.client.loop(0.1)
            except Exception:
                pass
        self.client = None
        self.connected = False


def nodelay(client):
    """Turn off Nagle on the client's socket: paho does not, and an ack
    published right after a few events would otherwise wait for the
    broker's delayed ACK (~40 ms on Linux)."""
    import socket

    try:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:
        pass


def nonce_prefix():
    """8 random bytes for this boot's sealing nonces."""
    return os.urandom(8)
