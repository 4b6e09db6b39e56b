"""SIGKILL campaign against the soak driver: N kills, every invariant checked after each.

    .venv/bin/python bench/store_kill_campaign.py [--kills 10000] [--seed 1]

Each round forks a soak process (sim/soak.py) on the same store directory,
kills it with SIGKILL after a seeded random delay (0-120 ms), then checks
the store with ``sim.soak.verify`` (acknowledged top-ups present, ledger,
energy >= acknowledged checkpoint, relay consistent, no lost state).
Prints kills, how many landed mid-commit, top-ups acknowledged, time; exits
1 on the first broken invariant.
"""

import os
import random
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sim import soak  # noqa: E402


def main(argv):
    kills = int(argv[argv.index("--kills") + 1]) if "--kills" in argv else 10_000
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 1
    d = tempfile.mkdtemp(prefix="kill-")
    with open(os.path.join(d, "requests.txt"), "w") as f:
        for i in range(kills * 2):
            f.write("k%06d %d\n" % (i, 5_000 + 1_000 * (i % 7)))
    rng = random.Random(seed)
    mid = 0
    t0 = time.time()
    for i in range(kills):
        pid = os.fork()
        if pid == 0:
            try:
                soak.run(d, "%d-%d" % (seed, i))
            finally:
                os._exit(3)
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            print("store_kill_campaign  round %d: the driver died on its own (status %r)" % (i, status))
            return 1
        mid += os.path.exists(os.path.join(d, "state.tmp")) or os.path.exists(os.path.join(d, "ckpt.tmp"))
        try:
            soak.verify(d)
        except AssertionError as e:
            print("store_kill_campaign  round %d: INVARIANT BROKEN: %s (store kept in %s)" % (i, e, d))
            return 1
    acked, units = soak.read_acks(d)
    print("store_kill_campaign  kills %d  mid-commit %d  top-ups acked %d  energy_wh %d  broken 0  seconds %.0f"
          % (kills, mid, len(acked), units // soak.CONSTANT, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
