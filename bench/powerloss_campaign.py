"""Longer power-loss campaigns of the real agent than the test suite runs.

    .venv/bin/python bench/powerloss_campaign.py [--flips N] [--fail-ops 1,3,6,12] [--seeds 1,2,3]

Runs tests/powerloss.py's LinkedHarness (Device + Store + TokenGuard +
Session + LinkedMeter on the simulated file system): power cuts at every
file operation under every variant, I/O errors in every commit for each
length of failure in ``--fail-ops``, and ``--flips`` bit flips per state
file for each seed.  Prints one line per campaign: checks run and seconds.
Exits 1 (with the broken invariant) if any check fails.  Counts do not
vary with load; seconds do.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from powerloss import LinkedHarness  # noqa: E402


def _ints(text, name):
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise SystemExit("powerloss_campaign: %s must be whole numbers >= 1 separated by commas, got %r" % (name, text))
    return out


def main(argv):
    """Run the campaigns; 0 when every check held, 1 otherwise, 2 on bad arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", default="200", help="bit flips per state file per seed (default 200)")
    ap.add_argument("--fail-ops", default="1,3,6,12", help="lengths of I/O failures, in operations (default 1,3,6,12)")
    ap.add_argument("--seeds", default="1,2,3", help="seeds of the bit positions (default 1,2,3)")
    args = ap.parse_args(argv)
    flips = _ints(args.flips, "--flips")[0]
    fail_ops = _ints(args.fail_ops, "--fail-ops")
    seeds = _ints(args.seeds, "--seeds")
    h = LinkedHarness()
    campaigns = [("power cuts, every op x 4 variants", h.power_cuts)]
    for n in fail_ops:
        campaigns.append(("I/O errors of %d ops in every commit" % n, lambda n=n: h.io_errors(n)))
    for s in seeds:
        campaigns.append(("bit flips, %d per file, seed %d" % (flips, s), lambda s=s: h.bit_flips(flips, s)))
    total = 0
    for name, run in campaigns:
        t0 = time.monotonic()
        try:
            checks = run()
        except AssertionError as e:
            print("FAILED %s: %s" % (name, e))
            return 1
        total += checks
        print("powerloss  %-40s  checks %6d  %.1f s" % (name, checks, time.monotonic() - t0))
    print("powerloss  all campaigns held: %d checks" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
