"""Every token the device refuses is a line in the agent's log with its reason
and ref: a real `pmeter agent --hw sim` process, a real Mosquitto with the
shipped TLS config, sealed commands from the head-end, and a keypad FIFO."""

import os
import time

import pytest
from mosquitto import Broker, make_pki, shipped_tls
from test_agent_process import Agent, _keys_file, _toml

from agent import results
from agent.tokens import keypad
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS

MID = "000000000078"
MASTER = bytes(range(64, 96))
KEYPAD_KEY = "b2" * 16


@pytest.fixture
def rig(tmp_path):
    pki = make_pki(tmp_path / "pki", clients=[MID, "headend"])
    broker = Broker(tmp_path / "broker", **shipped_tls(pki))
    broker.start()
    fleet = Fleet(MASTER)
    fifo = tmp_path / "keypad"
    os.mkfifo(fifo)
    cfg = {
        "meter": {"id": MID},
        "account": {"opening_balance": 0, "hoarding": 1000000},  # at most 100 CNY
        "agent": {"data_dir": str(tmp_path / "data"), "keypad": str(fifo),
                  "keys": _keys_file(tmp_path / "keys.toml", {
                      "tokens": {"key": fleet.meter_key(MID).hex(), "keypad_key": KEYPAD_KEY, "keypad_divider": 1},
                      "link": {"key": fleet.link_key(MID).hex()}})},
        "sim": {"load_w": 0},
        "mqtt": {"host": broker.host, "port": broker.tls_port, "ca": str(pki.ca_cert),
                 "cert": str(pki.client_cert(MID)), "key": str(pki.client_key(MID)), "keepalive_s": 5},
    }
    config = tmp_path / "agent.toml"
    config.write_text(_toml(cfg))
    agent = Agent(config)
    head = None
    try:
        assert agent.wait_log("MQTT connected", timeout=20), agent.log()
        head = HeadEnd(fleet, Shadow(tmp_path / "shadow.db"), broker.host, broker.tls_port,
                       tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend")), client_id="headend")
        head.start()
        yield agent, head, fleet, fifo
    finally:
        if head is not None:
            head.stop()
        agent.kill()
        broker.stop()


class Sender:
    """Sealed commands with fresh link sequences and refs."""

    def __init__(self, head, fleet):
        self.head = head
        self.fleet = fleet
        self.n = 0

    def send(self, token, payload_edit=None, wait=10.0):
        """Publish ``token`` in a new envelope; returns (ref, ack code or None)."""
        self.n += 1
        ref = "t-%d" % self.n
        topic, payload = self.fleet.seal_token(MID, self.n, token, ref, int(time.time()))
        return ref, self.publish(ref, topic, payload_edit(payload) if payload_edit else payload, wait)

    def publish(self, ref, topic, payload, wait=10.0):
        self.head.expect(ref)
        self.head.publish(topic, payload)
        ack = self.head.wait_ack(ref, wait)
        return None if ack is None else ack["b"]["code"]


def _logged(agent, text):
    return agent.wait_log(text, timeout=10)


def test_every_refused_token_is_a_log_line_with_its_reason_and_ref(rig):
    agent, head, fleet, fifo = rig
    s = Sender(head, fleet)
    now = int(time.time())

    ok = fleet.topup_token(MID, 1, 500000, now)
    ref, code = s.send(ok)
    assert code == results.ACCEPTED, agent.log()
    assert "token refused" not in agent.log()

    # The same token again in a new envelope: the token's replay guard.
    ref, code = s.send(ok)
    assert code == results.ALREADY_USED
    assert _logged(agent, "token refused (mqtt, ref %s): already_used" % ref), agent.log()

    # The same envelope again: the link's command sequence guard.
    topic, payload = fleet.seal_token(MID, 1, ok, "t-1", now)
    code = s.publish("t-1", topic, payload)
    assert code == results.ALREADY_USED
    assert _logged(agent, "token refused (mqtt, ref t-1): already_used (command sequence 1"), agent.log()

    # A token made with another key: bad MAC, inside a valid envelope.
    ref, code = s.send(Fleet(bytes(32)).topup_token(MID, 2, 10000, now))
    assert code == results.BAD_MAC
    assert _logged(agent, "token refused (mqtt, ref %s): bad_mac" % ref), agent.log()

    # Expired ten days ago.
    ref, code = s.send(fleet.topup_token(MID, 3, 10000, now - 864000, ttl=60))
    assert code == results.EXPIRED
    assert _logged(agent, "token refused (mqtt, ref %s): expired" % ref), agent.log()

    # Another meter's token in this meter's envelope.
    ref, code = s.send(fleet.topup_token("000000000099", 4, 10000, now))
    assert code in (results.WRONG_METER, results.BAD_MAC)
    assert _logged(agent, "token refused (mqtt, ref %s): %s" % (ref, code)), agent.log()

    # The core refuses it: 50 + 80 CNY is over the hoarding limit of 100.
    ref, code = s.send(fleet.topup_token(MID, 5, 800000, now))
    assert code == results.OVER_HOARDING_LIMIT
    assert _logged(agent, "token refused (mqtt, ref %s): over_hoarding_limit" % ref), agent.log()

    # A damaged envelope: nobody authenticated, no ack, still a log line.
    def flip(p):
        return p[:-1] + bytes([p[-1] ^ 1])

    ref, code = s.send(fleet.topup_token(MID, 6, 10000, now), payload_edit=flip, wait=1.0)
    assert code is None
    assert _logged(agent, "token refused (mqtt, ref -): bad_mac"), agent.log()

    # Keypad: a code used twice, then wrong codes up to the lockout.
    chain = keypad.Chain(bytes.fromhex(KEYPAD_KEY))
    good = chain.token(5, 2)
    with open(fifo, "w") as f:
        f.write("*%s#\n" % good)
    assert _logged(agent, "keypad code: accepted"), agent.log()
    with open(fifo, "w") as f:
        f.write("*%s#\n" % good)
    assert _logged(agent, "token refused (keypad, ref -): already_used"), agent.log()
    wrong = good[:-1] + str((int(good[-1]) + 1) % 10)
    for _ in range(4):
        with open(fifo, "w") as f:
            f.write("*%s#\n" % wrong)
    assert _logged(agent, "token refused (keypad, ref -): bad_mac"), agent.log()
    assert _logged(agent, "token refused (keypad, ref -): locked_out (keypad locked for"), agent.log()
    assert agent.term() == 0
