"""The whole board agent on the 32-bit frozen firmware, against the real broker.

`scripts/flash.sh firmware unix32` builds MicroPython's unix port as a
32-bit binary with the agent and the board shell (hw/mpy.py) frozen in
(tests/test_firmware.py).  Here that binary runs the board entry
``hw.mpy.main`` - config.json with the agent's one schema, the App
(meter, durable store, tokens, link session), Wi-Fi join through the fake
``network`` (sim/mpy_board/network.py; its first join is refused), the
MicroPython MQTT transport over TLS with the meter's client certificate -
at a board-sized heap, against Mosquitto with the shipped TLS +
client-certificate + ACL config.  Pins are the fake ``machine``'s; a
small task in the entry script drives the pulse input like a 7.2 kW load.

The board's stdout is its log ("mqtt connected", "event ...", "mem STEP
BYTES" heap figures after each step); the head-end is `pmeter push --wait`.
"""

import json
import os
import subprocess

from mosquitto import MOSQUITTO, make_pki
from test_agent_process import MID, Agent, _push, rig  # noqa: F401 (rig: the broker with the shipped TLS config)
from test_firmware import firmware  # noqa: F401 (the session fixture: the cached build)

from agent.tokens import keypad as kp
from sim.board import launch

# The smallest heap the whole journey below completes in on the 32-bit
# frozen build (docs/benchmarks.md); PMETER_BOARD_HEAP overrides it to measure.
HEAP = os.environ.get("PMETER_BOARD_HEAP", "256K")
WAIT = 30  # seconds for a line the board is expected to log (a loaded CI machine)
AMOUNT = "12.34"
MINOR = 123400
KEYPAD_KEY = bytes(range(200, 216))

ENTRY = r'''
import time

import machine
import network
import hw.mpy

machine.reset()
network.refuse(1)  # the first Wi-Fi join fails: the shell backs off and retries


def _exists(name):
    import os

    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _tear_store_writes():
    # With a file "tear" in the board's folder, the next store write stops
    # half-way and the board hangs there until the test kills it: a power
    # cut in the middle of a commit.  With a file "oom", the next encoding of
    # the state for a commit raises MemoryError, once, as on a board whose
    # heap runs out for a moment.
    from agent import store

    write = store._OsHandle.write
    pack = store.msgpack.pack

    def pack_or_fail(*args):
        if isinstance(args[0], dict) and "meter" in args[0] and _exists("oom"):
            import os

            os.remove("oom")
            raise MemoryError("memory allocation failed (injected by the test)")
        return pack(*args)

    def torn(self, data):
        if _exists("tear"):
            write(self, data[:len(data) // 2])
            self.flush()
            print("TORN", len(data))
            
            while True:
                time.sleep(1)
        return write(self, data)

    store._OsHandle.write = torn
    store.msgpack.pack = pack_or_fail


async def load(agent):
    # 2 Wh a second at 1000 imp/kWh (a 7.2 kW load) on the pulse input.
    import asyncio

    n = 0
    while True:
        machine.drive(4, 0)  # active low, held past the core's 25 ms filter
        await asyncio.sleep_ms(40)
        machine.drive(4, 1)
        await asyncio.sleep_ms(460)
        n += 1
        if _exists("keys.txt"):  # the test types on the keypad (a controller on UART 1)
            with open("keys.txt", "rb") as f:
                machine.uart_feed(1, f.read())
            import os

            os.remove("keys.txt")
        if n % 4 == 0:
            m = agent.app.meter
            link = agent.link.transport
            print("status", m.energy_wh, m.balance, m.relay_state, 1 if link.connected else 0, link.connects,
                  agent.app.session.outbox.pending())


_tear_store_writes()
hw.mpy.main(watchdog=False, extra=load)
'''


