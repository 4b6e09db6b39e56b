"""The shipped Mosquitto configs and ACL (deploy/mosquitto/) isolate meters.

Runs deploy/mosquitto/pmeter.conf (and pmeter-password.conf) and
deploy/mosquitto/acl themselves (only paths and ports substituted) on a
real Mosquitto with certificates made by ``pmeter pki`` (headend.pki), then
proves with real paho clients that meter A can neither read nor write
meter B's topics, nor forge commands to itself, nor take over B's or a
head-end's session by using their client id, nor read anything through
``#``, ``$SYS/#`` or a shared subscription, while the head-end and each
meter can do their own job (the positive controls that show the test can
see traffic).
"""

import queue
import re
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mosquitto import ShippedBroker, connects, make_pki, write_password_file
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from headend.pki import CA, SHIPPED_HEADENDS, acl_text

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "mosquitto"
A = "000000000001"
B = "000000000002"
OPS = "headend-ops"  # the head-end CLI's identity in the docs
PASSWORDS = {A: "pw-a", B: "pw-b", OPS: "pw-ops"}


class Files:
    """The PKI folder `pmeter pki` made, with client files by broker user name."""

    def __init__(self, folder):
        self.ca = CA(folder)
        self.ca_cert = Path(self.ca.path("ca.crt"))
        self.ca.init()
        self.ca.issue("broker", "localhost", ["localhost"], ["127.0.0.1"])
        for m in (A, B):
            self.ca.issue("meter", m)
        self.ca.issue("headend", OPS[len("headend-"):])

    def _stem(self, name):
        return "meter-" + name if name.isdigit() else name

    def client_cert(self, name):
        return Path(self.ca.path(self._stem(name) + ".crt"))

    def client_key(self, name):
        return Path(self.ca.path(self._stem(name) + ".key"))

    def broker_files(self):
        return {n: self.ca.path(n) for n in ("ca.crt", "ca.crl", "broker.crt", "broker.key")}


class Peer:
    """A blocking little paho client for the test: connect, sub, pub, collect.

    ``client_id`` is the id the client asks for (default: a unique one);
    ``session_expiry`` > 0 with ``clean_start=False`` resumes/keeps a
    persistent session.  Disconnections are counted in ``disconnects``.
    """

    def __init__(self, broker, pki, name, protocol=mqtt.MQTTv5, cert=True, username=None, password=None,
                 client_id=None, clean_start=True, session_expiry=0):
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnects = queue.Queue()
        cid = client_id if client_id is not None else "t-%s-%d" % (name, time.monotonic_ns())
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=protocol)
        kw = {}
        if cert:
            kw = {"certfile": str(pki.client_cert(name)), "keyfile": str(pki.client_key(name))}
        self.client.tls_set(ca_certs=str(pki.ca_cert), cert_reqs=ssl.CERT_REQUIRED, **kw)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(codes)
        self.client.on_connect = lambda c, u, f, rc, props: self.connacks.put(rc)
        self.client.on_disconnect = lambda c, u, f, rc, props: self.disconnects.put(rc)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        self.client.connect(broker.host, broker.tls_port, keepalive=10, clean_start=clean_start, properties=props)
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


def _start(tmp_path, conf):
    """(broker, files, peer factory) for the shipped ``conf`` with `pmeter pki` certificates."""
    files = Files(tmp_path / "pki")
    bfiles = files.broker_files()
    if conf == "pmeter-password.conf":
        bfiles["passwd"] = write_password_file(tmp_path / "passwd", PASSWORDS)
    broker = ShippedBroker(tmp_path / "broker", bfiles, conf).start()
    peers = []

    def peer(name, **kw):
        if conf == "pmeter-password.conf":
            kw.setdefault("cert", False)
            kw.setdefault("username", name)
            kw.setdefault("password", PASSWORDS[name])
        p = Peer(broker, files, name, **kw)
        peers.append(p)
        return p

    return broker, files, peer, peers


