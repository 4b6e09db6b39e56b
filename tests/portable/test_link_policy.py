"""Link policies on both runtimes: topic tree, reconnect backoff, outbox, replay guard."""

from agent import results
from agent.link import topics
from agent.link.backoff import Backoff
from agent.link.outbox import CRITICAL, EVENT, TELE, Outbox
from agent.link.replay import WINDOW, ReplayGuard

MID = "000000000042"
OTHER = "000000000043"


def _raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError("%s not raised" % exc.__name__)


def test_topics_tree_and_parse():
    assert topics.topic(MID, topics.CMD) == "pm/000000000042/cmd"
    assert topics.fleet(topics.ACK) == "pm/+/ack"
    assert topics.parse("pm/000000000042/state") == (MID, "state")
    assert topics.parse(b"pm/000000000042/cmd") == (MID, "cmd")
    for bad in ("pm/00000000004/cmd", "pm/+/cmd", "xx/000000000042/cmd", "pm/000000000042/foo",
                "pm/000000000042/cmd/x", b"\xff", None, 5):
        assert topics.parse(bad) is None, bad
    _raises(ValueError, topics.topic, "12345678901#", topics.CMD)
    _raises(ValueError, topics.topic, MID, "nope")


def test_backoff_doubles_with_jitter_to_cap():
    b = Backoff(base_ms=1000, cap_ms=8000, stable_ms=30000)
    lows = [b.next_delay(0) for _ in range(6)]
    assert lows == [500, 1000, 2000, 4000, 4000, 4000]
    b = Backoff(base_ms=1000, cap_ms=8000)
    highs = [b.next_delay(0xFFFFFFFF) for _ in range(5)]
    for d, step in zip(highs, [1000, 2000, 4000, 8000, 8000]):
        assert step // 2 <= d <= step, (d, step)


def test_backoff_resets_only_after_stable_connection():
    b = Backoff(base_ms=1000, cap_ms=120000, stable_ms=30000)
    for _ in range(4):
        b.next_delay(7)
    assert b.step_ms == 16000
    b.connected(0)
    b.disconnected(5000)  # dropped at once: keep backing off
    assert b.step_ms == 16000
    b.connected(10000)
    b.disconnected(40000)
    assert b.step_ms == 1000 and b.attempts == 0


def test_outbox_order_window_and_ack():
    ob = Outbox(capacity=10, hard_capacity=20, window=2)
    for i in range(5):
        assert ob.add(EVENT, "evt", {"i": i}) == i + 1
    first = ob.take()
    assert [e[0] for e in first] == [1, 2]
    assert ob.take() == []  # window full
    assert ob.acked(2) and not ob.acked(2)
    assert [e[0] for e in ob.take()] == [3]
    ob.disconnected()  # 1 and 3 were in flight: sent again, in order
    assert [e[0] for e in ob.take()] == [1, 3]
    assert ob.pending() == 4


def test_outbox_full_drops_telemetry_then_events_never_money():
    ob = Outbox(capacity=4, hard_capacity=6, window=1)
    ob.add(TELE, "tele", 1)
    ob.add(EVENT, "evt", 2)
    ob.add(CRITICAL, "ack", 3)
    ob.add(TELE, "tele", 4)
    assert ob.add(CRITICAL, "ack", 5) == 5  # evicts telemetry 1
    assert [e[3] for e in ob.items] == [2, 3, 4, 5]
    ob.add(EVENT, "evt", 6)  # evicts telemetry 4
    assert [e[3] for e in ob.items] == [2, 3, 5, 6]
    assert ob.add(TELE, "tele", 7) is None  # an event is worth more: the new reading goes
    ob.add(CRITICAL, "ack", 8)  # evicts event 2
    ob.add(CRITICAL, "ack", 9)  # evicts event 6
    assert [e[3] for e in ob.items] == [3, 5, 8, 9]
    assert ob.add(TELE, "tele", 10) is None  # nothing cheaper: the new one goes
    assert ob.add(EVENT, "evt", 11) is None
    assert ob.add(CRITICAL, "ack", 12) is not None  # over capacity, under hard cap
    assert ob.add(CRITICAL, "ack", 13) is not None
    assert not ob.can_accept_critical()
    assert ob.add(CRITICAL, "ack", 14) is None
    assert [e[3] for e in ob.items] == [3, 5, 8, 9, 12, 13]
    assert ob.dropped == [4, 3, 1]


def test_outbox_snapshot_roundtrip_and_bad_snapshots():
    ob = Outbox(capacity=8)
    ob.add(EVENT, "evt", {"a": 1})
    ob.add(CRITICAL, "ack", {"r": "x"})
    ob.take()
    ob.acked(1)
    snap = ob.snapshot()
    again = Outbox(capacity=8)
    again.restore(snap)
    assert again.items == ob.items and again.next_seq == 3
    assert [e[0] for e in again.take()] == [2]  # in flight marks are not persisted
    for bad in (None, {}, {"next": 0, "items": [], "dropped": [0, 0, 0]},
                {"next": 3, "items": [[2, 1, "evt", 0], [1, 1, "evt", 0]], "dropped": [0, 0, 0]},
                {"next": 3, "items": [[5, 1, "evt", 0]], "dropped": [0, 0, 0]},
                {"next": 3, "items": [[1, 9, "evt", 0]], "dropped": [0, 0, 0]},
                {"next": 3, "items": [], "dropped": [0]}):
        _raises(ValueError, Outbox().restore, bad)


def test_replay_guard_window():
    g = ReplayGuard()
    assert g.check(0) == results.MALFORMED
    assert g.check(True) == results.MALFORMED
    assert g.check(5) is None
    g.commit(5)
    assert g.check(5) == results.ALREADY_USED
    assert g.check(3) is None  # late but unseen
    g.commit(3)
    assert g.check(3) == results.ALREADY_USED
    g.commit(100)
    assert g.check(100 - WINDOW) is None
    assert g.check(100 - WINDOW - 1) == results.TOO_OLD
    assert g.check(101, wall=10, expires=9) == results.EXPIRED
    g2 = ReplayGuard()
    g2.restore(g.snapshot())
    assert g2.check(100) == results.ALREADY_USED and g2.check(99) is None
    _raises(ValueError, g2.restore, [1, 1 << WINDOW])
    assert g.check(1 << 64) == results.MALFORMED
    g.commit((1 << 64) - 1)
    assert g.check((1 << 64) - 1) == results.ALREADY_USED