def _board_dir(rig, name, **extra):
    tmp, pki, broker, fleet = rig
    board = tmp / name
    board.mkdir()
    cfg = {
        "meter": {"id": MID, "constant": 1000},
        "account": {"opening_balance": 0},
        "relay": {"pulse_ms": 20, "feedback": False},
        "hw": {"pulse_pin": 4, "relay_set_pin": 16, "relay_reset_pin": 17, "led_pin": 21, "poll_ms": 20},
        "store": {"checkpoint_s": 600},  # no routine checkpoint in the way of the commits under test
        "agent": {"fw": "board-test", "keypad": "uart:1"},
        "tokens": {"key": fleet.meter_key(MID).hex(), "keypad_key": KEYPAD_KEY.hex(),
                   "keypad_starting_code": kp.Chain(KEYPAD_KEY).start},
        "link": {"key": fleet.link_key(MID).hex(), "telemetry_s": 10},
        # localhost: the name in the broker's certificate, checked by mbedTLS
        "mqtt": {"host": "localhost", "port": broker.tls_port, "ca": str(pki.ca_cert),
                 "cert": str(pki.client_cert(MID)), "key": str(pki.client_key(MID)), "keepalive_s": 5},
        "wifi": {"ssid": "test-net", "password": "not-secret"},
    }
    for k, v in extra.items():
        cfg[k] = dict(cfg.get(k, {}), **v)
    (board / "config.json").write_text(json.dumps(cfg))
    (board / "board.py").write_text(ENTRY)
    return board


class Board(Agent):
    """The firmware running the board entry, its stdout in a file (one per run);
    log(), wait_log() and kill() as for a `pmeter agent` process."""

    def __init__(self, binary, board, heap=HEAP):
        Agent.runs += 1
        self.log_path = board / ("run%d.log" % Agent.runs)
        self.log_file = open(self.log_path, "wb")
        # Only the fakes beside the frozen modules: agent/ and hw/ can only come from flash.
        self.proc = launch(binary, board, heap, frozen=True, stdout=self.log_file, stderr=subprocess.STDOUT)

    def lines(self, prefix):
        return [line for line in self.log().splitlines() if line.startswith(prefix)]

    def status(self):
        """The last status line: (energy Wh, balance, relay, connected, connects, outbox entries)."""
        last = self.lines("status ")[-1].split()
        return int(last[1]), int(last[2]), last[3], last[4] == "1", int(last[5]), int(last[6])


def _booted_balance(board):
    line = board.lines("meter %s booted" % MID)[-1]
    return int(line.split("balance ")[1].split(",")[0])


def _mem(board):
    return dict((line.split()[1], int(line.split()[2])) for line in board.lines("mem "))


def test_board_agent_connects_tops_up_and_survives_a_cut_mid_commit(rig, firmware):  # noqa: F811
    tmp = rig[0]
    folder = _board_dir(rig, "journey", tariff={"price": 0})  # energy is free here: balances are exact
    shadow = tmp / "journey.db"
    b = Board(firmware, folder)
    try:
        assert b.wait_log("mqtt connected to localhost:%d (connection 1)" % rig[2].tls_port, timeout=WAIT), b.log()
        assert "wifi joining test-net" in b.log() and "wifi connected to test-net" in b.log()
        res = _push(rig, AMOUNT, shadow)
        assert res["code"] == "accepted" and res["balance"] == MINOR, (res, b.log())
        assert b.wait_log("mem topup", timeout=WAIT)
        figures = _mem(b)
        # A kill after the commit: the credit was durable before the ack.
        b.kill()
        b = Board(firmware, folder)
        assert b.wait_log("mqtt connected", timeout=WAIT), b.log()
        kept = _booted_balance(b)
        assert kept == MINOR, b.log()
        # A cut in the middle of the next top-up's commit.
        (folder / "tear").write_text("")
        torn = _push(rig, AMOUNT, shadow)
        assert torn["code"] != "accepted", torn  # never acknowledged
        assert b.wait_log("TORN", timeout=WAIT), b.log()
        b.kill()
        (folder / "tear").unlink()
        b = Board(firmware, folder)
        assert b.wait_log("mqtt connected", timeout=WAIT), b.log()
        after = _booted_balance(b)
        # The torn commit applied nothing: the balance is the one before it, not state lost.
        assert after == MINOR, b.log()
        assert "state_lost" not in b.log(), b.log()
        again = _push(rig, AMOUNT, shadow)
        assert again["code"] == "accepted", (again, b.log())
        # Exactly one more top-up: none lost, none doubled.
        assert again["balance"] == 2 * MINOR, (again, b.log())
        # A code typed on the keypad: 3 CNY, then a wrong one (refused, logged).
        (folder / "keys.txt").write_text("*%s#" % kp.Chain(KEYPAD_KEY).token(3, 2))  # an even count adds credit
        assert b.wait_log("keypad code: accepted", timeout=WAIT), b.log()
        (folder / "keys.txt").write_text("*000000000#")
        assert b.wait_log("token refused (keypad", timeout=WAIT), b.log()
        n = len(b.lines("status "))
        assert b.wait_log("status ", count=n + 1, timeout=WAIT), b.log()
        assert b.status()[1] == 2 * MINOR + 30000, b.log()
    finally:
        b.kill()
    print("heap figures (bytes in use after gc.collect):", figures)


