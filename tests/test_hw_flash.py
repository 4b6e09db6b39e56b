"""scripts/flash.sh --dry-run: the bundles it builds, and the .mpy bundle running.

The dry run must touch no device: mpremote, ssh and scp are replaced on
PATH by stubs that record any call, and the test asserts none happened.
The compiled bundle is then run on the MicroPython unix port, importing
the core from the .mpy files only.
"""

import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sim.board import FAKES as BOARD_FAKES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLASH = ROOT / "scripts" / "flash.sh"
MICROPYTHON = str(BIN / "micropython")

CONFIG = {
    "meter": {"id": "000000000007", "constant": 1000},
    "account": {"mode": "prepaid", "opening_balance": 100000},
    "relay": {"pulse_ms": 20, "feedback": False},
    "hw": {"pulse_pin": 4, "relay_set_pin": 16, "relay_reset_pin": 17, "poll_ms": 5, "coil_gap_ms": 20},
    "tokens": {"key": "ab" * 32, "revision": 0},
}


@pytest.fixture
def stubs(tmp_path):
    """PATH entries for mpremote/ssh/scp that only record that they ran."""
    d = tmp_path / "stubs"
    d.mkdir()
    calls = tmp_path / "calls.txt"
    for name in ("mpremote", "ssh", "scp"):
        p = d / name
        p.write_text("#!/bin/sh\necho %s \"$@\" >> %s\nexit 1\n" % (name, calls))
        p.chmod(0o755)
    return d, calls


def flash(args, stubs, **env_over):
    d, _calls = stubs
    env = dict(os.environ)
    env["PATH"] = "%s:%s" % (d, env["PATH"])
    env["MPREMOTE"] = str(d / "mpremote")
    env.update(env_over)
    return subprocess.run(["bash", str(FLASH)] + args, capture_output=True, text=True, env=env, timeout=180)


@pytest.fixture(scope="module")
def mpy_bundle(tmp_path_factory):
    """One dry-run mpy bundle shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("flash")
    cfg = tmp / "board.json"
    cfg.write_text(json.dumps(CONFIG))
    keys = tmp / "link.keys"
    keys.write_bytes(b"\x01" * 32)
    bundle = tmp / "bundle"
    d = tmp / "stubs"
    d.mkdir()
    calls = tmp / "calls.txt"
    for name in ("mpremote", "ssh", "scp"):
        p = d / name
        p.write_text("#!/bin/sh\necho %s \"$@\" >> %s\nexit 1\n" % (name, calls))
        p.chmod(0o755)
    r = flash(["mpy", "--port", "/dev/ttyACM7", "--config", str(cfg), "--keys", str(keys), "--bundle", str(bundle), "--dry-run"], (d, calls))
    return r, bundle, calls


def test_mpy_dry_run_builds_and_verifies_without_a_device(mpy_bundle):
    r, bundle, calls = mpy_bundle
    assert r.returncode == 0, r.stdout + r.stderr
    assert not calls.exists(), "a dry run ran %s" % calls.read_text()
    out = r.stdout
    assert "(dry-run) " in out and "connect /dev/ttyACM7 fs cp -r agent hw boot.py main.py config.json keys :" in out
    assert "verified: " in out and "files match the bundle" in out
    assert "connect /dev/ttyACM7 reset" in out


def test_mpy_bundle_holds_compiled_modules_config_and_keys(mpy_bundle):
    _r, bundle, _calls = mpy_bundle
    sources = sorted(p.relative_to(ROOT).with_suffix(".mpy") for p in (ROOT / "agent").rglob("*.py"))
    for rel in sources:
        assert (bundle / rel).is_file(), rel
    for rel in ("hw/__init__.mpy", "hw/base.mpy", "hw/config.mpy", "hw/keys.mpy", "hw/mpy.mpy", "boot.py", "main.py"):
        assert (bundle / rel).is_file(), rel
    assert not list((bundle / "agent").rglob("*.py")) and not list((bundle / "hw").rglob("*.py"))
    assert not (bundle / "hw" / "pi.mpy").exists()  # a board never needs the Pi backend
    assert json.loads((bundle / "config.json").read_text()) == CONFIG
    key = bundle / "keys" / "link.keys"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    manifest = dict(reversed(line.split("  ")) for line in (bundle / "MANIFEST.sha256").read_text().splitlines())
    assert "keys/link.keys" in manifest and "agent/meter.mpy" in manifest


def test_the_compiled_core_runs_on_the_unix_port(mpy_bundle):
    _r, bundle, _calls = mpy_bundle
    script = """
import agent.meter as am
assert am.__file__.endswith('.mpy'), am.__file__
from agent.meter import Meter, load_config
from agent.events import Boot, Edge, Tick, TopUp
m = Meter(load_config({'meter': {'constant': 1000}, 'account': {'opening_balance': 20000}}))
acts = m.handle(Boot(1767225600, 0))
t = 1000
for i in range(1500):
    m.handle(Edge(1, t)); m.handle(Edge(0, t + 40)); t += 100
