"""Village-year benchmark: 1,000 meters x 365 days in-process, median of 3 runs.

    .venv/bin/python bench/fleet_year.py [--meters 1000] [--days 365] [--runs 3] [--scenario FILE]

Runs ``pmeter sim run --meters N --days D --json`` (or a scenario) as a
subprocess, as a user would, and reports wall time per run, the median,
and the machine's load average before each run (the machine is shared:
a high load means the figure is pessimistic).  Target: <= 60 s wall.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenario", help="a scenario TOML instead of the plain fleet")
    args = ap.parse_args()
    cmd = [os.path.join(os.path.dirname(sys.executable), "pmeter"), "sim", "run", "--meters", str(args.meters), "--days", str(args.days), "--json"]
    if args.scenario:
        cmd += ["--scenario", args.scenario]
    walls = []
    for k in range(args.runs):
        load = os.getloadavg()[0]
        t = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
        wall = time.perf_counter() - t
        walls.append(wall)
        print("run %d: %.1f s wall (load average before: %.2f, %d bytes of JSON)" % (k + 1, wall, load, len(out)), flush=True)
    print("median of %d: %.1f s wall for %d meters x %d days on %d CPUs (%s)" % (args.runs, statistics.median(walls), args.meters, args.days, os.cpu_count(), "pmeter " + " ".join(cmd[1:])))


if __name__ == "__main__":
    main()
