"""Power cut at every file-system operation of a realistic meter workload."""

import pytest

from agent.config import validate
from agent.device import Device
from agent.events import PowerFail, Pulses, Tick, TopUp
from agent.meter import SCHEMA
from agent.results import ACCEPTED
from agent.store import Store
from powerloss import Journal, SimFS, WatchedStore, exhaustive, summary
from sim.soak import AppliedRefs

WALL0 = 1_700_000_000
OPENING = 3_000  # 0.3 CNY: runs out within the workload
PRICE = 5883
CONSTANT = 3200

RAW = {
    "meter": {"id": "000000000042", "constant": CONSTANT},
    "account": {"opening_balance": OPENING, "trip_delay_s": 60, "alarm1": 10_000, "alarm2": 5_000},
    "tariff": {"kind": "flat", "price": PRICE},
}


def make_device(fs, journal):
    cfg = validate(RAW, SCHEMA)
    box = [None]
    store = WatchedStore(Store(fs, "/d", "000000000042"), journal, box)
    dev = Device(cfg, store)
    box[0] = dev
    dev.add_part("tokens", AppliedRefs())
    return dev


def topup(dev, journal, ref, amount, wall, mono):
    """Send a top-up the way the token layer will: replay guard first, same commit."""
    journal.sent[ref] = amount
    guard = dev.parts["tokens"]
    if ref in guard.refs:
        journal.acked[ref] = amount  # already applied: acknowledged again, not re-applied
        return []
    guard.refs[ref] = amount
    actions = dev.feed(TopUp(amount, ref, wall, mono))
    for a in actions:
        if a.kind == "ack" and a.ref == ref:
            assert a.code == ACCEPTED, a
            journal.acked[ref] = amount
    return actions


def feed(dev, journal, event):
    actions = dev.feed(event)
    for a in actions:
        if a.kind == "pulse_coil" and a.coil == "set":
            # a close pulse left the device: the state justifying it must be durable
            assert journal.commits and journal.commits[-1][2] == dev.meter.relay_state
    return actions


# minute -> top-up (ref, amount) of the workload; heavy use runs the credit out
TOPUPS = {8: ("t1", 5_000), 20: ("t2", 8_000), 24: ("t3", 20_000)}


def workload(fs, journal):
    dev = make_device(fs, journal)
    dev.boot(WALL0, 0)
    wall, mono = WALL0, 0
    for minute in range(1, 27):
        for half in (0, 1):
            wall += 30
            mono += 30_000
            # 8 kW while supplied: 213 pulses every 30 s
            count = 213 if dev.meter.relay_position is not False else 0
            feed(dev, journal, Pulses(count, wall, mono))
            feed(dev, journal, Tick(wall, mono + 100))
        if minute in TOPUPS:
            ref, amount = TOPUPS[minute]
            topup(dev, journal, ref, amount, wall, mono)
    feed(dev, journal, PowerFail(wall, mono))


def check_ledger(dev):
    m = dev.meter
    applied = sum(dev.parts["tokens"].refs.values())
    charged = m.regs.total * PRICE // (1000 * CONSTANT)
    assert m.balance == OPENING + applied - charged, (m.balance, applied, charged)


def check(fs, journal, label):
    dev = make_device(fs, journal)
    journal.commits_before = list(journal.commits)
    done = list(journal.commits)
    attempt = journal.attempt
    dev.boot(WALL0 + 5000, 0)
    assert not dev.state_lost, label
    got = summary(dev)
    # Boot itself commits; compare the state as it was restored (Boot adds no energy or money).
    if done:
        allowed = [done[-1]] + ([attempt] if attempt is not None else [])
        assert got in allowed, "%s: recovered %r, expected one of %r" % (label, got, allowed)
        assert got[0] >= done[-1][0], label  # energy never below the last durable checkpoint
    for ref in journal.acked:
        assert ref in dev.parts["tokens"].refs, "%s: acknowledged %s lost" % (label, ref)
    check_ledger(dev)
    m = dev.meter
    assert m.relay_closed == (m.relay_state in ("connected", "guarantee", "forced")), label
    if m.relay_state == "tripped_arrears":
        assert m.account.exhausted() or not m.account.may_close(), label
    # the sender retries what it has no ack for: applied exactly once in the end
    for ref in sorted(journal.sent):
        if ref not in journal.acked:
            topup(dev, journal, ref, journal.sent[ref], WALL0 + 5001, 1000)
    for ref in sorted(TOPUPS.values()):
        topup(dev, journal, ref[0], ref[1], WALL0 + 5002, 2000)
    check_ledger(dev)
    assert sorted(dev.parts["tokens"].refs) == sorted(journal.sent)
    feed(dev, journal, Tick(WALL0 + 5100, 100_000))
    if m.account.may_close() and m.relay_state == "tripped_arrears":
        raise AssertionError("%s: credit restored but relay still tripped" % label)


def test_powerloss_workload_is_realistic():
    fs = SimFS()
    journal = Journal()
    workload(fs, journal)
    kinds = [s[2] for s in journal.commits]
    assert "tripped_arrears" in kinds and kinds[-1] == "connected"  # a cut and a reconnection
    assert len(journal.acked) == 3
    assert fs.ops > 100


def test_powerloss_every_operation_every_variant():
    runs = exhaustive(workload, check, Journal)
    assert runs >= 4 * 100


def test_powerloss_harness_catches_a_non_atomic_store():
    """A store that writes the slot in place (no temp file + rename) must be caught."""
    from agent import store as store_mod

    class InPlace(store_mod.Slots):
        def commit_payload(self, payload):
            data = store_mod.encode_file(self.meter_id, self.seq + 1, payload)
            h = self.fs.create(self.path("a"))
            h.write(data)
            h.flush()
            h.sync()
            h.close()
            self.fs.sync_dir(self.directory)
            self.seq += 1
            self.writes += 1
            return len(data)

    real = store_mod.Slots
    store_mod.Slots = InPlace
    try:
        with pytest.raises(AssertionError):
            exhaustive(workload, check, Journal, step=3)
    finally:
        store_mod.Slots = real
