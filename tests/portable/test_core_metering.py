"""Pulse filter, registers, freezes and plausibility (CPython and MicroPython)."""

from agent.config import validate
from agent.metering import freeze, pulse
from agent.metering.freeze import Freezer
from agent.metering.plausibility import Plausibility
from agent.metering.pulse import PulseFilter
from agent.metering.registers import Registers
from agent.calendar import days_from_civil, civil_from_days, day_start, weekday, parse_date, parse_datetime


def _filter(**kw):
    return PulseFilter(validate(kw, pulse.SCHEMA))


def _feed(f, edges):
    n = 0
    for level, t in edges:
        n += f.edge(level, t)
    return n + f.settle(edges[-1][1] + 10000)


def test_clean_pulses_count_once_each():
    f = _filter()
    edges = []
    for i in range(10):
        t = i * 200
        edges += [(1, t), (0, t + 40)]
    assert _feed(f, edges) == 10


def test_bounce_at_both_edges_counts_one():
    f = _filter()
    # rising bounce, a 40 ms pulse, falling bounce
    edges = [(1, 0), (0, 2), (1, 3), (0, 5), (1, 6), (0, 46), (1, 47), (0, 48)]
    assert _feed(f, edges) == 1
    assert f.glitches >= 2


def test_ghost_edges_with_repeated_level_are_ignored():
    f = _filter()
    edges = [(1, 0), (1, 10), (1, 20), (0, 40), (0, 50), (1, 200), (0, 240)]
    assert _feed(f, edges) == 2
    assert f.ghosts == 3  # (1,10), (1,20) and (0,50)


def test_pulse_shorter_than_min_width_is_not_counted():
    f = _filter(min_high_ms=30)
    assert _feed(f, [(1, 0), (0, 20), (1, 100), (0, 140)]) == 1


def test_min_gap_rejects_a_second_pulse_too_soon():
    f = _filter(min_high_ms=10, min_low_ms=10, min_gap_ms=100)
    assert _feed(f, [(1, 0), (0, 20), (1, 40), (0, 60), (1, 200), (0, 220)]) == 2


def test_registers_are_exact_for_fractional_pulse_energy():
    r = Registers(3200)
    r.add_pulses(1, 2)
    assert r.total == 1000 and r.total_wh == 0  # 0.3125 Wh
    r.add_pulses(3199, 2)
    assert r.total_wh == 1000
    r.add_pulses(32, 0)
    assert r.rate_wh() == [10, 0, 1000, 0]


def test_calendar_round_trips_and_knows_weekdays():
    for y, m, d in ((1970, 1, 1), (2000, 2, 29), (2026, 11, 27), (2100, 3, 1), (1969, 12, 31)):
        assert civil_from_days(days_from_civil(y, m, d)) == (y, m, d)
    assert weekday(days_from_civil(2026, 11, 27)) == 5  # a Friday
    assert parse_date("2026-02-29") is None
    assert parse_datetime("2026-01-01 00:00", 28800) == 1767225600 - 28800


def _freezer(**kw):
    return Freezer(validate(kw, freeze.SCHEMA))


def test_daily_freeze_once_per_day_and_never_rerun_after_clock_goes_back():
    f = _freezer()
    d0 = days_from_civil(2026, 1, 1)
    assert f.advance(d0, 0, 0, [0, 0, 0, 0], 0) == (0, 0)
    assert f.advance(d0, 0, 5, [0, 0, 5, 0], 0) == (0, 0)
    assert f.advance(d0 + 1, 0, 10, [0, 0, 10, 0], 0)[0] == 1
    assert f.advance(d0, 0, 11, [0, 0, 11, 0], 0) == (0, 0)  # clock set back: nothing
    assert f.advance(d0 + 1, 0, 12, [0, 0, 12, 0], 0) == (0, 0)  # same day again: no re-run
    assert f.advance(d0 + 4, 0, 20, [0, 0, 20, 0], 0)[0] == 3  # jump: each missed day frozen
    assert [x[0] for x in f.daily] == [day_start(d0 + k, 0) for k in (4, 3, 2, 1)]


def test_daily_freezes_keep_the_configured_number_and_monthly_on_settlement_day():
    f = _freezer(daily_keep=62, settlement_day=1)
    d0 = days_from_civil(2026, 1, 1)
    f.advance(d0, 0, 0, [0, 0, 0, 0], 0)
    for k in range(1, 100):
        f.advance(d0 + k, 0, k, [0, 0, k, 0], 0)
    assert len(f.daily) == 62
    assert f.daily[0][1] == 99
    assert len(f.monthly) == 3  # Feb 1, Mar 1, Apr 1
    assert civil_from_days(f.monthly[0][0] // 86400) == (2026, 4, 1)


def test_load_profile_periods_sum_to_the_energy():
    f = _freezer(profile_minutes=15, profile_keep=96)
    wall = 1767225600
    f.profile_step(wall, 0, 0)
    wh = 0
    for k in range(1, 40):
        wh += k
        f.profile_step(wall + k * 450, 0, wh)
    assert sum(p[1] for p in f.profile) + (wh - f.lp_start_wh) == wh
    starts = [p[0] for p in f.profile]
    assert starts == sorted(starts, reverse=True)
    assert all((s - wall) % 900 == 0 for s in starts)


def test_rate_above_the_supply_and_pulses_while_open_are_reported():
    p = Plausibility(13800, 1000)
    assert p.pulses(1, 0, False) == []
    # 60 s at 1000 imp/kWh and 13.8 kW is at most 230 pulses: 400 is too many
    found = p.pulses(400, 60000, False)
    assert [f[0] for f in found] == ["rate_too_high"]
    assert p.pulses(100, 120000, False) == []
    assert [f[0] for f in p.pulses(1, 120500, True)] == ["pulses_while_open"]
    assert p.pulses(1, 121000, True) == []  # reported once per open period
