"""`pmeter sim board`: the board entry on the MicroPython unix port as a real subprocess.

The board config is test_board_agent's (MQTT over TLS with the meter's
client certificate, against Mosquitto with the shipped TLS + ACL config);
the virtual board's load drives the pulse input, its relay model follows
the coils; the head-end is `pmeter push --wait`.
"""

import signal
import subprocess

import pytest

from test_agent_process import PY, ROOT, Agent, _push, rig  # noqa: F401 (rig: the broker with the shipped TLS config)
from test_board_agent import AMOUNT, MINOR, WAIT, _board_dir
from test_firmware import firmware  # noqa: F401 (the session fixture: the cached build)
OPENING = 100000  # a balance to run on: the relay model stays closed and the load flows


class SimBoard(Agent):
    """A `pmeter sim board` process, its stdout and stderr in a file; log(), wait_log() as for `pmeter agent`."""

    def __init__(self, *args):
        Agent.runs += 1
        self.log_path = args[args.index("--data") + 1] / ("run%d.log" % Agent.runs)
        self.log_path.parent.mkdir(exist_ok=True)
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PY, "-m", "pmeter", "sim", "board"] + [str(a) for a in args], cwd=str(ROOT),
                                     stdout=self.log_file, stderr=subprocess.STDOUT)

    def energy(self):
        """The energy (Wh) on the last status line."""
        return int([line for line in self.log().splitlines() if line.startswith("status ")][-1].split()[2])


@pytest.mark.parametrize("port", ["frozen", "source"])
def test_sim_board_connects_tops_up_meters_and_stops_on_sigterm(rig, firmware, port):  # noqa: F811
    """frozen: the 32-bit firmware (--firmware); source: the pip unix port with this checkout's agent."""
    tmp, _pki, broker, _fleet = rig
    name = "sim-board-" + port
    folder = _board_dir(rig, name, account={"opening_balance": OPENING}, tariff={"price": 0})
    more = ["--firmware", firmware] if port == "frozen" else []
    b = SimBoard("--config", folder / "config.json", "--data", tmp / (name + "-data"), "--load-w", "7200", *more)
    try:
        assert b.wait_log("mqtt connected to localhost:%d" % broker.tls_port, timeout=WAIT), b.log()
        assert b.wait_log("status ", timeout=WAIT), b.log()
        first = b.energy()
        res = _push(rig, AMOUNT, tmp / (name + ".db"))
        assert res["code"] == "accepted" and res["balance"] == OPENING + MINOR, (res, b.log())
        assert b.wait_log("event ", timeout=WAIT) and " topup " in b.log(), b.log()
        n = b.log().count("status ")
        assert b.wait_log("status ", count=n + 2, timeout=WAIT), b.log()
        assert b.energy() > first, b.log()
        assert "relay model: open" not in b.log(), b.log()
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=WAIT) == 0, b.log()
    finally:
        b.kill()


def _refused(*args):
    out = subprocess.run([PY, "-m", "pmeter", "sim", "board"] + [str(a) for a in args], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=30)
    return out.returncode, out.stderr


def test_sim_board_refuses_a_missing_config(tmp_path):
    code, err = _refused("--config", tmp_path / "nope.json", "--data", tmp_path / "d")
    assert code == 2 and "--config" in err and "cannot read" in err, err
    assert not (tmp_path / "d").exists()  # nothing started


def test_sim_board_refuses_a_bad_heap(rig, tmp_path):  # noqa: F811
    folder = _board_dir(rig, "bad-heap")
    code, err = _refused("--config", folder / "config.json", "--data", tmp_path / "d", "--heap", "lots")
    assert code == 2 and "--heap" in err, err
    assert not (tmp_path / "d").exists()


def test_sim_board_refuses_a_missing_firmware(rig, tmp_path):  # noqa: F811
    folder = _board_dir(rig, "no-firmware")
    code, err = _refused("--config", folder / "config.json", "--data", tmp_path / "d", "--firmware", tmp_path / "fw")
    assert code == 2 and "--firmware" in err and "not an executable file" in err, err
    assert not (tmp_path / "d").exists()


def test_sim_board_relay_model_opens_on_the_cut_and_closes_on_a_top_up(rig, firmware):  # noqa: F811
    tmp = rig[0]
    # 0.6 CNY a second at 2 Wh/s: the 1 CNY opening balance runs out and the agent cuts.
    folder = _board_dir(rig, "sim-board-cut", account={"opening_balance": 10000, "trip_delay_s": 0},
                        tariff={"price": 3000000})
    b = SimBoard("--config", folder / "config.json", "--data", tmp / "sim-board-cut-data", "--firmware", firmware,
                 "--load-w", "7200")
    try:
        assert b.wait_log("relay model: open", timeout=WAIT), b.log()
        n = b.log().count("status ")
        assert b.wait_log("status ", count=n + 2, timeout=WAIT), b.log()
        stopped = b.energy()
        assert b.wait_log("status ", count=n + 3, timeout=WAIT), b.log()
        assert b.energy() == stopped, b.log()  # no load flows through an open relay
        res = _push(rig, AMOUNT, tmp / "sim-board-cut.db")
        assert res["code"] == "accepted", (res, b.log())
        assert b.wait_log("relay model: closed", timeout=WAIT), b.log()
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=WAIT) == 0, b.log()
    finally:
        b.kill()
