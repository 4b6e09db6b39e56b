"""The real agent (Device + Store + TokenGuard + Session + LinkedMeter) under
power cuts at every file operation, I/O errors and flipped bits.

Invariants (tests/powerloss.py, ``LinkedHarness.check``): a top-up the
head-end saw acknowledged is never lost and no token is applied twice, even
when every message is re-sent after the reboot; an acknowledged command
sequence stays used; the outbox never reuses an (epoch, seq); balance =
opening + credited - charged, to the unit.
"""

import pytest

from powerloss import PLAN, LinkedHarness, SimFS, exhaustive


@pytest.fixture(scope="module")
def harness():
    return LinkedHarness()


def test_powerloss_workload_is_realistic(harness):
    fs = SimFS()
    journal = harness.journal()
    rig = harness.workload(fs, journal)
    m = rig.device.meter
    trips = [r for r in m.records("trip")]
    assert trips and m.relay_state == "connected"  # credit ran out, a top-up reconnected
    assert journal.hub.acks == [("t1", "accepted"), ("t1", "already_used"), ("lim", "accepted"), ("t2", "accepted"),
                                ("t4", "accepted"), ("t3", "accepted"), ("t3-again", "already_used")]
    assert any(kind == "again" for kind in [PLAN[k][0] for k in PLAN])
    assert m.account.credited == harness.credit_total
    assert fs.ops > 100 and len(journal.commits) > 10
    harness.check(fs.survivor("kept"), journal, "no damage")


def test_powerloss_every_operation_every_variant(harness):
    # distinct (disk, outside world) pairs: more than one per file operation
    assert harness.power_cuts() > 130


@pytest.mark.parametrize("fail_ops", [6, 12])
def test_powerloss_io_error_in_every_commit(harness, fail_ops):
    # 6: a commit and its immediate retries fail; 12: the store stays broken
    # across several events (a top-up's close pulse waits while the credit runs out again)
    assert harness.io_errors(fail_ops) > 30  # two failure points per commit


def test_powerloss_bit_flips_never_restore_an_uncommitted_state(harness):
    assert harness.bit_flips() >= 4 * 24


def test_powerloss_harness_catches_a_non_atomic_store(harness):
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
            exhaustive(harness.workload, harness.check, harness.journal, step=3)
    finally:
        store_mod.Slots = real
