"""Hypothesis fuzzing through a real Mosquitto against a running agent.

Random bytes and mutations of valid sealed commands are published on the
meter's command topic; each one must be refused with an event (and an ack
when the sender is authenticated), the connection must stay up, and the
meter's money, relay and token state must not change.  A bounded number
of examples keeps it to a few seconds.
"""

import json
import os
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mosquitto import make_pki, shipped_tls
from test_link_restore import MID, DeviceAgent

from agent import results
from agent.codec import msgpack
from agent.link import envelope, topics
from headend import vend
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS, wall_s

ROOT = Path(__file__).resolve().parent.parent
MASTER = bytes(range(32))
EXAMPLES = 150


class CountingAgent(DeviceAgent):
    """Counts what it has processed, so the test can wait for each message."""

    def __init__(self, *a):
        DeviceAgent.__init__(self, *a)
        self.seen = 0
        self.cond = threading.Condition()

    def received(self, topic, payload, wall, mono, retained=False):
        try:
            return DeviceAgent.received(self, topic, payload, wall, mono, retained)
        finally:
            with self.cond:
                self.seen += 1
                self.cond.notify_all()

    def wait_seen(self, n, timeout=5.0):
        with self.cond:
            return self.cond.wait_for(lambda: self.seen >= n, timeout)


def _mutate(data, how, pos, val, cut):
    b = bytearray(data)
    if how == "flip":
        b[pos % len(b)] ^= (val % 255) + 1
    elif how == "truncate":
        b = b[: cut % len(b)]
    elif how == "extend":
        b += bytes([val]) * (cut % 64 + 1)
    elif how == "splice":
        i = pos % len(b)
        b[i:i] = bytes([val]) * (cut % 8 + 1)
    else:  # drop a byte
        del b[pos % len(b)]
    return bytes(b)


def _values():
    return st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20),
                     st.binary(max_size=40), st.lists(st.integers(0, 9), max_size=3),
                     st.dictionaries(st.sampled_from(["token", "x", "amount"]), st.integers(0, 9), max_size=2))


def test_link_fuzz_command_topic_through_broker(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki", clients=[MID, "headend"])
    broker = mosquitto_factory(
        **shipped_tls(pki))
    fleet = Fleet(MASTER)
    shadow = Shadow(tmp_path / "headend.db")
    head = HeadEnd(fleet, shadow, broker.host, broker.tls_port,
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend")),
                   client_id="headend-fuzz").start()
    agent = CountingAgent(broker, pki, tmp_path / "store", fleet).start()
    try:
        assert agent.wait(lambda: agent.transport.connected), broker.log()
        assert agent.wait(lambda: any(r["birth"] for r in head.shadow.meters(MID))), broker.log()  # subscribed
        # One real top-up: the token every resealed mutation carries is then already used.
        ref, ack, _ = head.push_topup(MID, 300000, wait=5)
        assert ack["b"]["code"] == results.ACCEPTED
        used_seq = int(ref.split(":")[1])
        used_token = fleet.topup_token(MID, used_seq, 300000, wall_s())
        w = wall_s()
        topic = topics.topic(MID, topics.CMD)
        valid = fleet.seal_token(MID, 10**6, fleet.topup_token(MID, 10**6, 10000, w), "never-sent", w)[1]
        fields = {"a": {"token": used_token}, "c": "token", "k": "cmd", "m": MID, "n": 0, "r": "fz",
                  "t": w, "x": w + 3600}
        before = (agent.device.meter.balance, agent.device.meter.relay_state, agent.device.meter.energy_wh,
                  agent.linked.guard.snapshot())
        n_box = [2 * 10**5]  # within the link's MAX_JUMP (2**20) above the highest n
        stats = {"raw": 0, "mutated": 0, "resealed": 0}

        def publish_and_check(payload):
            n0 = agent.seen
            r0, q0 = agent.session.rejected, agent.session.outbox.next_seq
            head.publish(topic, payload)
            assert agent.wait_seen(n0 + 1), "the agent never processed a fuzz message"
            # Refused by the link (a link_reject event, rate limited: beyond 10 a
            # minute counted in the next one's "suppressed"), or opened and
            # refused by the token guard (an ack and a token_reject event).
            assert agent.session.rejected == r0 + 1 or agent.session.outbox.next_seq >= q0 + 2
            assert agent.transport.connected and agent.transport.connects == 1
            assert agent.transport.callback_errors == 0
            now = (agent.device.meter.balance, agent.device.meter.relay_state, agent.device.meter.energy_wh,
                   agent.linked.guard.snapshot())
            assert now == before

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(st.data())
        def fuzz(data):
            kind = data.draw(st.sampled_from(["raw", "mutated", "resealed"]))
            stats[kind] += 1
            if kind == "raw":
                payload = data.draw(st.binary(min_size=0, max_size=3000))
            elif kind == "mutated":
                payload = _mutate(valid, data.draw(st.sampled_from(["flip", "truncate", "extend", "splice", "drop"])),
                                  data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 255)),
                                  data.draw(st.integers(0, 10**6)))
                if payload == valid:
                    return
            else:
                # Authenticated (right link key) but with a field mutated,
                # dropped or retyped; a fresh n so it may reach the token guard.
                f = dict(fields)
                n_box[0] += 1
                f["n"] = n_box[0]
                key = data.draw(st.sampled_from(sorted(f)))
                if data.draw(st.booleans()):
                    del f[key]
                else:
                    f[key] = data.draw(_values())
                payload = envelope.seal(fleet.keys(MID).down, os.urandom(16), topic, f)
            publish_and_check(payload)

        t0 = time.monotonic()
        fuzz()
        elapsed = time.monotonic() - t0
        # Every message was answered with an event (link_reject or token_reject) in the shadow.
        answered = agent.session.rejected
        assert answered > 0 and stats["resealed"] > 0 and stats["mutated"] > 0
        # Still fully working afterwards.  (The authenticated fuzz moved the
        # link's command sequence far ahead: the next command uses one above it.)
        w = wall_s()
        seq, tok = vend.topup(shadow.ledger, MASTER, MID, 10000, w)
        t, p = fleet.seal_token(MID, n_box[0] + 1, tok, "mqtt:%d" % seq, w)
        head.expect("mqtt:%d" % seq)
        head.publish(t, p)
        ack = head.wait_ack("mqtt:%d" % seq, 5)
        assert ack["b"]["code"] == results.ACCEPTED and agent.device.meter.balance == 310000
        print("fuzz: %s examples in %.1f s" % (stats, elapsed))
    finally:
        agent.halt()
        head.stop()


