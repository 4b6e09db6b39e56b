"""The shipped Mosquitto config and ACL (deploy/mosquitto/) isolate meters.

Runs deploy/mosquitto/pmeter.conf and deploy/mosquitto/acl themselves (only
paths and ports substituted) on a real Mosquitto with a CA and per-meter
client certificates made by the fixture, then proves with real paho
clients that meter A can neither read nor write meter B's topics, nor
forge commands to itself, while the head-end and each meter can do their
own job (the positive controls that show the test can see traffic).
"""

import queue
import re
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mosquitto import Broker, make_pki
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "mosquitto"
A = "000000000001"
B = "000000000002"


class ShippedBroker(Broker):
    """A Broker running the shipped config file with test paths and ports."""

    def __init__(self, workdir, pki, conf_name="pmeter.conf", password_file=None):
        super().__init__(workdir, tls=True)
        self.pki = pki
        self.conf_name = conf_name
        self.passwd = password_file

    def config_text(self):
        text = (DEPLOY / self.conf_name).read_text()
        paths = {
            "/etc/mosquitto/pmeter/ca.crt": self.pki.ca_cert,
            "/etc/mosquitto/pmeter/server.crt": self.pki.server_cert,
            "/etc/mosquitto/pmeter/server.key": self.pki.server_key,
            "/etc/mosquitto/pmeter/acl": DEPLOY / "acl",
            "/etc/mosquitto/pmeter/passwd": self.passwd or "/nonexistent",
        }
        for old, new in paths.items():
            text = text.replace(old, str(new))
        text, n = re.subn(r"(?m)^listener 8883$", "listener %d %s" % (self.tls_port, self.host), text)
        assert n == 1, "the shipped config must have one 'listener 8883' line"
        import os
        import pwd

        head = "user %s\npersistence false\nlog_dest stderr\nlog_type all\n" % pwd.getpwuid(os.getuid()).pw_name
        # A plain loopback listener refusing everyone (allow_anonymous false,
        # no password file): only there so Broker.start() can see it is up.
        return head + text + "\nlistener %d %s\n" % (self.port, self.host)


