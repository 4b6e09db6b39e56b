"""Device's public API for other durable parts: feed(event, before_commit),
commit(reason), next_deadline() with checkpoints and commit retries."""

from agent.config import validate
from agent.device import Device
from agent.events import Pulses, Tick, TopUp
from agent.meter import SCHEMA
from agent.store import OsFS, Store

MID = "000000000042"
W = 1_700_000_000


class Counter:
    """A durable part: a number and how often it was restored."""

    def __init__(self):
        self.n = 0

    def snapshot(self):
        return self.n

    def restore(self, value):
        self.n = value or 0


def make(path, **store):
    raw = {"meter": {"id": MID}, "account": {"opening_balance": 10 ** 7}}
    cfg = validate(raw, SCHEMA)
    if store:
        cfg["store"] = store
    d = Device(cfg, Store(OsFS(), str(path), MID))
    part = Counter()
    d.add_part("counter", part)
    return d, part


def stored(path):
    return Store(OsFS(), str(path), MID).load()[0][0].value


def test_device_before_commit_joins_the_events_commit(tmp_path):
    d, part = make(tmp_path)
    d.boot(W, 0)
    seen = []

    def bump(actions):
        # sees the core's actions (the ack is there) before anything is durable
        seen.extend(a.kind for a in actions)
        assert stored(tmp_path)["meter"] is not None and stored(tmp_path)["counter"] == part.n
        part.n += 1
        return "counter"

    writes = d.store.writes
    acts = d.feed(TopUp(5000, "r1", W + 1, 1000), bump)
    assert "ack" in seen and "persist" in seen
    assert d.store.writes == writes + 2  # one commit for the core and the part, then the marks
    assert [a.kind for a in acts if a.kind == "ack"] == ["ack"] and not any(a.kind == "persist" for a in acts)
    v = stored(tmp_path)
    assert v["counter"] == 1 and v["meter"][5] == d.meter.account.snapshot()


def test_device_before_commit_reason_forces_a_commit_and_none_does_not(tmp_path):
    d, part = make(tmp_path)
    d.boot(W, 0)
    writes = d.store.writes
    d.feed(Tick(W + 1, 1000), lambda actions: None)
    assert d.store.writes == writes  # nothing changed: nothing written

    def change(actions):
        part.n = 7
        return "counter"

    d.feed(Tick(W + 2, 2000), change)
    assert d.store.writes == writes + 2 and stored(tmp_path)["counter"] == 7  # state + marks
    d2, part2 = make(tmp_path)
    d2.boot(W + 3, 0)
    assert part2.n == 7


def test_device_commit_commits_a_part_alone(tmp_path):
    d, part = make(tmp_path)
    d.boot(W, 0)
    part.n = 3
    commits = d.commits
    assert d.commit("counter") == []
    assert d.commits == commits + 1 and stored(tmp_path)["counter"] == 3
    assert stored(tmp_path)["device"]["reason"] == "counter"


def test_device_boot_before_commit_sees_the_devices_own_records(tmp_path):
    d, _ = make(tmp_path)
    d.boot(W, 0)
    d2, _ = make(tmp_path)
    kinds = []
    d2.boot(W + 10, 0, lambda actions: kinds.extend(a.record.kind for a in actions if a.kind == "publish"))
    assert "power_up" in kinds and "store" in kinds  # store/unaccounted_energy is in the boot commit


def test_device_next_deadline_includes_the_checkpoint(tmp_path):
    d, _ = make(tmp_path, checkpoint_s=60, checkpoint_wh=0)
    d.boot(W, 0)
    d.feed(Tick(W + 5, 5000))  # the boot's coil pulse is done
    core = d.meter.next_deadline()
    assert d.next_deadline() == core  # nothing moved: no checkpoint owed
    d.feed(Pulses(32, W + 6, 6000))
    assert d.next_deadline() == min(core, W + 60)
    # A shell that sleeps until the deadline still checkpoints every checkpoint_s.
    writes = d.store.writes
    for _ in range(5):
        t = d.next_deadline()
        d.feed(Tick(t, (t - W) * 1000))
        d.feed(Pulses(32, t, (t - W) * 1000 + 10))
    assert d.store.writes == writes + 5
    assert d.next_deadline() == W + 6 * 60


def test_device_next_deadline_retries_a_failed_commit(tmp_path):
    class Full(OsFS):
        def rename(self, src, dst):
            raise OSError(28, "No space left on device")

    cfg = validate({"meter": {"id": MID}, "account": {"opening_balance": 10 ** 7}}, SCHEMA)
    d = Device(cfg, Store(OsFS(), str(tmp_path), MID))
    d.boot(W, 0)
    d.store.full.fs = d.store.delta.fs = Full()
    acts = d.feed(TopUp(5000, "r1", W + 1, 1000))
    assert not any(a.kind == "ack" for a in acts) and d.store_error
    assert d.next_deadline() == W + 1 + 5
    d.store.full.fs = d.store.delta.fs = OsFS()
    acts = d.feed(Tick(W + 6, 6000))
    assert [a.ref for a in acts if a.kind == "ack"] == ["r1"] and d.store_error is None