def test_link_fuzz_every_refusal_is_an_event(tmp_path, mosquitto_factory):
    """Each class of refusal leaves an event the head-end receives."""
    pki = make_pki(tmp_path / "pki", clients=[MID, "headend"])
    broker = mosquitto_factory(
        **shipped_tls(pki))
    fleet = Fleet(MASTER)
    shadow = Shadow(tmp_path / "headend.db")
    head = HeadEnd(fleet, shadow, broker.host, broker.tls_port,
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend")),
                   client_id="headend-fuzz2").start()
    agent = CountingAgent(broker, pki, tmp_path / "store", fleet).start()
    try:
        assert agent.wait(lambda: agent.transport.connected), broker.log()
        topic = topics.topic(MID, topics.CMD)
        w = wall_s()
        good = {"a": {"token": b"x"}, "c": "token", "k": "cmd", "m": MID, "n": 5, "r": "e", "t": w, "x": w + 60}
        cases = [
            os.urandom(100),  # bad_mac
            envelope.seal(fleet.keys(MID).down, os.urandom(16), topic, [1, 2]),  # not a map
            envelope.seal(fleet.keys(MID).down, os.urandom(16), topic, dict(good, m="000000000043")),  # other meter
            envelope.seal(fleet.keys(MID).down, os.urandom(16), topic, dict(good, n=6, x=w - 10)),  # expired
            crypto_noncanonical(fleet, topic, good),  # non-canonical msgpack inside a valid seal
        ]
        for i, p in enumerate(cases):
            n0 = agent.seen
            head.publish(topic, p)
            assert agent.wait_seen(n0 + 1)
        assert agent.session.rejected == len(cases)
        def codes():
            with shadow.lock:
                rows = shadow.db.execute("SELECT body FROM events WHERE meter=? AND kind='link_reject'",
                                         (MID,)).fetchall()
            return sorted(json.loads(r[0])["code"] for r in rows)

        agent.wait(lambda: len(codes()) == len(cases))
        assert codes() == sorted(["bad_mac", "malformed", "wrong_meter", "expired", "malformed"]), codes()
    finally:
        agent.halt()
        head.stop()


def crypto_noncanonical(fleet, topic, fields):
    """A correctly sealed payload whose msgpack is not canonical (int 5 as uint16)."""
    from agent import crypto

    body = msgpack.pack(fields)
    body = body.replace(b"\xa1n\x05", b"\xa1n\xcd\x00\x05")
    return crypto.seal(fleet.keys(MID).down, os.urandom(16), body, topic.encode())