def test_board_agent_keeps_metering_and_cuts_through_a_broker_outage_then_reconnects(rig, firmware):  # noqa: F811
    tmp, pki, broker, fleet = rig
    # 0.6 CNY a second at 2 Wh/s: the 1 CNY opening balance runs out during the outage.
    folder = _board_dir(rig, "outage", account={"opening_balance": 10000, "trip_delay_s": 0},
                        tariff={"price": 3000000})
    b = Board(firmware, folder)
    try:
        assert b.wait_log("mqtt connected to localhost:%d (connection 1)" % broker.tls_port, timeout=WAIT), b.log()
        broker.process.kill()  # the broker dies; its port stays ours for the restart
        broker.process.wait()
        assert b.wait_log("mqtt: connection lost", timeout=WAIT), b.log()
        offline = len(b.lines("status "))
        assert b.wait_log("status ", count=offline + 2, timeout=WAIT), b.log()
        e1, bal1, _r, up1, _c, _q = b.status()
        assert b.wait_log("tripped_arrears", timeout=WAIT), b.log()  # the cut, with no broker
        assert b.wait_log("status ", count=len(b.lines("status ")) + 1, timeout=WAIT), b.log()
        e2, bal2, relay, up2, _c, queued = b.status()
        assert not up1 and not up2
        assert e2 > e1 and bal2 < bal1  # metering and debiting go on offline
        assert relay == "tripped_arrears" and queued > 0  # the cut's events wait in the outbox
        assert "retry in" in b.log() and b.proc.poll() is None  # backing off, never rebooting
        broker.process = subprocess.Popen([MOSQUITTO, "-c", str(broker.conf_path)], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        assert b.wait_log("(connection 2)", timeout=150), b.log()
        res = _push(rig, AMOUNT, tmp / "outage.db")
        assert res["code"] == "accepted", (res, b.log())
        # The top-up closes the relay; the events queued offline went out (PUBACKed).
        n = len(b.lines("status "))
        assert b.wait_log("status ", count=n + 1, timeout=WAIT), b.log()
        _e, _b, relay, up, connects, queued = b.status()
        assert (relay, up, connects, queued) == ("connected", True, 2, 0), b.log()
    finally:
        b.kill()


def test_board_agent_refuses_a_broker_its_ca_did_not_sign(rig, tmp_path, firmware):  # noqa: F811
    other = make_pki(tmp_path / "other", clients=[])
    folder = _board_dir(rig, "wrong-ca", mqtt={"ca": str(other.ca_cert)})
    b = Board(firmware, folder)
    try:
        assert b.wait_log("mqtt: connect failed", count=2, timeout=WAIT), b.log()
        assert "mqtt connected" not in b.log(), b.log()
    finally:
        b.kill()


def test_board_agent_out_of_memory_in_a_commit_acknowledges_nothing_and_restarts_from_the_store(rig, firmware):  # noqa: F811
    tmp = rig[0]
    folder = _board_dir(rig, "oom", tariff={"price": 0})
    b = Board(firmware, folder)
    try:
        assert b.wait_log("mqtt connected", timeout=WAIT), b.log()
        (folder / "oom").write_text("")
        res = _push(rig, AMOUNT, tmp / "oom.db")
        assert res["code"] != "accepted", (res, b.log())  # the credit never reached the store: no ack
        assert b.proc.wait(timeout=WAIT) != 0 and "MemoryError" in b.log(), b.log()  # main.py resets the board
        b.kill()
        b = Board(firmware, folder)
        assert b.wait_log("mqtt connected", timeout=WAIT), b.log()
        assert _booted_balance(b) == 0, b.log()
        res = _push(rig, AMOUNT, tmp / "oom.db")
        assert res["code"] == "accepted" and res["balance"] == MINOR, (res, b.log())
    finally:
        b.kill()

