"""agent/settings.py and the LinkedMeter on a Device, on CPython and on the real
MicroPython unix port (heap 1M: settings imports every component's schema, the keypad table is in every commit, and
the sources are compiled on the device at import; boards use frozen .mpy)."""

import os
import subprocess

from portable import agent_check, scratch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_agent_portable_checks_on_cpython(tmp_path, monkeypatch):
    monkeypatch.setenv("PMETER_TEST_TMP", str(tmp_path))
    monkeypatch.setattr(scratch, "_parent", [])
    agent_check.test_agent_settings_load_and_errors()
    agent_check.test_agent_linked_topup_keypad_restart()


def test_agent_portable_checks_on_micropython(tmp_path):
    env = dict(os.environ, MICROPYPATH="%s:%s" % (ROOT, os.path.join(ROOT, "tests")), PMETER_TEST_TMP=str(tmp_path))
    done = subprocess.run(
        [os.path.join(ROOT, ".venv/bin/micropython"), "-X", "heapsize=1M", "mpy_runner.py", "portable.agent_check"],
        cwd=os.path.join(ROOT, "tests"), env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed" in done.stdout
