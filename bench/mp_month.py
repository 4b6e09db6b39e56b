"""One meter's simulated month fed to the core as a board would see it, and
the smallest MicroPython heap that lives through it.

    .venv/bin/python bench/mp_month.py [--micropython SRC | --firmware BINARY]

The month: 31 days, 2,976 fifteen-minute pulse counts, a daily freeze command and
tick, a top-up every 10 days.  The driver (CPython) runs it side by side,
in one invocation, on

- the 64-bit pip unix port (.venv/bin/micropython) loading the agent
  compiled with mpy-cross (.mpy files: bytecode on the heap), and
- the 32-bit unix port with the agent frozen in (bytecode in the binary),
  built or taken from the cache by `scripts/flash.sh firmware unix32`
  (SRC as there), or the BINARY given;

and prints for each the smallest `-X heapsize` that completes the month
(bisection in 1 KB steps) and where the bytes go: gc.mem_alloc() after
each import and step, measured at a roomy heap.  Under MicroPython
(`micropython bench/mp_month.py`) it prints that probe alone.
"""

import gc
import sys

T0 = 1767196800
DAYS = 31
# The probe's milestones: the core's modules in import order, then the month.
IMPORTS = ("agent.config", "agent.calendar", "agent.results", "agent.events", "agent.commands", "agent.eventlog",
           "agent.account.tariff", "agent.account.account", "agent.metering.pulse", "agent.metering.freeze",
           "agent.metering.plausibility", "agent.metering.registers", "agent.relay.driver", "agent.relay.policy",
           "agent.meter")


def month(on_day=None):
    """Feed one meter a month of events; ``on_day(day, meter)`` after each day.  Returns (meter, events)."""
    from agent.events import Boot, Command, Pulses, Tick, TopUp
    from agent.meter import Meter, load_config

    m = Meter(load_config({"tariff": {"kind": "tiered", "tier_kwh": [260, 600], "tier_prices": [5883, 6383, 8883]},
                           "account": {"opening_balance": 1000000}}))
    m.handle(Boot(T0, 0))
    n = 1
    for k in range(1, DAYS * 96 + 1):
        w = T0 + k * 900
        m.handle(Pulses(200 + (k * 37) % 270, w, k * 900000))
        n += 1
        if k % 960 == 0:
            m.handle(TopUp(500000, "t%d" % k, w, k * 900000))
            n += 1
        if k % 96 == 0:
            m.handle(Command("freeze", {}, "c%d" % k, w, k * 900000))
            m.handle(Tick(w + 1, k * 900000 + 1000))
            n += 2
            if on_day:
                on_day(k // 96, m)
    return m, n


def probe():
    """Print 'label bytes' lines: heap in use (after gc.collect) above the start, per milestone."""
    gc.collect()
    base = gc.mem_alloc()

    def mark(label):
        gc.collect()
        print("%s %d" % (label, gc.mem_alloc() - base))

    for name in IMPORTS:
        __import__(name)
        mark("import_" + name)

    def on_day(day, m):
        if day in (1, 10, 20, DAYS):
            mark("day_%d" % day)

    m, n = month(on_day)
    mark("end")
    print("events %d" % n)


# ------------------------------------------------------------ CPython driver

def _driver(argv):
    import argparse
    import os
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv = os.path.join(root, ".venv", "bin")
    ap = argparse.ArgumentParser(description="the smallest MicroPython heap for a simulated month of one meter")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--micropython", metavar="SRC", help="MicroPython checkout or tarball for flash.sh firmware")
    src.add_argument("--firmware", metavar="BINARY", help="an already built 32-bit frozen micropython")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="pmeter-month-")
    firmware = args.firmware
    if firmware is None:
        cmd = ["bash", os.path.join(root, "scripts", "flash.sh"), "firmware", "unix32", "--out", work]
        if args.micropython:
            cmd += ["--micropython", args.micropython]
        if subprocess.run(cmd, stdout=sys.stderr).returncode:
            sys.exit("bench/mp_month.py: the firmware build failed (see above)")
        firmware = os.path.join(work, "micropython")

    def mpy_cross(src_path, rel, tree):
        out = os.path.join(tree, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run([os.path.join(venv, "mpy-cross"), "-o", out, src_path], check=True)

    # Each build runs from a tree of its own (cwd: '' comes first on sys.path,
    # so the checkout would make it compile the sources on its heap).
    loaded, frozen = os.path.join(work, "loaded"), os.path.join(work, "frozen")
    for tree in (loaded, frozen):
        mpy_cross(os.path.abspath(__file__), "mp_month.py", tree)
    for dirpath, _, files in os.walk(os.path.join(root, "agent")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                mpy_cross(path, os.path.relpath(path, root), loaded)
    builds = [
        ("64-bit pip port, agent .mpy", os.path.join(venv, "micropython"), loaded, loaded),
        ("32-bit, agent frozen", firmware, frozen, ".frozen:" + frozen),
    ]

    def run(binary, tree, path, heap_kb, code):
        return subprocess.run([binary, "-X", "heapsize=%dK" % heap_kb, "-c", code], cwd=tree,
                              env=dict(os.environ, MICROPYPATH=path), capture_output=True, text=True, timeout=300)

    results = []
    for label, binary, tree, path in builds:
        lo, hi = 4, 1024  # lo fails, hi completes
        if run(binary, tree, path, hi, "import mp_month\nmp_month.month()").returncode:
            sys.exit("bench/mp_month.py: %s does not complete the month even at %d KB" % (label, hi))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(binary, tree, path, mid, "import mp_month\nmp_month.month()").returncode == 0:
                hi = mid
            else:
                lo = mid
        done = run(binary, tree, path, 1024, "import mp_month\nmp_month.probe()")
        if done.returncode:
            sys.exit("bench/mp_month.py: the probe failed on %s:\n%s" % (label, done.stderr))
        probe_rows = [line.split() for line in done.stdout.splitlines()]
        results.append((label, hi, dict((k, int(v)) for k, v in probe_rows)))

    width = 38
    print("MicroPython heap, one meter's simulated month (%s events), side by side:" % results[0][2]["events"])
    print("%-*s" % (width, "") + "".join("%30s" % r[0] for r in results))
    print("%-*s" % (width, "smallest heap that completes") + "".join("%27d KB" % r[1] for r in results))
    print("heap in use above the start (gc.mem_alloc after gc.collect, at a 1 MB heap), bytes:")
    previous = [0] * len(results)
    for key in ["import_" + n for n in IMPORTS] + ["day_1", "day_10", "day_20", "day_%d" % DAYS, "end"]:
        cells = []
        for i, r in enumerate(results):
            cells.append("%16d (%+7d)    " % (r[2][key], r[2][key] - previous[i]))
            previous[i] = r[2][key]
        print("%-*s" % (width, "  " + key.replace("import_", "import ")) + "".join("%30s" % c for c in cells))


if __name__ == "__main__":
    if sys.implementation.name == "micropython":
        probe()
    else:
        _driver(sys.argv[1:])
