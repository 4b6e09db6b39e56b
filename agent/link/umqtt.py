"""A small MQTT 3.1.1 client for MicroPython (also runs on CPython).

MicroPython has no paho; ``umqtt.simple`` blocks in ``wait_msg`` and has no
will-on-TLS-client-cert examples, no bound on packet size and no
non-blocking poll, so this is our own: QoS 0/1 publish with PUBACK
tracking, QoS 1 subscribe, will, keepalive pings, username/password and
TLS (the caller wraps the socket), and a ``poll`` that never blocks
longer than asked.  It keeps no queue: the durable outbox does
(agent/link/outbox.py) and replays after reconnect.

``poll`` returns events: ("message", topic, payload, retained),
("puback", pid), ("suback", pid, granted_qos).  Any protocol or socket
error raises ``MQTTError``/``OSError``: the caller closes, backs off
(agent/link/backoff.py) and reconnects.
"""

import select
import socket

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    _monotonic = getattr(_time, "monotonic")  # getattr: the board stubs have no monotonic

    def ticks_ms():
        return int(_monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


MAX_PACKET = 16384  # bigger incoming packets are skipped, not buffered


class MQTTError(Exception):
    """The broker refused us or broke the protocol."""


def _str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


def _varlen(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _packet(first, body):
    return bytes((first,)) + _varlen(len(body)) + body


class MQTTClient:
    """One connection.  ``sock`` is an already connected (and, for TLS,
    already wrapped) socket-like object with read/write (MicroPython) or
    recv/send (CPython)."""

    def __init__(self, client_id, keepalive=30, user=None, password=None, will=None, max_packet=MAX_PACKET):
        self.client_id = client_id
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.will = will  # (topic, payload, qos, retain) or None
        self.max_packet = max_packet
        self.sock = None
        self._poller = None
        self._buf = bytearray()
        self._skip = 0
        self._pid = 0
        self._last_out = 0
        self._last_in = 0
        self._ping_out = False
        self.inflight = {}  # pid -> True until PUBACK

    # ------------------------------------------------------------ wire

    def _write(self, data):
        w = getattr(self.sock, "write", None) or self.sock.send
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            n = w(view[sent:])
            if n is None:  # non-blocking socket full: wait until writable
                self._wait(select.POLLOUT, 1000)
                continue
            sent += n
        self._last_out = ticks_ms()

    def _wait(self, mask, timeout_ms):
        p = select.poll()
        p.register(self.sock, mask)
        return p.poll(timeout_ms)

    def _read_some(self):
        r = getattr(self.sock, "read", None)
        try:
            data = r(512) if r is not None else self.sock.recv(512)
        except OSError as e:
            if e.args and e.args[0] in (11, 35):  # EAGAIN / EWOULDBLOCK: nothing yet
                return None
            raise
        if data is not None and len(data) == 0:
            raise OSError(104, "connection closed by the broker")
        return data

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    # ------------------------------------------------------------ session

    def connect(self, sock, timeout_ms=5000):
        """Send CONNECT (clean session) on ``sock`` and wait for CONNACK."""
        self.sock = sock
        flags = 0x02
        payload = _str(self.client_id)
        if self.will is not None:
            topic, msg, qos, retain = self.will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _str(topic) + _str(msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        body = _str("MQTT") + bytes((4, flags, self.keepalive >> 8, self.keepalive & 0xFF)) + payload
        self._buf = bytearray()
        self._skip = 0
        self.inflight = {}
        self._ping_out = False
        try:
            sock.setblocking(False)
        except Exception:
            pass
        self._write(_packet(0x10, body))
        self._last_in = ticks_ms()
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < timeout_ms:
            for ptype, flags, data in self._packets(100):
                if ptype != 2 or len(data) != 2:
                    raise MQTTError("expected CONNACK, got packet type %r" % (ptype,))
                if data[1] != 0:
                    raise MQTTError("broker refused the connection: CONNACK code %d" % data[1])
                return True
        raise MQTTError("no CONNACK within %d ms" % timeout_ms)

    def subscribe(self, topic, qos=1):
        """Send SUBSCRIBE; the SUBACK comes as a ("suback", pid, qos) event."""
        pid = self._next_pid()
        self._write(_packet(0x82, bytes((pid >> 8, pid & 0xFF)) + _str(topic) + bytes((qos,))))
        return pid

    def publish(self, topic, payload, qos=0, retain=False):
        """Send PUBLISH; returns the packet id (0 for QoS 0)."""
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        body = _str(topic)
        pid = 0
        if qos:
            pid = self._next_pid()
            body += bytes((pid >> 8, pid & 0xFF))
            self.inflight[pid] = True
        self._write(_packet(first, body + bytes(payload)))
        return pid

    def disconnect(self):
        """Clean DISCONNECT (the broker then does not publish the will) and close."""
        try:
            self._write(b"\xe0\x00")
        except Exception:
            pass
        self.close()

    def close(self):
        """Close the socket without DISCONNECT (the broker publishes the will)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
        self.sock = None

    # ------------------------------------------------------------ receive

    def _packets(self, timeout_ms):
        # Complete packets available within timeout_ms: [(type, flags, body)].
        if len(self._buf) < 2 or self._incomplete():
            if self._wait(select.POLLIN, timeout_ms):
                data = self._read_some()
                while data:
                    self._feed(data)
                    data = self._read_some()
        out = []
        while True:
            pkt = self._take()
            if pkt is None:
                return out
            out.append(pkt)

    def _feed(self, data):
        self._last_in = ticks_ms()
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        self._buf.extend(data)

    def _header(self):
        # -> (header length, body length) or None if the header is incomplete.
        n = 0
        shift = 0
        i = 1
        while i < len(self._buf):
            b = self._buf[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                return i, n
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        return None

    def _incomplete(self):
        h = self._header()
        return h is None or len(self._buf) < h[0] + h[1]

    def _take(self):
        if len(self._buf) < 2:
            return None
        h = self._header()
        if h is None:
            return None
        hlen, blen = h
        if blen > self.max_packet:
            # Too big to hold: drop it (what we have, and the rest as it comes).
            have = len(self._buf) - hlen
            if have >= blen:
                self._buf = self._buf[hlen + blen:]
            else:
                self._skip = blen - have
                self._buf = bytearray()
            return ("skipped", 0, b"")
        if len(self._buf) < hlen + blen:
            return None
        first = self._buf[0]
        body = bytes(self._buf[hlen:hlen + blen])
        self._buf = self._buf[hlen + blen:]
        return (first >> 4, first & 0x0F, body)

    def poll(self, timeout_ms=0):
        """Handle what arrived within ``timeout_ms``; returns events. Sends
        keepalive pings; raises OSError/MQTTError if the connection is dead."""
        events = []
        for ptype, flags, body in self._packets(timeout_ms):
            if ptype == 3:  # PUBLISH
                tlen = (body[0] << 8) | body[1]
                topic = body[2:2 + tlen]
                qos = (flags >> 1) & 3
                pos = 2 + tlen
                if qos:
                    pid = body[pos:pos + 2]
                    pos += 2
                    if qos == 1:
                        self._write(b"\x40\x02" + pid)
                    else:
                        raise MQTTError("QoS 2 delivery on a QoS 1 subscription")
                try:
                    topic = topic.decode()
                except Exception:
                    continue  # not UTF-8: not one of our topics
                events.append(("message", topic, body[pos:], bool(flags & 1)))
            elif ptype == 4 and len(body) == 2:  # PUBACK
                pid = (body[0] << 8) | body[1]
                if self.inflight.pop(pid, None):
                    events.append(("puback", pid))
            elif ptype == 9 and len(body) >= 3:  # SUBACK
                events.append(("suback", (body[0] << 8) | body[1], body[2]))
            elif ptype == 13:  # PINGRESP
                self._ping_out = False
            elif ptype == "skipped":
                events.append(("skipped", 0))
            else:
                raise MQTTError("unexpected packet type %r" % (ptype,))
        now = ticks_ms()
        if self.keepalive:
            if self._ping_out and ticks_diff(now, self._last_in) > self.keepalive * 1500:
                raise OSError(110, "broker silent for 1.5 keepalive periods")
            if ticks_diff(now, self._last_out) >= self.keepalive * 500 and not self._ping_out:
                self._write(b"\xc0\x00")
                self._ping_out = True
        return events


def open_socket(host, port, ssl_context=None, server_hostname=None, timeout_s=5):
    """A connected socket to ``host:port``, TLS-wrapped when ``ssl_context`` is given."""
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
    except Exception:
        pass
    s.connect(addr)
    if ssl_context is not None:
        s = ssl_context.wrap_socket(s, server_hostname=server_hostname or host)
    return s


class Transport:
    """Keeps a LinkedMeter-shaped ``handler`` connected (the MicroPython
    counterpart of hw/mqtt_paho.PahoTransport).

    ``connect_fn()`` returns a fresh connected (TLS) socket; ``clock()``
    returns ``(wall, mono)``; ``rand()`` a random int for the backoff
    jitter.  ``step(timeout_ms)`` never raises: every failure becomes a
    backoff and a later reconnect, and the meter keeps running.
    """

    def __init__(self, handler, connect_fn, client_id, backoff, clock, rand, keepalive=30,
                 user=None, password=None, on_hw=None, log=None):
        self.handler = handler
        self.connect_fn = connect_fn
        self.backoff = backoff
        self.clock = clock
        self.rand = rand
        self.on_hw = on_hw
        self.log = log or (lambda msg: None)
        will = handler.session.will()
        self.mqtt = MQTTClient(client_id, keepalive, user, password, (will.topic, will.payload, will.qos, will.retain))
        self.connected = False
        self.connects = 0
        self.errors = 0
        self.next_attempt = 0
        self._pids = {}  # MQTT packet id -> outbox seq

    def send(self, outs):
        """Publish the link's ``Out``s now (ignored while offline: the outbox keeps them)."""
        if not self.connected:
            return
        try:
            for o in outs:
                pid = self.mqtt.publish(o.topic, o.payload, o.qos, o.retain)
                if pid and o.seq:
                    self._pids[pid] = o.seq
        except Exception as e:
            self._lost("publish failed: %r" % (e,))

    def _lost(self, why):
        wall, mono = self.clock()
        if self.connected:
            self.handler.session.disconnected()
            self.backoff.disconnected(mono)
        self.connected = False
        self.mqtt.close()
        self._pids = {}
        delay = self.backoff.next_delay(self.rand())
        self.next_attempt = mono + delay
        self.errors += 1
        self.log("%s; retry in %d ms" % (why, delay))

    def step(self, timeout_ms=50):
        """Connect when due, then handle what arrives within ``timeout_ms``."""
        wall, mono = self.clock()
        if not self.connected:
            if mono < self.next_attempt:
                return
            try:
                self.mqtt.connect(self.connect_fn())
                for topic, qos in self.handler.session.subscriptions():
                    self.mqtt.subscribe(topic, qos)
            except Exception as e:
                self._lost("connect failed: %r" % (e,))
                return
            self.connected = True
            self.connects += 1
            self.backoff.connected(mono)
            self.send(self.handler.connected(wall, mono))
            return
        try:
            events = self.mqtt.poll(timeout_ms)
        except Exception as e:
            self._lost("connection lost: %r" % (e,))
            return
        for ev in events:
            wall, mono = self.clock()
            try:
                if ev[0] == "message":
                    hw, outs = self.handler.received(ev[1], ev[2], wall, mono, ev[3])
                    if hw and self.on_hw is not None:
                        self.on_hw(hw)
                    self.send(outs)
                elif ev[0] == "puback":
                    seq = self._pids.pop(ev[1], 0)
                    if seq:
                        self.send(self.handler.puback(seq, wall))
            except Exception as e:  # a bug in the link must not stop the loop
                self.errors += 1
                self.log("handling %s failed: %r" % (ev[0], e))