def _stop(broker, peers):
    for p in peers:
        try:
            p.close()
        except Exception:
            pass
    broker.stop()


@pytest.fixture
def shipped(tmp_path):
    broker, files, peer, peers = _start(tmp_path, "pmeter.conf")
    yield broker, files, peer
    _stop(broker, peers)


@pytest.fixture(params=["pmeter.conf", "pmeter-password.conf"])
def either(tmp_path, request):
    """Each shipped config in turn: client certificates, then user names and passwords."""
    broker, files, peer, peers = _start(tmp_path, request.param)
    yield broker, files, peer
    _stop(broker, peers)


def test_link_acl_meter_cannot_read_other_meters_topics(shipped):
    broker, _pki, peer = shipped
    head, a, b = peer(OPS), peer(A), peer(B)
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
    head, a, b = peer(OPS), peer(A), peer(B)
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


def test_link_acl_no_certificate_no_connection(shipped, tmp_path):
    broker, pki, _peer = shipped
    stranger = make_pki(tmp_path / "other-ca", clients=[A])
    assert connects(broker, pki.ca_cert, str(pki.client_cert(A)), str(pki.client_key(A)))  # control
    # The right CN from another CA, or no certificate at all: refused.
    assert not connects(broker, pki.ca_cert, str(stranger.client_cert(A)), str(stranger.client_key(A)))
    assert not connects(broker, pki.ca_cert)


def _no_takeover(victim, broker):
    """True if ``victim`` is still connected, was never disconnected, and still receives."""
    return victim.disconnects.empty() and victim.client.is_connected()


def test_link_acl_meter_cannot_take_over_or_keep_offline_another_meter(either):
    broker, _files, peer = either
    head = peer(OPS)
    b = peer(B, client_id=B)
    assert head.wait_connected() and b.wait_connected()
    assert not b.subscribe("pm/%s/cmd" % B)[0].is_failure
    # A connects again and again with every id B could use (its id, the old
    # meter-<id> default), one of them asking to resume B's session.
    for i in range(6):
        cid = (B, "meter-" + B)[i % 2]
        a = peer(A, client_id=cid, clean_start=bool(i % 3), session_expiry=0 if i % 3 else 600)
        assert a.wait_connected()
        # The broker names A by its identity, not by the id it asked for.
        assert a.subscribe("pm/%s/cmd" % A)[0].value in (0, 1)
    head.publish("pm/%s/cmd" % B, b"for B")
    assert b.drain("pm/%s/cmd" % B)[-1][1] == b"for B"  # B is still online and gets its command
    assert _no_takeover(b, broker), broker.log()
    assert re.search(r"as %s\b" % A, broker.log()) and not re.search(r"as meter-%s\b" % B, broker.log()), broker.log()


def test_link_acl_meter_cannot_take_over_headend_session(either):
    broker, _files, peer = either
    # The head-end keeps a persistent session for what meters send while it is away.
    head = peer(OPS, client_id=OPS, clean_start=False, session_expiry=600)
    b = peer(B)
    assert head.wait_connected() and b.wait_connected()
    assert not head.subscribe("pm/+/ack")[0].is_failure
    head.close()
    b.publish("pm/%s/ack" % B, b"queued ack")
    # A asks for the head-end's session: on a takeover the broker would send
    # the queued ack right after the CONNACK, before any later SUBACK.
    a = peer(A, client_id=OPS, clean_start=False, session_expiry=600)
    assert a.wait_connected()
    a.subscribe("pm/%s/cmd" % A)
    assert a.messages.empty(), list(a.messages.queue)
    a.close()
    # The head-end comes back and still finds what was queued for it.
    back = peer(OPS, client_id=OPS, clean_start=False, session_expiry=600)
    assert back.wait_connected()
    assert [m[1] for m in back.drain("pm/%s/ack" % B)] == [b"queued ack"]


