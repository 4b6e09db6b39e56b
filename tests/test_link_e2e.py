"""End to end through a real Mosquitto (TLS, per-meter certificates, the
shipped ACL): head-end -> sealed token -> agent (Meter + TokenGuard + link
+ durable store) -> ack, state, status, birth; broker restart and replay;
bad payloads refused while the connection stays up."""

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from apps import fleet_app
from mosquitto import MOSQUITTO, make_pki, shipped_tls

from agent import results
from agent.events import Tamper
from agent.link import envelope, topics
from agent.link.backoff import Backoff
from agent.meter import Meter
from agent.tokens import TokenGuard
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS, PahoTransport, mono_ms, wall_s

ROOT = Path(__file__).resolve().parent.parent
MID = "000000000042"
MASTER = bytes(range(32))


class AgentThread:
    """A CPython agent loop: LinkedMeter on a Device (meter + durable store) and paho."""

    def __init__(self, broker, pki, store_dir, fleet):
        self.fleet = fleet
        app = fleet_app(fleet, MID, store_dir)
        self.store, self.device, self.linked = app.store, app.device, app.linked
        self.hw = []
        self.transport = PahoTransport(
            self.linked, broker.host, broker.tls_port, "meter-" + MID,
            tls=TLS(pki.ca_cert, pki.client_cert(MID), pki.client_key(MID)),
            keepalive=5, backoff=Backoff(base_ms=50, cap_ms=400, stable_ms=1000),
            on_hw=self.hw.extend, log=lambda m: None)
        self.stop = threading.Event()
        self.inject = []  # local events to feed from the loop thread
        self.handled = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        hw, outs = self.linked.boot(wall_s(), mono_ms())
        self.hw.extend(hw)
        while not self.stop.is_set():
            self.transport.step(0.01)
            while self.inject:
                hw, outs = self.linked.handle(self.inject.pop(0), wall_s())
                self.hw.extend(hw)
                self.transport.send(outs)
                self.handled += 1

    def start(self):
        self.thread.start()
        return self

    def halt(self):
        self.stop.set()
        self.thread.join(5)
        self.transport.close()

    def wait(self, cond, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.01)
        return False


