"""Tests of the simulator's virtual world: households, pulses, relay, customers."""

import random
import statistics
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.metering.pulse import PulseFilter
from sim import derive_seed
from sim.customer import AMOUNTS, KINDS, Customer
from sim.household import DAY_S, STEP_S, Household, resolve_profile
from sim.pulses import Bounce, PulseSource, edges
from sim.relay_model import LatchingRelay

T0 = 1735660800  # 2025-01-01 00:00 in UTC+8
DAY0 = (T0 + 28800) // DAY_S


# ---------------------------------------------------------------- seeds


def test_derive_seed_is_stable_and_separates_streams():
    assert derive_seed(42, "household", 7) == derive_seed(42, "household", 7)
    assert derive_seed(42, "household", 7) != derive_seed(42, "customer", 7)
    assert derive_seed(42, "household", 7) != derive_seed(43, "household", 7)
    # A fixed value: the derivation must not change between runs or versions.
    assert derive_seed(1, "x") == int.from_bytes(__import__("hashlib").sha256(b"1:x").digest()[:8], "big")


# ---------------------------------------------------------------- household


def _day_profile(h, day):
    p = h.plan(day)
    return list(zip(p.starts, p.watts)), p.total


def test_household_same_seed_same_days():
    a, b = Household(7), Household(7)
    for day in range(DAY0, DAY0 + 30):
        assert _day_profile(a, day) == _day_profile(b, day)
    assert a.mean_wh == b.mean_wh and a.appliances == b.appliances


def test_household_other_seed_other_days():
    a, b = Household(7), Household(8)
    assert [_day_profile(a, d) for d in range(DAY0, DAY0 + 7)] != [_day_profile(b, d) for d in range(DAY0, DAY0 + 7)]


def test_household_day_does_not_depend_on_access_order():
    later = DAY0 + 200
    direct = Household(3)
    walked = Household(3)
    for day in range(DAY0, later + 1):
        walked.plan(day)
    assert _day_profile(direct, later) == _day_profile(walked, later)
    # Going back after the cache moved on gives the same day again.
    assert _day_profile(walked, DAY0) == _day_profile(Household(3), DAY0)


def test_household_outputs_are_ints_on_the_grid():
    h = Household(11)
    for day in range(DAY0, DAY0 + 14):
        p = h.plan(day)
        assert p.starts[0] == day * DAY_S - 28800
        for s, w in zip(p.starts, p.watts):
            assert type(s) is int and type(w) is int
            assert (s - p.starts[0]) % STEP_S == 0
            assert h.params["min_w"] <= w <= h.params["max_w"]
        assert all(p.watts[i] != p.watts[i + 1] for i in range(len(p.watts) - 1))
        assert 2 <= len(p.starts) <= 40  # a handful of segments a day keeps the fleet fast
        assert type(p.total) is int


def test_household_sum_of_segments_is_the_day_energy():
    h = Household(5)
    for day in range(DAY0, DAY0 + 10):
        p = h.plan(day)
        segs = list(h.segments(p.start, p.end))
        assert segs[0][0] == p.start and segs[-1][1] == p.end
        assert sum(w * (b - a) * 10 // STEP_S for a, b, w in segs) == p.total
        assert h.energy_mwh(p.start, p.end) == p.total == h.day_energy_mwh(day)
    first = h.plan(DAY0).start
    assert h.energy_mwh(first, first + 10 * DAY_S) == sum(h.day_energy_mwh(d) for d in range(DAY0, DAY0 + 10))


def test_household_partial_segment_energy_is_power_times_time():
    h = Household(10)
    rng = random.Random(2)
    for _ in range(200):
        t = T0 + rng.randint(0, 3 * DAY_S)
        w = h.power_w(t)
        start = max(s for s in h.plan(h.local_day(t)).starts if s <= t)
        e = h.energy_mwh(start, t)
        # 1 mWh = 3.6 W*s: energy is W*dt floored to whole mWh.
        assert 36 * e <= 10 * w * (t - start) < 36 * (e + 1)
        nxt = h.next_change(t)
        assert h.energy_mwh(t, nxt) + e == w * (nxt - start) * 10 // 36


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5 * DAY_S), st.integers(0, 5 * DAY_S), st.integers(0, 5 * DAY_S), st.integers(0, 50))
def test_household_energy_is_additive(x, y, z, seed):
    a, b, c = sorted((T0 + x, T0 + y, T0 + z))
    h = Household(seed)
    assert h.energy_mwh(a, b) + h.energy_mwh(b, c) == h.energy_mwh(a, c)
    assert h.energy_mwh(a, a) == 0


