"""A soak driver for kill tests: one meter on a Device with a real file store.

    python -m sim.soak --store DIR --seed S [--steps N]

Meters fast-simulated pulses (one simulated second a step) and applies the
top-ups listed in DIR/requests.txt (``ref amount`` lines), each through a
replay guard stored in the same commit.  It appends to DIR/acks.log, only
after the commit returned:

    A <ref> <amount> <code>   a top-up acknowledged (code accepted/already_used)
    C <units>                 a commit made energy register <units> durable

Without --steps it runs until killed; with it, it runs N steps, feeds
Shutdown and exits 0.  ``verify(DIR)`` checks the invariants a kill must
never break (used by tests/test_kill_soak.py and bench/store_kill_campaign.py).
"""

import os
import random
import sys

from agent.config import validate
from agent.device import Device
from agent.events import Pulses, Shutdown, TopUp
from agent.meter import SCHEMA, Meter
from agent.results import ACCEPTED, ALREADY_USED
from agent.store import OsFS, Store

METER_ID = "000000000777"
OPENING = 20_000
PRICE = 5883
CONSTANT = 3200
WALL0 = 1_700_000_000
RAW = {
    "meter": {"id": METER_ID, "constant": CONSTANT},
    "account": {"opening_balance": OPENING, "trip_delay_s": 30, "alarm1": 10_000, "alarm2": 5_000},
    "tariff": {"kind": "flat", "price": PRICE},
}


class AppliedRefs:
    """Replay guard stand-in: refs of applied top-ups, a durable device part."""

    def __init__(self):
        self.refs = {}

    def snapshot(self):
        return [[r, self.refs[r]] for r in sorted(self.refs)]

    def restore(self, value):
        self.refs = {}
        for r, amount in value or []:
            self.refs[r] = amount


def config():
    """The soak meter's validated configuration."""
    return validate(RAW, SCHEMA)


def read_requests(store_dir):
    """[(ref, amount)] from requests.txt (missing file: none)."""
    path = os.path.join(store_dir, "requests.txt")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                out.append((parts[0], int(parts[1])))
    return out


def read_acks(store_dir):
    """(acked {ref: amount}, highest durable energy units) from acks.log."""
    acked = {}
    units = 0
    path = os.path.join(store_dir, "acks.log")
    if not os.path.exists(path):
        return acked, units
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not line.endswith("\n"):
                break  # a line cut by the kill: never acknowledged
            if parts[0] == "A":
                acked[parts[1]] = int(parts[2])
            elif parts[0] == "C":
                units = max(units, int(parts[1]))
    return acked, units


def run(store_dir, seed, steps=None):
    """Boot the device on ``store_dir`` and meter until ``steps`` (or killed)."""
    guard = AppliedRefs()
    dev = Device(config(), Store(OsFS(), store_dir, METER_ID))
    dev.add_part("tokens", guard)
    fd = os.open(os.path.join(store_dir, "acks.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line):
        os.write(fd, line.encode())  # one append: a kill cannot interleave a line

    dev.boot(WALL0, 0)
    wall = (dev.meter.wall or WALL0) + 5
    rng = random.Random("%s-%d" % (seed, dev.meter.boots))
    acked, _ = read_acks(store_dir)
    pending = [r for r in read_requests(store_dir) if r[0] not in acked]
    mono = 0
    step = 0
    commits = dev.commits
    while steps is None or step < steps:
        step += 1
        wall += 1
        mono += 1000
        supplied = dev.meter.relay_position is not False
        count = rng.randrange(0, 12) if supplied else 0  # up to ~13 kW at 3,200 imp/kWh
        dev.feed(Pulses(count, wall, mono))
        if pending and step % 5 == 0:
            ref, amount = pending.pop(0)
            if ref in guard.refs:
                log("A %s %d %s\n" % (ref, amount, ALREADY_USED))
            else:
                guard.refs[ref] = amount
                for a in dev.feed(TopUp(amount, ref, wall, mono)):
                    if a.kind == "ack" and a.ref == ref:
                        if a.code != ACCEPTED:
                            raise SystemExit("top-up %s refused: %s" % (ref, a.code))
                        log("A %s %d %s\n" % (ref, amount, a.code))
        if dev.commits != commits:
            commits = dev.commits
            log("C %d\n" % dev.meter.regs.total)
    dev.feed(Shutdown(wall, mono))
    log("C %d\n" % dev.meter.regs.total)
    os.close(fd)
    return dev


def verify(store_dir):
    """Check the store against what was acknowledged; returns the restored Meter.

    Raises AssertionError naming the broken invariant.
    """
    store = Store(OsFS(), store_dir, METER_ID)
    loads, findings, had = store.load()
    bad = [f for f in findings if not f.file.endswith(".tmp")]
    assert not bad, "store findings after a kill: %r" % (bad,)
    acked, units = read_acks(store_dir)
    if not loads:
        assert not acked and not had, "store empty but %d top-ups were acknowledged" % len(acked)
        return None
    value = loads[0].value
    meter = Meter.restore(config(), value["meter"])
    refs = dict((r, a) for r, a in value["tokens"])
    for ref in acked:
        assert ref in refs, "acknowledged top-up %s is not in the store" % ref
        assert refs[ref] == acked[ref], "top-up %s amount changed" % ref
    charged = meter.regs.total * PRICE // (1000 * CONSTANT)
    want = OPENING + sum(refs.values()) - charged
    assert meter.balance == want, "ledger broken: balance %d, opening+top-ups-charges %d" % (meter.balance, want)
    assert meter.regs.total >= units, "energy %d below the acknowledged checkpoint %d" % (meter.regs.total, units)
    closed_states = ("connected", "guarantee", "forced")
    assert meter.relay_closed == (meter.relay_state in closed_states)
    assert value["device"]["lost"] == 0, "state was lost"
    return meter


def main(argv):
    """Entry point: ``--store DIR --seed S [--steps N]``; exit 2 on bad arguments."""
    opts = {"--store": None, "--seed": "0", "--steps": None}
    i = 0
    while i < len(argv):
        key = argv[i]
        if key not in opts or i + 1 >= len(argv):
            sys.stderr.write("soak: unknown or incomplete argument %r (use --store DIR --seed S [--steps N])\n" % key)
            return 2
        opts[key] = argv[i + 1]
        i += 2
    if not opts["--store"] or not os.path.isdir(opts["--store"]):
        sys.stderr.write("soak: --store must name an existing directory, got %r\n" % opts["--store"])
        return 2
    steps = None
    if opts["--steps"] is not None:
        try:
            steps = int(opts["--steps"])
        except ValueError:
            steps = -1
        if steps < 0:
            sys.stderr.write("soak: --steps must be a whole number >= 0, got %r\n" % opts["--steps"])
            return 2
    run(opts["--store"], opts["--seed"], steps)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
