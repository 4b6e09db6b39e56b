"""Device: restore, state lost, checkpoints, commit-before-ack, store failures."""

import os

import pytest

from agent.config import ConfigError, validate
from agent.device import Device
from agent.events import PowerFail, Pulses, Shutdown, Tick, TopUp
from agent.meter import SCHEMA
from agent.store import OsFS, Store

MID = "000000000042"
W = 1_700_000_000


def cfg(**store):
    raw = {"meter": {"id": MID}, "account": {"opening_balance": 100_000}}
    c = validate(raw, SCHEMA)
    if store:
        c["store"] = store
    return c


def device(path, **store):
    return Device(cfg(**store), Store(OsFS(), str(path), MID))


def records(actions, kind):
    return [a.record for a in actions if a.kind == "publish" and a.record.kind == kind]


def test_device_fresh_store_starts_clean(tmp_path):
    d = device(tmp_path)
    acts = d.boot(W, 0)
    assert not d.state_lost and d.balance_valid
    assert not records(acts, "state_lost") and not records(acts, "store")
    assert not any(a.kind == "persist" for a in acts)
    assert os.path.exists(tmp_path / "state.a")


def test_device_restores_and_reports_unaccounted_energy(tmp_path):
    d = device(tmp_path)
    d.boot(W, 0)
    d.feed(Pulses(3200, W + 30, 30_000))  # 1 kWh, not yet checkpointed
    d.feed(Pulses(320, W + 61, 61_000))  # checkpoint due
    assert d.meter.energy_wh == 1100
    d.feed(Pulses(32, W + 70, 70_000))  # lost by the unclean cut
    d2 = device(tmp_path)
    acts = d2.boot(W + 100, 0)
    assert d2.meter.energy_wh == 1100
    rec = records(acts, "store")[0]
    assert rec.reason == "unaccounted_energy"
    assert rec.data["clean"] is False and rec.data["max_wh"] == (13800 * 60 + 3599) // 3600
    assert d2.meter.balance == 100_000 - 1100 * 5883 // 1000


def test_device_power_fail_commits_everything(tmp_path):
    for last in (PowerFail, Shutdown):
        (tmp_path / last.__name__).mkdir()
        d = device(tmp_path / last.__name__)
        d.boot(W, 0)
        d.feed(Pulses(33, W + 5, 5_000))
        d.feed(last(W + 6, 6_000))
        d2 = device(tmp_path / last.__name__)
        acts = d2.boot(W + 100, 0)
        assert d2.meter.regs.total == d.meter.regs.total
        assert records(acts, "store")[0].data["max_wh"] == 0


def test_device_topup_committed_before_ack(tmp_path):
    d = device(tmp_path)
    d.boot(W, 0)
    before = d.store.writes
    acts = d.feed(TopUp(50_000, "r1", W + 1, 1000))
    assert [a.kind for a in acts if a.kind == "ack"] == ["ack"]
    assert d.store.writes == before + 2  # the state's checkpoint, then the marks record
    assert d.store.mark_writes == 2  # boot and the top-up
    d2 = device(tmp_path)
    d2.boot(W + 2, 0)
    assert d2.meter.balance == 150_000


def test_device_checkpoints_only_when_due_and_changed(tmp_path):
    d = device(tmp_path, checkpoint_s=60, checkpoint_wh=0)
    d.boot(W, 0)
    n = d.store.writes
    for s in range(1, 600):
        d.feed(Tick(W + s, s * 1000))
    assert d.store.writes == n  # nothing changed: nothing written
    for s in range(1, 601):
        d.feed(Pulses(1, W + 600 + s, (600 + s) * 1000))
    assert 9 <= d.store.writes - n <= 11


def test_device_checkpoint_wh(tmp_path):
    d = device(tmp_path, checkpoint_s=3600, checkpoint_wh=10)
    d.boot(W, 0)
    n = d.store.writes
    for s in range(1, 101):
        d.feed(Pulses(32, W + s, s * 1000))  # 10 Wh a step
    assert d.store.writes - n == 100


def test_device_state_lost_is_safe_and_visible(tmp_path):
    d = device(tmp_path)
    d.boot(W, 0)
    d.feed(TopUp(50_000, "r1", W + 1, 1000))
    for name in os.listdir(tmp_path):
        (tmp_path / name).write_bytes(b"garbage!" * 5)
    d2 = device(tmp_path)
    acts = d2.boot(W + 10, 0)
    assert d2.state_lost == W + 10 and not d2.balance_valid
    lost = records(acts, "state_lost")[0]
    assert lost.reason == "no_valid_state" and lost.data["balance_valid"] is False
    assert {f["problem"] for f in lost.data["found"]} == {"garbage"}
    assert d2.meter.relay_state == "guarantee" and d2.meter.relay_closed
    assert not any(a.kind == "ack" for a in acts)
    # a reboot keeps saying so, and does not crash-loop
    d3 = device(tmp_path)
    acts = d3.boot(W + 20, 0)
    assert d3.state_lost == W + 10
    assert records(acts, "state_lost")[0].reason == "still_unresolved"
    d3.clear_state_lost(W + 30, 30_000)
    d4 = device(tmp_path)
    d4.boot(W + 40, 0)
    assert not d4.state_lost and d4.meter.relay_state == "connected"


def test_device_snapshot_of_another_meter_is_a_config_error_and_changes_nothing(tmp_path):
    d = device(tmp_path)
    d.boot(W, 0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = validate({"meter": {"id": "000000000043"}}, SCHEMA)
    d2 = Device(other, Store(OsFS(), str(tmp_path), "000000000043"))
    with pytest.raises(ConfigError) as e:
        d2.boot(W + 1, 0)
    assert e.value.key == "meter.id" and "000000000042" in str(e.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


class FailingFS(OsFS):
    fail = False

    def rename(self, src, dst):
        if self.fail:
            raise OSError(28, "No space left on device")
        OsFS.rename(self, src, dst)


def test_device_withholds_ack_until_a_commit_succeeds(tmp_path):
    fs = FailingFS()
    d = Device(cfg(), Store(fs, str(tmp_path), MID))
    d.boot(W, 0)
    fs.fail = True
    acts = d.feed(TopUp(50_000, "r1", W + 1, 1000))
    assert not any(a.kind == "ack" for a in acts)
    assert records(acts, "store")[0].reason == "commit_failed"
    assert "No space" in d.store_error
    fs.fail = False
    acts = d.feed(Tick(W + 2, 2000))
    assert [a.ref for a in acts if a.kind == "ack"] == ["r1"]
    assert records(acts, "store")[0].reason == "commit_recovered"
    d2 = device(tmp_path)
    d2.boot(W + 3, 0)
    assert d2.meter.balance == 150_000