def test_household_power_is_constant_until_next_change():
    h = Household(9)
    rng = random.Random(1)
    t = T0
    changes = 0
    while t < T0 + 3 * DAY_S:
        w = h.power_w(t)
        nxt = h.next_change(t)
        assert nxt > t
        for probe in (t, nxt - 1, rng.randint(t, nxt - 1)):
            assert h.power_w(probe) == w
        assert h.power_w(nxt) != w
        changes += 1
        t = nxt
    assert changes >= 3 * 6


def test_household_energy_rejects_bad_interval():
    h = Household(1)
    with pytest.raises(ValueError, match="t0 <= t1"):
        h.energy_mwh(T0 + 10, T0)
    with pytest.raises(ValueError, match="t0 <= t1"):
        h.energy_mwh(float(T0), T0 + 1)


def test_household_timezone_moves_local_days():
    utc = Household(4, tz_offset_s=0)
    china = Household(4)
    # The same local day, 8 hours apart in wall time.
    for offset in range(0, DAY_S, 3600):
        assert utc.power_w(T0 + 28800 + offset) == china.power_w(T0 + offset)
    moved = Household(4, tz_offset_s=0)
    assert moved.power_w(T0 + 123, 28800) == china.power_w(T0 + 123)
    with pytest.raises(ValueError, match="tz_offset_s"):
        Household(4, tz_offset_s=1000)


def test_household_fleet_is_diverse_and_means_hold_over_a_year():
    means = []
    for seed in range(20):
        h = Household(seed)
        assert 3000 <= h.mean_wh <= 15000
        year = [h.day_energy_mwh(d) for d in range(DAY0, DAY0 + 364)]
        # The day's target is met except on quiet days (see docs/simulator.md).
        assert abs(statistics.mean(year) / 1000 / h.mean_wh - 1) < 0.12
        means.append(h.mean_wh)
    assert max(means) > 2 * min(means)


def test_household_weekends_and_summer_use_more():
    weekend, weekday, summer, spring = 0, 0, 0, 0
    for seed in range(10):
        h = Household(seed)
        for d in range(DAY0, DAY0 + 364):
            e = h.day_energy_mwh(d)
            if (d + 3) % 7 >= 5:
                weekend += e / 2
            else:
                weekday += e / 5
            yday = time.gmtime(d * DAY_S).tm_yday
            if 182 <= yday < 213:
                summer += e
            elif 91 <= yday < 122:
                spring += e
    assert weekend > 1.05 * weekday
    assert summer > 1.1 * spring


def test_household_daily_shape_has_peaks():
    # Evening (17-22 h) draws more than the small hours (1-4 h) on average.
    evening, night = 0, 0
    for seed in range(10):
        h = Household(seed)
        for d in range(DAY0 + 60, DAY0 + 74):  # March: no heating or cooling at night
            start = h.plan(d).start
            evening += h.energy_mwh(start + 17 * 3600, start + 22 * 3600) / 5
            night += h.energy_mwh(start + 1 * 3600, start + 4 * 3600) / 3
    assert evening > 3 * night


def test_household_profiles_and_validation():
    small = Household(2, profile="small")
    assert 2000 <= small.mean_wh <= 5000
    fixed = Household(2, profile={"mean_wh": 4000, "day_sigma": 0, "seasonal": False})
    assert fixed.mean_wh == 4000
    for bad, key in (
        ({"mean_kwh": 3}, "mean_kwh"),
        ({"max_w": -1}, "max_w"),
        ({"max_w": 1.5}, "max_w"),
        ({"day_sigma": "x"}, "day_sigma"),
        ({"seasonal": 1}, "seasonal"),
        ({"mean_wh_min": 9000, "mean_wh_max": 3000}, "mean_wh_min"),
    ):
        with pytest.raises(ValueError, match=key):
            resolve_profile(bad)
    with pytest.raises(ValueError, match="unknown"):
        Household(1, profile="city")
    with pytest.raises(ValueError, match="preset name or a dict"):
        Household(1, profile=3)


def test_household_peak_stays_under_max_w():
    h = Household(6, profile={"max_w": 1500})
    for d in range(DAY0, DAY0 + 30):
        assert max(h.plan(d).watts) <= 1500