m.handle(Tick(1767225600 + t // 1000, t))
m.handle(TopUp(50000, 'tok1', 1767225600 + t // 1000, t))
print('RESULT', m.energy_wh, m.balance, m.relay_state, [a.kind for a in acts])
"""
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (bundle, BOARD_FAKES))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=256K", "-c", script], capture_output=True, text=True, env=env, cwd=str(bundle), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    energy, balance, state, kinds = r.stdout.split("RESULT ")[1].split(" ", 3)
    assert int(energy) == 1500
    assert int(balance) > 20000  # debited, then topped up by 5 CNY
    assert "pulse_coil" in kinds


def test_the_bundle_boots_as_a_board_would(mpy_bundle, tmp_path):
    _r, bundle, _calls = mpy_bundle
    board = tmp_path / "board"
    subprocess.run(["cp", "-r", str(bundle), str(board)], check=True)
    # main.py as on the board, with the loop bounded so the test ends.
    script = (
        "import machine\nmachine.reset()\nimport boot\n"
        "import hw.mpy\nassert hw.mpy.__file__.endswith('.mpy')\n"
        "agent = hw.mpy.main(watchdog=False, passes=30)\n"
        "print('RESULT', agent.app.meter.boots, agent.app.device.commits, len(agent.backend.coils.history))\n"
    )
    # 512K: the whole agent (settings schema, App, tokens) as .mpy in RAM on the 64-bit port;
    # frozen into the 32-bit firmware it needs far less (tests/test_board_agent.py).
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (board, BOARD_FAKES))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=512K", "-c", script], capture_output=True, text=True, env=env, cwd=str(board), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    boots, commits, pulses = map(int, r.stdout.split("RESULT ")[1].split())
    assert boots == 1 and commits >= 1 and pulses == 1
    assert (board / "data").is_dir() and os.listdir(board / "data")


def test_a_bad_config_stops_the_build_with_exit_2(tmp_path, stubs):
    bad = dict(CONFIG, hw=dict(CONFIG["hw"], relay_reset_pin=16))
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(bad))
    r = flash(["mpy", "--config", str(cfg), "--bundle", str(tmp_path / "b"), "--dry-run"], stubs)
    assert r.returncode == 2
    assert "pin 16 is used twice" in r.stderr
    r = flash(["mpy", "--bogus"], stubs)
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr
    r = flash(["mpy"], stubs)
    assert r.returncode == 2 and "--config FILE is required" in r.stderr
    r = flash(["pi", "meter.local", "--dry-run"], stubs)
    assert r.returncode == 2 and "USER@HOST expected" in r.stderr


def test_pi_dry_run_builds_an_install_bundle(tmp_path, stubs):
    keys = tmp_path / "meter.keys"
    keys.write_bytes(b"k" * 32)
    bundle = tmp_path / "pi"
    r = flash(["pi", "pi@meter-7.local", "--keys", str(keys), "--bundle", str(bundle), "--dry-run"], stubs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not stubs[1].exists(), "a dry run ran %s" % stubs[1].read_text()
    assert "(dry-run) scp -q" in r.stdout and "pi@meter-7.local" in r.stdout
    assert "sudo\\ sh\\ ./install.sh" in r.stdout
    tarball = bundle / "pmeter-bundle.tar.gz"
    assert stat.S_IMODE(tarball.stat().st_mode) == 0o600  # it holds the keys
    with tarfile.open(tarball) as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers()}
    for name in ("install.sh", "config.toml", "pmeter-agent.service", "keys/meter.keys", "src/agent/meter.py", "src/hw/pi.py", "src/pyproject.toml"):
        assert name in members, name
    assert stat.S_IMODE(members["keys/meter.keys"].mode) == 0o600
    assert stat.S_IMODE(members["config.toml"].mode) == 0o640
    assert not any("__pycache__" in n for n in members)
    install = (bundle / "payload" / "install.sh").read_text()
    assert "install -m 600 -o pmeter -g pmeter" in install and "systemctl enable" in install
    assert "pi5" in install  # rpi-lgpio on a Pi 5 / kernel >= 6.6
    assert subprocess.run(["sh", "-n", str(bundle / "payload" / "install.sh")]).returncode == 0


def test_the_systemd_unit_restarts_and_watches():
    unit = (ROOT / "hw" / "systemd" / "pmeter-agent.service").read_text()
    lines = {l.split("=", 1)[0]: l.split("=", 1)[1] for l in unit.splitlines() if "=" in l and not l.startswith("#")}
    assert lines["Restart"] == "always"
    assert lines["Type"] == "notify" and int(lines["WatchdogSec"]) > 0
    assert lines["StandardOutput"] == "journal"
    assert lines["User"] == "pmeter"
