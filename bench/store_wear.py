"""Flash wear of the durable store for a household, and the time to commit a top-up.

    .venv/bin/python bench/store_wear.py [--days N] [--repeat N] [--linked]

A household using 10 kWh/day on a 3,200 imp/kWh meter (32,000 pulses/day,
more in the evening), pulses fed every 10 s (and, to show the pulse rate
does not matter, every 1 s), a top-up a day, a cut for arrears and a
reconnection every day, the daily freeze.  Counts commits (file writes) and
bytes written per day after the first day, then estimates card/flash life.
``--linked`` runs the same household through the whole agent (LinkedMeter:
token guard and MQTT session parts, telemetry every 5 minutes, every
outbox entry acknowledged by a stand-in broker) instead of the Device alone.
Exits 1 if the budget (<= 1,500 writes/day, <= 2 MB/day) is broken.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.config import validate  # noqa: E402
from agent.device import Device  # noqa: E402
from agent.events import Command, Pulses, Tick, TopUp  # noqa: E402
from agent.meter import SCHEMA  # noqa: E402
from agent.store import OsFS, Store  # noqa: E402

MID = "000000000099"
W0 = 1_700_006_400  # a local midnight (UTC+8)
DAY = 86400
# share of the day's energy per hour: evening peak
PROFILE = [2, 2, 2, 2, 2, 3, 5, 6, 5, 4, 4, 4, 4, 4, 4, 4, 5, 7, 9, 9, 8, 6, 3, 2]


def _linked(dev):
    """A feed function running events through a LinkedMeter on ``dev``."""
    from agent.link.agent import LinkedMeter
    from agent.link.envelope import LinkKeys
    from agent.link.session import Session
    from agent.tokens import TokenGuard

    session = Session(MID, LinkKeys(bytes(32)), bytes(8))
    linked = LinkedMeter(dev, TokenGuard(MID, bytes(32)), session)

    def broker(outs):
        while outs:
            o = outs.pop()
            if o.seq:
                outs.extend(session.puback(o.seq, 0))

    broker(linked.boot(W0, 0)[1] + linked.connected(W0, 0))
    return lambda event: broker(linked.handle(event, event.wall)[1])


def simulate(days, step_s, linked=False):
    d = tempfile.mkdtemp(prefix="wear-")
    cfg = validate({"meter": {"id": MID}, "account": {"opening_balance": 100_000, "trip_delay_s": 60}}, SCHEMA)
    store = Store(OsFS(), d, MID)
    dev = Device(cfg, store)
    if linked:
        feed = _linked(dev)
    else:
        dev.boot(W0, 0)
        feed = dev.feed
    total_share = sum(PROFILE)
    per_day = []
    carry = 0
    for day in range(days):
        w0, b0, f0, m0 = store.writes, store.bytes_written, store.full_writes, store.mark_writes
        for s in range(0, DAY, step_s):
            wall = W0 + day * DAY + s
            mono = (day * DAY + s) * 1000
            hour = s // 3600
            # 32,000 pulses a day spread by the profile, fractional pulses carried
            carry += 32_000 * PROFILE[hour] * step_s
            count = carry // (total_share * 3600)
            carry -= count * total_share * 3600
            if dev.meter.relay_position is False:
                count = 0
            feed(Pulses(count, wall, mono))
            if s % 60 == 0:
                feed(Tick(wall, mono + 1))
            if s == 19 * 3600:
                feed(Command("trip", {}, "c%d" % day, wall, mono + 2))
            if s == 19 * 3600 + 600:
                feed(Command("close_direct", {}, "r%d" % day, wall, mono + 2))
            if s == 20 * 3600:
                feed(TopUp(60_000, "t%d" % day, wall, mono + 3))
        per_day.append((store.writes - w0, store.bytes_written - b0, store.full_writes - f0, store.mark_writes - m0))
    return per_day[1:] if days > 1 else per_day, dev


def commit_times(n):
    d = tempfile.mkdtemp(prefix="commit-")
    cfg = validate({"meter": {"id": MID}, "account": {"opening_balance": 100_000}}, SCHEMA)
    dev = Device(cfg, Store(OsFS(), d, MID))
    dev.boot(W0, 0)
    times = []
    for i in range(n):
        dev.feed(Pulses(5, W0 + 2 * i + 1, (2 * i + 1) * 1000))
        t = time.perf_counter()
        acts = dev.feed(TopUp(1000, "t%d" % i, W0 + 2 * i + 2, (2 * i + 2) * 1000))
        times.append(time.perf_counter() - t)
        assert any(a.kind == "ack" for a in acts)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main(argv):
    days = int(argv[argv.index("--days") + 1]) if "--days" in argv else 3
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 200
    linked = "--linked" in argv
    ok = True
    for step in (10, 1):
        per_day, dev = simulate(days if step == 10 else 2, step, linked)
        writes = max(p[0] for p in per_day)
        nbytes = max(p[1] for p in per_day)
        fulls = max(p[2] for p in per_day)
        print("store_wear%s  pulses every %2d s  writes/day %d (full %d, marks %d)  bytes/day %d  (worst of %d days)"
              % (" linked" if linked else "", step, writes, fulls, max(p[3] for p in per_day), nbytes, len(per_day)))
        ok = ok and writes <= 1500 and nbytes <= 2_000_000
    snap = len(__import__("agent.codec.msgpack", None, None, ["pack"]).pack(dev.value("x")))
    print("store_wear  full snapshot size %d bytes" % snap)
    # life estimates (assumptions printed with them)
    fs_block = 4096
    ext4_blocks = 4  # data block + journal descriptor, inode/dir blocks, commit block per fsync'd commit
    sd_bytes = writes * ext4_blocks * fs_block
    sd_endurance = 8e9 * 1000  # 8 GB card, 1,000 P/E cycles (cheap TLC), ideal wear levelling
    print("sd_card     ~%d KB/day of 4 KB blocks (x%d ext4 overhead): 8 GB/1k-cycle card lasts ~%d years at write amplification 10"
          % (sd_bytes // 1024, ext4_blocks, sd_endurance / (sd_bytes * 10) / 365))
    lfs_prog = nbytes * 2 + writes * 64  # littlefs: copy-on-write of the file + metadata-pair commits
    lfs_blocks = 2 * 1024 * 1024 // fs_block  # a 2 MB data partition of a 4 MB flash
    years = 100_000 * lfs_blocks * fs_block / lfs_prog / 365
    print("spi_flash   ~%d KB/day programmed; 4 MB flash (2 MB littlefs, 100k cycles, wear-levelled) lasts ~%d years" % (lfs_prog // 1024, years))
    med, p99 = commit_times(repeat)
    print("commit_topup  ms  median %.2f  p99 %.2f  (n=%d, fsync of file and directory on this machine's disk)" % (med * 1e3, p99 * 1e3, repeat))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