class Peer:
    """A blocking little paho client for the test: connect, sub, pub, collect."""

    def __init__(self, broker, pki, name, protocol=mqtt.MQTTv5, cert=True, username=None, password=None):
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.connacks = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-%s-%d" % (name, time.monotonic_ns()),
                                  protocol=protocol)
        kw = {}
        if cert:
            kw = {"certfile": str(pki.client_cert(name)), "keyfile": str(pki.client_key(name))}
        self.client.tls_set(ca_certs=str(pki.ca_cert), cert_reqs=ssl.CERT_REQUIRED, **kw)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(codes)
        self.client.on_connect = lambda c, u, f, rc, props: self.connacks.put(rc)
        self.client.connect(broker.host, broker.tls_port, keepalive=10)
        self.client.loop_start()

    def wait_connected(self):
        rc = self.connacks.get(timeout=5)
        return not rc.is_failure

    def subscribe(self, topic):
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)

    def publish(self, topic, payload, retain=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def drain(self, until_topic, timeout=5.0):
        """Messages received up to and including the first on ``until_topic``."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            got.append(msg)
            if msg[0] == until_topic:
                return got
        raise AssertionError("nothing arrived on %s; got %r" % (until_topic, got))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def shipped(tmp_path):
    pki = make_pki(tmp_path / "pki", clients=[A, B, "headend"])
    broker = ShippedBroker(tmp_path / "broker", pki).start()
    peers = []

    def peer(name, **kw):
        p = Peer(broker, pki, name, **kw)
        peers.append(p)
        return p

    yield broker, pki, peer
    for p in peers:
        try:
            p.close()
        except Exception:
            pass
    broker.stop()


def test_link_acl_meter_cannot_read_other_meters_topics(shipped):
    broker, _pki, peer = shipped
    head, a, b = peer("headend"), peer(A), peer(B)
    assert head.wait_connected() and a.wait_connected() and b.wait_connected()
    # Subscriptions to B's topics, direct or by wildcard: Mosquitto 2.0 may
    # grant them (SUBACK) or refuse (0x87 in MQTT 5); either way nothing of
    # B's may be delivered, which is what the rest proves.
    for pattern in ("pm/%s/cmd" % B, "pm/#", "pm/+/cmd"):
        codes = a.subscribe(pattern)
        assert codes[0].is_failure or codes[0].value in (0, 1), codes
    assert not b.subscribe("pm/%s/cmd" % B)[0].is_failure
    head.publish("pm/%s/cmd" % B, b"for B only")
    head.publish("pm/%s/cmd" % A, b"for A")
    got_a = a.drain("pm/%s/cmd" % A)
    assert all(B not in t for t, _p, _r in got_a), got_a
    got_b = b.drain("pm/%s/cmd" % B)
    assert got_b[-1][1] == b"for B only"
    # B's retained state: the head-end gets it, a newly subscribing A does not.
    b.publish("pm/%s/state" % B, b"B state", retain=True)
    head.subscribe("pm/+/state")
    assert head.drain("pm/%s/state" % B)[-1][1] == b"B state"  # positive control
    late = peer(A)
    assert late.wait_connected()
    late.subscribe("pm/+/state")
    late.subscribe("pm/%s/cmd" % A)
    # Retained messages come with the SUBACK, before anything published later.
    head.publish("pm/%s/cmd" % A, b"sync")
    got = late.drain("pm/%s/cmd" % A)
    assert [m[1] for m in got] == [b"sync"], got


def test_link_acl_meter_cannot_write_other_meters_topics_or_forge_commands(shipped):
    broker, _pki, peer = shipped
    head, a, b = peer("headend"), peer(A), peer(B)
    assert head.wait_connected() and a.wait_connected() and b.wait_connected()
    head.subscribe("pm/#")
    b.subscribe("pm/%s/cmd" % B)
    # Forgeries: Mosquitto drops ACL-denied publishes silently (PUBACK still comes).
    for leaf in ("ack", "evt", "tele", "state", "status", "birth"):
        a.publish("pm/%s/%s" % (B, leaf), b"forged by A")
    a.publish("pm/%s/cmd" % B, b"forged command to B")
    a.publish("pm/%s/cmd" % A, b"forged command to self")
    # Then a legitimate publish: QoS 1 from one client arrives in order, so once
    # it is seen, any forgery would have been seen before it.
    a.publish("pm/%s/evt" % A, b"legit from A")
    got = head.drain("pm/%s/evt" % A)
    assert [m[1] for m in got] == [b"legit from A"], got
    b.publish("pm/%s/ack" % B, b"B's own ack")
    got = head.drain("pm/%s/ack" % B)
    assert [m[1] for m in got] == [b"B's own ack"], got
    time.sleep(0.1)
    assert b.messages.empty(), "B received a forged command"
    # The head-end itself may not impersonate a meter's status.
    head.publish("pm/%s/status" % B, b"online")
    b.publish("pm/%s/evt" % B, b"sync")
    got = head.drain("pm/%s/evt" % B)
    assert [m[1] for m in got] == [b"sync"], got


def _connects(broker, pki_ca, certfile=None, keyfile=None):
    """True if a client with this certificate gets a successful CONNACK."""
    done = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-%d" % time.monotonic_ns(), protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(pki_ca), certfile=certfile, keyfile=keyfile)
    c.on_connect = lambda cl, u, f, rc, p: done.put(not rc.is_failure)
    try:
        c.connect(broker.host, broker.tls_port, keepalive=5)
    except (ssl.SSLError, OSError):
        return False
    c.loop_start()
    try:
        return done.get(timeout=2)
    except queue.Empty:
        return False
    finally:
        c.disconnect()
        c.loop_stop()


def test_link_acl_no_certificate_no_connection(shipped, tmp_path):
    broker, pki, _peer = shipped
    stranger = make_pki(tmp_path / "other-ca", clients=[A])
    assert _connects(broker, pki.ca_cert, str(pki.client_cert(A)), str(pki.client_key(A)))  # control
    # The right CN from another CA, or no certificate at all: refused.
    assert not _connects(broker, pki.ca_cert, str(stranger.client_cert(A)), str(stranger.client_key(A)))
    assert not _connects(broker, pki.ca_cert)