@pytest.fixture
def rig(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki", clients=[MID, "headend", "headend-ops"])  # one identity per head-end process
    (tmp_path / "broker-db").mkdir()
    broker = mosquitto_factory(
        **shipped_tls(pki),
        # Like production: sessions and retained messages survive a restart.
        extra_lines=["persistence true", "persistence_location %s/" % (tmp_path / "broker-db")],
    )
    fleet = Fleet(MASTER)
    shadow = Shadow(tmp_path / "shadow.db")
    head = HeadEnd(fleet, shadow, broker.host, broker.tls_port,
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend")),
                   client_id="headend-test")
    head.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
    head.start()
    agent = AgentThread(broker, pki, tmp_path / "store", fleet).start()
    assert agent.wait(lambda: agent.transport.connected), broker.log()
    yield broker, pki, fleet, shadow, head, agent, tmp_path
    agent.halt()
    head.stop()


def _status(shadow):
    rows = shadow.meters(MID)
    return rows[0]["status"] if rows else None


def test_link_e2e_topup_ack_state_status_birth(rig):
    broker, pki, fleet, shadow, head, agent, _ = rig
    ref, ack, secs = head.push_topup(MID, 500000, wait=5)
    assert ack is not None, broker.log()
    assert ack["b"]["code"] == results.ACCEPTED and ack["b"]["bal"] == 500000 and ack["b"]["r"] == ref
    assert agent.linked.meter.balance == 500000
    # Durable before acknowledged: the store already holds the credit and the used token.
    value = agent.store.load()[0][0].value
    assert Meter.restore(agent.linked.meter.cfg, value["meter"]).balance == 500000
    restored = TokenGuard(MID, fleet.meter_key(MID))
    restored.restore(value["tokens"])
    assert restored.check(fleet.topup_token(MID, 1, 500000, wall_s()), wall_s())[0] == results.ALREADY_USED
    assert agent.wait(lambda: (shadow.meters(MID)[0]["state"] or {}).get("bal") == 500000)
    row = shadow.meters(MID)[0]
    assert row["status"] == "online" and row["birth"]["fw"] == "test"
    assert agent.wait(lambda: shadow.reconcile(MID)["applied"] == 500000)
    assert shadow.reconcile(MID)["problems"] == []
    # The same token again (QoS 1 redelivery, or a replay): never credited twice.
    topic, payload = fleet.seal_token(MID, 1, fleet.topup_token(MID, 1, 500000, wall_s()), "again", wall_s())
    head.expect("again")
    head.publish(topic, payload)
    ack = head.wait_ack("again", 5)
    assert ack["b"]["code"] == results.ALREADY_USED and agent.linked.meter.balance == 500000


def test_link_e2e_will_marks_meter_offline(rig):
    broker, pki, fleet, shadow, head, agent, _ = rig
    assert agent.wait(lambda: _status(shadow) == "online")
    agent.stop.set()
    agent.thread.join(5)
    # Vanish without DISCONNECT: the broker must publish the will.
    agent.transport.client.socket().shutdown(socket.SHUT_RDWR)
    assert agent.wait(lambda: _status(shadow) == "offline"), broker.log()


def test_link_e2e_broker_restart_replays_outbox_in_order(rig):
    broker, pki, fleet, shadow, head, agent, _ = rig
    head.push_topup(MID, 10000, wait=5)
    broker.stop()
    assert agent.wait(lambda: not agent.transport.connected)
    # Offline: the meter keeps working and its events wait in the durable outbox.
    for i in range(5):
        agent.inject.append(Tamper(i % 2 == 0, wall_s(), mono_ms()))
    assert agent.wait(lambda: agent.handled == 5)
    pending = agent.linked.session.outbox.pending()
    assert pending >= 5
    stored = agent.store.load()[0][0].value["link"]["outbox"]["items"]
    assert len(stored) >= 5  # committed before any attempt to send
    # Same ports again (the config file already names them).
    log = open(broker.log_path, "ab")
    broker.process = subprocess.Popen([MOSQUITTO, "-c", str(broker.conf_path)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    broker._wait_listening(10)
    assert agent.wait(lambda: agent.transport.connected and agent.linked.session.outbox.pending() == 0, 10), broker.log()
    assert agent.transport.connects >= 2
    assert agent.wait(lambda: len(_cover_events(shadow)) == 5, 5)
    qs = [q for q, _ in _cover_events(shadow)]
    assert qs == sorted(qs)
    seqs = [s for _, s in _cover_events(shadow)]
    assert seqs == sorted(seqs)


def _cover_events(shadow):
    with shadow.lock:
        return shadow.db.execute(
            "SELECT q, seq FROM events WHERE meter=? AND kind LIKE 'cover%' ORDER BY q", (MID,)).fetchall()


def test_link_e2e_bad_payloads_rejected_connection_stays_up(rig):
    broker, pki, fleet, shadow, head, agent, _ = rig
    head.push_topup(MID, 20000, wait=5)
    balance = agent.linked.meter.balance
    t = topics.topic(MID, topics.CMD)
    w = wall_s()
    good = fleet.seal_token(MID, 50, fleet.topup_token(MID, 50, 10000, w), "g", w)[1]
    other = Fleet(bytes(32))
    bad = [
        b"",
        b"\x93\x01\x02",  # msgpack, not sealed
        os.urandom(3000),  # oversized
        good[:-3],  # truncated
        other.seal_token(MID, 51, other.topup_token(MID, 51, 10000, w), "k", w)[1],  # wrong key
        fleet.seal_token(MID, 1, fleet.topup_token(MID, 1, 20000, w), "replay", w)[1],  # replayed n/token
        envelope.seal_command(fleet.keys(MID), os.urandom(16), t, "000000000043", 52, "token",
                              {"token": fleet.topup_token("000000000043", 52, 10000, w)}, "o", w, w + 60),
        fleet.seal_token(MID, 53, b"\x00garbage-token", "gt", w)[1],  # authenticated, bad token
    ]
    before = agent.linked.session.rejected
    for p in bad:
        head.publish(t, p)
    # A good one after them proves the connection stayed up and they were all seen.
    head.expect("g")
    head.publish(t, good)
    ack = head.wait_ack("g", 5)
    assert ack is not None and ack["b"]["code"] == results.ACCEPTED
    assert agent.linked.meter.balance == balance + 10000
    assert agent.transport.connects == 1 and agent.transport.callback_errors == 0
    # Seven refused by the link; the garbage token opened (the sender is
    # authenticated) and was refused by the TokenGuard, with an ack and an event.
    assert agent.linked.session.rejected - before == 7
    assert agent.wait(lambda: _count_rejects(shadow) == 7)
    assert agent.wait(lambda: "token_reject" in _kinds(shadow))


def _kinds(shadow):
    with shadow.lock:
        return [r[0] for r in shadow.db.execute("SELECT kind FROM events WHERE meter=?", (MID,)).fetchall()]


def _count_rejects(shadow):
    with shadow.lock:
        return shadow.db.execute(
            "SELECT COUNT(*) FROM events WHERE meter=? AND kind='link_reject'", (MID,)).fetchone()[0]


def _cli(argv):
    import argparse

    from headend.mqtt_cli import register

    parser = argparse.ArgumentParser(prog="pmeter")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_link_e2e_cli_push_and_status(rig, capsys):
    broker, pki, fleet, shadow, head, agent, tmp_path = rig
    key_file = tmp_path / "master.hex"
    key_file.write_text(MASTER.hex())
    key_file.chmod(0o600)
    db = str(tmp_path / "cli-ledger.db")
    conn = ["--broker", "mqtts://%s:%d" % (broker.host, broker.tls_port), "--ca", str(pki.ca_cert),
            "--cert", str(pki.client_cert("headend-ops")), "--key", str(pki.client_key("headend-ops")),
            "--master", str(key_file), "--ledger", db]
    assert _cli(["push", "--meter", MID, "--amount", "50.00", "--wait", "--json"] + conn) == 0
    out = __import__("json").loads(capsys.readouterr().out)
    assert out["code"] == "accepted" and out["balance"] == 500000 and out["latency_ms"] > 0
    assert _cli(["push", "--meter", MID, "--amount", "-5", "--wait"] + conn) == 2
    assert "--amount" in capsys.readouterr().err
    assert agent.linked.meter.balance == 500000  # the refused push changed nothing
    assert _cli(["status", "--meter", MID, "--json", "--ledger", db]) == 0
    rows = __import__("json").loads(capsys.readouterr().out)
    assert rows[0]["meter"] == MID and rows[0]["reconcile"]["issued"] == 500000