# ---------------------------------------------------------------- pulses


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([800, 1000, 1600, 3200, 10000, 1, 7]),
    st.lists(st.integers(0, 5_000_000), max_size=30),
    st.data(),
)
def test_pulses_any_batching_gives_the_same_total(constant, chunks, data):
    whole = PulseSource(constant)
    total = whole.advance(sum(chunks))
    assert total == sum(chunks) * constant // 1_000_000
    # Re-split the same energy at arbitrary points.
    energy = sum(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, energy), max_size=10)))
    parts = [b - a for a, b in zip([0] + cuts, cuts + [energy])]
    split = PulseSource(constant)
    assert sum(split.advance(p) for p in parts) == total
    assert split.total == whole.total and split.remainder == whole.remainder < 1_000_000


def test_pulses_carry_small_amounts():
    src = PulseSource(1000)  # one pulse per Wh = 1000 mWh
    assert [src.advance(300) for _ in range(10)] == [0, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert src.total == 3 and src.remainder == 0
    with pytest.raises(ValueError, match="energy_mwh"):
        src.advance(-1)
    with pytest.raises(ValueError, match="meter constant"):
        PulseSource(0)


def test_household_energy_to_pulses_matches_whole_day():
    h = Household(12)
    start = h.plan(DAY0).start
    src = PulseSource(3200)
    t = start
    while t < start + DAY_S:
        nxt = min(h.next_change(t), start + DAY_S)
        src.advance(h.energy_mwh(t, nxt))
        t = nxt
    assert src.total == h.day_energy_mwh(DAY0) * 3200 // 1_000_000


def _is_clean(out, count, t0, t1, width):
    levels = [lv for lv, _ in out]
    times = [t for _, t in out]
    assert levels == [1, 0] * count
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(t0 <= t < t1 for t in times)
    assert all(times[2 * k + 1] - times[2 * k] == width for k in range(count))


def test_edges_without_bounce_are_clean_pulses():
    out = edges(10, 1000, 11000, 40)
    _is_clean(out, 10, 1000, 11000, 40)
    assert out[0] == (1, 1000) and out[2] == (1, 2000)
    assert edges(0, 0, 10, 5) == []
    _is_clean(edges(3, 0, 10, 2), 3, 0, 10, 2)


def test_edges_reject_what_cannot_fit():
    with pytest.raises(ValueError, match="do not fit"):
        edges(10, 0, 400, 40)
    with pytest.raises(ValueError, match="rng"):
        edges(1, 0, 1000, 40, bounce=Bounce())
    with pytest.raises(ValueError, match="prob"):
        Bounce(prob=2)
    with pytest.raises(ValueError, match="t1_ms"):
        edges(1, 100, 50, 10)


def _filter_count(out, end):
    f = PulseFilter({"min_high_ms": 25, "min_low_ms": 20, "min_gap_ms": 50})
    n = sum(f.edge(level, t) for level, t in out)
    return n + f.settle(end), f


@pytest.mark.parametrize("seed", range(5))
def test_edges_with_bounce_and_ghosts_still_count_right_through_the_core_filter(seed):
    rng = random.Random(seed)
    bounce = Bounce(prob=0.8, max_glitches=3, max_glitch_ms=3, ghost_prob=0.5)
    out = edges(200, 0, 200 * 250, 60, bounce=bounce, rng=rng)
    levels = [lv for lv, _ in out]
    times = [t for _, t in out]
    assert len(out) > 400  # glitches and ghosts were added
    assert any(levels[i] == levels[i + 1] for i in range(len(levels) - 1))  # ghost edges
    assert times == sorted(times)
    assert all(0 <= t < 200 * 250 for t in times)
    counted, f = _filter_count(out, 200 * 250 + 1000)
    assert counted == 200
    assert f.ghosts > 0 and f.glitches > 0
    # Same seed, same edges.
    assert edges(200, 0, 200 * 250, 60, bounce=bounce, rng=random.Random(seed)) == out


def test_edges_glitches_alone_would_fool_a_naive_counter():
    out = edges(50, 0, 50 * 200, 50, bounce=Bounce(prob=1.0, max_glitches=3), rng=random.Random(3))
    naive = sum(1 for i, (lv, _) in enumerate(out) if lv == 1 and (i == 0 or out[i - 1][0] == 0))
    assert naive > 50
    assert _filter_count(out, 50 * 200 + 500)[0] == 50


# ---------------------------------------------------------------- relay


def test_relay_set_and_reset_move_the_contact():
    r = LatchingRelay(closed=False)
    assert r.apply("set", 60, 0) is True and r.closed and r.feedback() is True
    assert r.apply("set", 60, 1000) is False and r.closed  # already closed
    assert r.apply("reset", 60, 2000) is True and not r.closed and r.feedback() is False
    assert r.operations == 2 and r.violations == []
    assert [p[0] for p in r.pulses] == ["set", "set", "reset"]
    assert LatchingRelay(feedback_wired=False).feedback() is None


def test_relay_short_pulse_does_not_operate():
    r = LatchingRelay(min_operate_ms=20, min_width_ms=10)
    assert r.apply("set", 15, 0) is False and not r.closed
    assert r.violations == []
    r2 = LatchingRelay(min_operate_ms=20, min_width_ms=40)
    r2.apply("set", 30, 0)
    assert r2.closed and [v[0] for v in r2.violations] == ["too_short"]


def test_relay_detects_both_coils_energised():
    r = LatchingRelay()
    r.apply("set", 60, 1000)
    r.apply("reset", 60, 1030)  # starts while "set" still runs
    assert "overlap" in [v[0] for v in r.violations]


def test_relay_detects_retrigger_long_pulse_and_short_spacing():
    r = LatchingRelay(min_interval_ms=500, max_width_ms=100)
    r.apply("set", 60, 0)
    r.apply("set", 60, 30)
    r.apply("reset", 150, 1000)
    r.apply("set", 60, 1300)  # 150 ms after the reset pulse ended
    rules = [v[0] for v in r.violations]
    assert rules == ["retrigger", "too_long", "too_soon"]
    assert all(isinstance(v[2], str) and v[2] for v in r.violations)


def test_relay_respected_spacing_has_no_violation():
    r = LatchingRelay(min_interval_ms=1000)
    t = 0
    for coil in ["set", "reset"] * 5:
        r.apply(coil, 60, t)
        t += 60 + 1000
    assert r.violations == [] and r.operations == 10


def test_relay_keeps_position_over_power_cycle_and_mono_restart():
    r = LatchingRelay()
    r.apply("set", 60, 50_000)
    r.power_cycle()
    assert r.closed
    r.apply("reset", 60, 10)  # mono restarted at boot
    assert r.violations == [] and not r.closed
    r.apply("set", 60, 5)  # earlier than the last pulse, no power cycle
    assert [v[0] for v in r.violations] == ["time_backwards"]


def test_relay_stuck_fault():
    r = LatchingRelay(closed=True, faults=("stuck",))
    assert r.apply("reset", 60, 0) is False and r.closed and r.feedback() is True
    r.set_fault("stuck", False)
    assert r.apply("reset", 60, 2000) is True and not r.closed


def test_relay_welded_fault():
    r = LatchingRelay(closed=False)
    r.set_fault("welded")
    assert r.closed and r.feedback() is True
    assert r.apply("reset", 60, 0) is False and r.closed
    assert r.apply("set", 60, 2000) is False and r.closed
    assert r.operations == 0


def test_relay_open_coil_faults():
    r = LatchingRelay(closed=False, faults=["open_set"])
    assert r.apply("set", 60, 0) is False and not r.closed
    r = LatchingRelay(closed=True, faults=["open_reset"])
    assert r.apply("reset", 60, 0) is False and r.closed
    assert r.apply("set", 60, 2000) is False  # already closed; the set coil works
    r.set_fault("open_reset", False)
    assert r.apply("reset", 60, 4000) is True and not r.closed


def test_relay_rejects_bad_input():
    with pytest.raises(ValueError, match="coil"):
        LatchingRelay().apply("both", 60, 0)
    with pytest.raises(ValueError, match="width_ms"):
        LatchingRelay().apply("set", -5, 0)
    with pytest.raises(ValueError, match="fault"):
        LatchingRelay(faults=["melted"])
    with pytest.raises(ValueError, match="rng"):
        LatchingRelay(miss_rate=0.1)


def test_relay_miss_rate_is_seeded():
    def run(seed):
        r = LatchingRelay(miss_rate=0.2, rng=random.Random(seed))
        t = 0
        for coil in ["set", "reset"] * 200:
            r.apply(coil, 60, t)
            t += 2000
        return r.operations, [p[3] for p in r.pulses]

    ops, moved = run(1)
    assert run(1) == (ops, moved)
    assert 250 < ops < 380  # roughly 80 % of operations succeed
    assert run(2) != (ops, moved)


# ---------------------------------------------------------------- customer


def _local_hour(wall):
    return (wall + 28800) % DAY_S // 3600


def test_customer_same_seed_same_actions():
    def script(seed):
        c = Customer(seed)
        out = [c.kind]
        c.on_alarm(1, T0)
        out.append(c.next_action(T0))
        c.on_cut(T0 + 2 * DAY_S)
        nxt = c.next_action(T0)
        out.append(nxt)
        out.append(c.take_action(nxt[0]))
        out.append(c.next_action(nxt[0]))
        return out

    for seed in range(20):
        assert script(seed) == script(seed)
    assert len({repr(script(s)) for s in range(20)}) > 10


def test_customer_kinds_follow_their_weights():
    kinds = [Customer(s).kind for s in range(1000)]
    assert 520 < kinds.count("prompt") < 680
    assert 180 < kinds.count("waits_for_cut") < 320
    assert 80 < kinds.count("payday") < 220
    with pytest.raises(ValueError, match="kind"):
        Customer(1, kind="rich")


def test_customer_prompt_delays_within_range_and_awake():
    low, _mode, high = KINDS["prompt"]["alarm_delay_s"]
    for seed in range(300):
        c = Customer(seed, kind="prompt")
        alarm = T0 + seed * 3917  # alarms at all times of day
        c.on_alarm(1, alarm)
        at, amount = c.next_action(alarm)
        assert amount in AMOUNTS
        assert low <= at - alarm <= high + 10 * 3600  # a night action waits for the morning
        assert 7 <= _local_hour(at) < 23


def test_customer_cut_reaction_within_range():
    for kind in KINDS:
        low, _mode, high = KINDS[kind]["cut_delay_s"]
        for seed in range(100):
            c = Customer(seed, kind=kind)
            c.on_cut(T0 + seed * 5003)
            assert c.pending is not None
            at = c.pending[0]
            assert low <= at - (T0 + seed * 5003) <= high + 10 * 3600
            assert 7 <= _local_hour(at) < 23


def test_customer_who_waits_ignores_alarms():
    c = Customer(1, kind="waits_for_cut")
    c.on_alarm(1, T0)
    c.on_alarm(2, T0 + 3600)
    assert c.next_action(T0) is None and c.take_action(T0 + 30 * DAY_S) is None
    c.on_cut(T0 + DAY_S)
    at, amount = c.next_action(T0 + DAY_S)
    assert c.take_action(at - 1) is None
    assert c.take_action(at) == amount
    assert c.next_action(at) is None
    assert c.taken == [(at, amount, "cut", T0 + DAY_S)]


def test_customer_cut_brings_an_alarm_top_up_forward():
    moved = 0
    for seed in range(50):
        c = Customer(seed, kind="prompt")
        c.on_alarm(1, T0)
        first = c.next_action(T0)
        c.on_cut(T0 + 60)
        now = c.next_action(T0)
        assert now[0] <= first[0]
        if now != first:
            moved += 1
            assert c.pending[2] == "cut"
    assert moved > 10


def test_customer_payday_tops_up_monthly():
    c = Customer(8, kind="payday", payday=10)
    wall = T0
    seen = []
    for _ in range(3):
        at, amount = c.next_action(wall)
        tm = time.gmtime(at + 28800)
        assert tm.tm_mday == 10 and 9 <= tm.tm_hour <= 21
        assert amount in AMOUNTS[1:]
        assert c.take_action(at) == amount
        seen.append(tm.tm_mon)
        wall = at
    assert seen == [1, 2, 3]
    with pytest.raises(ValueError, match="payday"):
        Customer(1, kind="payday", payday=31)


def test_customer_payday_settles_a_pending_cut_reaction():
    c = Customer(8, kind="payday", payday=10)
    payday = c.next_action(T0)[0]
    c.on_cut(payday - 600)  # the reaction takes at least an hour: payday comes first
    assert c.pending[0] > payday
    assert c.take_action(payday) is not None
    assert c.taken[-1][2] == "payday" and c.pending is None