def _steal(peer, head_sub, a_subs):
    """Head-end subscribed to ``head_sub`` for acks; A subscribes ``a_subs``;
    B sends 8 acks.  Returns (acks the head-end got, all A got), synced."""
    head, a, b = peer(OPS), peer(A), peer(B)
    assert head.wait_connected() and a.wait_connected() and b.wait_connected()
    assert not head.subscribe(head_sub)[0].is_failure
    assert not head.subscribe("pm/+/evt")[0].is_failure
    for pattern in a_subs:
        codes = a.subscribe(pattern)
        # Mosquitto 2.0's acl_file grants every subscription; what matters is delivery.
        assert codes[0].is_failure or codes[0].value in (0, 1), codes
    acks = [b"ack %d" % i for i in range(8)]
    for payload in acks:
        b.publish("pm/%s/ack" % B, payload)
    b.publish("pm/%s/evt" % B, b"B event")  # QoS 1 from one client: in order after the acks
    got = head.drain("pm/%s/evt" % B)
    head.publish("pm/%s/cmd" % A, b"sync")
    return acks, [m[1] for m in got if m[0].endswith("/ack")], a.drain("pm/%s/cmd" % A)


def test_link_acl_meter_reads_nothing_through_wide_sys_or_shared_subscriptions(either):
    _broker, _files, peer = either
    subs = ("#", "$SYS/#", "$share/g/pm/+/ack", "$share/headend/#", "+/+/+", "pm/+/ack")
    acks, head_got, a_got = _steal(peer, "pm/+/ack", subs)
    assert head_got == acks  # positive control: the acks flowed
    assert [m[0] for m in a_got] == ["pm/%s/cmd" % A], a_got  # no $SYS, nothing of B's


@pytest.mark.xfail(strict=True, reason="Mosquitto 2.0's acl_file grants every subscription: a meter that joins "
                   "the head-ends' shared-subscription group takes its share of the messages, which the ACL then "
                   "drops (docs/mqtt.md: head-ends do not share a group, or use a secret group name)")
def test_link_acl_meter_cannot_join_headend_shared_group(shipped):
    _broker, _files, peer = shipped
    acks, head_got, a_got = _steal(peer, "$share/headend/pm/+/ack", ("$share/headend/pm/+/ack",))
    assert [m[0] for m in a_got] == ["pm/%s/cmd" % A], a_got
    assert head_got == acks


def test_link_acl_shipped_acl_is_what_pki_writes():
    assert (DEPLOY / "acl").read_text() == acl_text(SHIPPED_HEADENDS)


def test_link_acl_head_ends_with_own_identities_run_at_once(tmp_path):
    """Two head-end processes, each with its certificate from `pmeter pki
    headend`, and the ACL that wrote: both connected, both receive."""
    files = Files(tmp_path / "pki")
    files.ca.issue("headend", "billing")
    bfiles = dict(files.broker_files(), acl=files.ca.path("acl"))
    broker = ShippedBroker(tmp_path / "broker", bfiles).start()
    peers = []
    try:
        ops = Peer(broker, files, OPS, client_id="headend", clean_start=False, session_expiry=600)
        bill = Peer(broker, files, "headend-billing", client_id="headend", clean_start=False, session_expiry=600)
        b = Peer(broker, files, B)
        peers += [ops, bill, b]
        assert ops.wait_connected() and bill.wait_connected() and b.wait_connected()
        for h in (ops, bill):
            assert not h.subscribe("pm/+/ack")[0].is_failure
        b.publish("pm/%s/ack" % B, b"to both")
        for h in (ops, bill):
            assert [m[1] for m in h.drain("pm/%s/ack" % B)] == [b"to both"]
            assert h.disconnects.empty() and h.client.is_connected()
        bill.publish("pm/%s/cmd" % B, b"x")  # the role lets billing send commands too
        assert "headend-billing" in Path(files.ca.path("acl")).read_text()
    finally:
        _stop(broker, peers)
