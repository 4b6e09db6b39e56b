"""Device + store + meter on the real MicroPython unix port (heap 256K: the meter
source is compiled on the device at import; boards would use frozen .mpy)."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_runs_on_micropython(tmp_path):
    env = dict(os.environ, MICROPYPATH="%s:%s" % (ROOT, os.path.join(ROOT, "tests")), PMETER_TEST_TMP=str(tmp_path))
    done = subprocess.run(
        [os.path.join(ROOT, ".venv/bin/micropython"), "-X", "heapsize=256K", "mpy_runner.py", "portable.store_device_check"],
        cwd=os.path.join(ROOT, "tests"), env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 0 failed" in done.stdout
