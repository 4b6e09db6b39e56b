"""Live fleet: how many virtual meters one simulator process sustains on one Mosquitto.

    .venv/bin/python bench/fleet_live.py [--sizes 5000,10000,15000] [--seconds 75] [--rate 10] [--aligned]

For each size: a fresh local Mosquitto (loopback, ``set_tcp_nodelay
true``), N virtual meters (each a real MQTT session: core + TokenGuard +
link Session + paho client, all on one selector thread), telemetry every
60 s per meter at a seeded per-meter offset within the minute, two
head-end worker processes on a shared subscription, and a vendor (in the
meter process, its own paho client) pushing ``--rate`` top-ups a second
to random meters.  A size is "sustained" when every meter connected, the
head-end received at least the expected telemetry (N per 60 s), every
top-up was acked, both worker processes reported, and the publish -> ack
p99 is <= 200 ms.  Prints one line per size with the
meter process's peak RSS and the 1-minute load average at the end.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Broker  # noqa: E402

from sim.live import LiveRun  # noqa: E402
from sim.runner import DEFAULT_CONFIG  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="5000,10000,15000")
    ap.add_argument("--seconds", type=int, default=75, help="measured time per size (>= 60 so every meter reports)")
    ap.add_argument("--rate", type=float, default=10.0, help="top-ups per second")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=15, help="seconds after every meter connected before measuring")
    ap.add_argument("--aligned", action="store_true", help="every meter reports at the top of the minute (no per-meter offset)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if len(sizes) > 1:
        # One process per size: nothing of a previous size (threads, sockets, heap) weighs on the next.
        best = 0
        for n in sizes:
            argv2 = [sys.executable, __file__, "--sizes", str(n), "--seconds", str(args.seconds), "--rate", str(args.rate),
                     "--workers", str(args.workers), "--warmup", str(args.warmup)] + (["--aligned"] if args.aligned else [])
            out = subprocess.run(argv2, stdout=subprocess.PIPE, text=True).stdout
            line = out.splitlines()[0] if out else "meters %6d  FAILED: no output" % n
            print(line, flush=True)
            if not line.endswith(" SUSTAINED") or "NOT SUSTAINED" in line:
                break
            best = n
        print("largest sustained: %d meters (one meter process, %d head-end worker processes, telemetry every 60 s, top-up p99 <= 200 ms)" % (best, args.workers))
        return 0
    best = 0
    for n in sizes:
        broker = Broker(Path(tempfile.mkdtemp(prefix="bench-fleet-live-")), extra_lines=["set_tcp_nodelay true", "log_type none"]).start()
        try:
            run = LiveRun(broker.host, broker.port, n, 1, DEFAULT_CONFIG, workers=args.workers, telemetry_s=60, speed=60, topup_rate=args.rate, tick_s=10, warmup_s=args.warmup, spread=not args.aligned)
            rep = run.run(args.seconds)
        except RuntimeError as exc:
            print("meters %6d  FAILED: %s" % (n, exc), flush=True)
            broker.stop()
            break
        broker.stop()
        a = rep["ack_us"]
        msgs = sum(rep["messages_per_worker"])
        expected = n * args.seconds // 60
        ok = (rep["connected"] == n and rep["topups_acked"] == rep["topups_sent"] and a["p99"] is not None
              and a["p99"] <= 200000 and msgs >= expected and not rep["loop_error"]
              and rep["workers_answered"] == args.workers)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print("meters %6d  connected %6d  msgs %7d (%.0f/s, split %s)  top-ups %d/%d  ack p50 %.1f ms p99 %.1f ms max %.1f ms  loop lag %d ms  peak RSS %d MB  load %.2f  %s"
              % (n, rep["connected"], msgs, rep["messages_per_s"], "/".join(str(x) for x in rep["messages_per_worker"]),
                 rep["topups_acked"], rep["topups_sent"], a["p50"] / 1000.0, a["p99"] / 1000.0, a["max"] / 1000.0,
                 rep["meter_loop_max_lag_ms"], rss, os.getloadavg()[0], "SUSTAINED" if ok else "NOT SUSTAINED"), flush=True)
        if not ok:
            break
        best = n
    print("largest sustained: %d meters (one meter process, %d head-end worker processes, telemetry every 60 s, top-up p99 <= 200 ms)" % (best, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
