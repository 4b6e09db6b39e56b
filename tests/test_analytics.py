"""Anti-theft analytics: each collection-terminal rule on synthetic daily data."""

import random

from headend.analytics import evaluate, score_meter, suspects


def days(n, wh=6000, seed=1, **over):
    """n normal days around ``wh`` Wh; ``over`` maps field index -> {day: value}."""
    rng = random.Random(seed)
    rows = []
    for d in range(n):
        e = int(wh * rng.uniform(0.8, 1.2))
        rows.append([d, e, e, 0, 0, 0, 0, 0, 100000])
    return rows


def test_analytics_honest_meter_scores_zero():
    assert score_meter(days(90)) == (0, [])


def test_analytics_meter_stopped():
    rows = days(60)
    for r in rows[40:]:
        r[1] = r[2] = 0
    score, reasons = score_meter(rows)
    assert score >= 90 and any("meter stopped for 20 days" in r for r in reasons)


def test_analytics_no_stop_while_cut_or_powered_down():
    rows = days(60)
    for r in rows[40:50]:
        r[1] = r[2] = 0
        r[3] = 86400  # the supply was cut: nothing to register
    for r in rows[50:]:
        r[1] = r[2] = 0
        r[7] = 86400  # a long power outage
    score, reasons = score_meter(rows)
    assert not any("stopped" in r for r in reasons)
    assert score < 50


def test_analytics_energy_deviation_and_fast_meter():
    rows = days(30)
    for r in rows[10:15]:
        r[1] = r[2] * 80 // 100
    score, reasons = score_meter(rows)
    assert score >= 70 and any("deviate" in r for r in reasons)
    rows = days(30)
    rows[5][1] = rows[5][2] * 11
    score, reasons = score_meter(rows)
    assert any("running fast" in r for r in reasons)


def test_analytics_deviation_skipped_on_tiny_days():
    rows = days(30, wh=8)  # under 0.01 kWh a day: ratios mean nothing
    for r in rows:
        r[1] = r[2] * 3
    assert not any("deviate" in r for r in score_meter(rows)[1])


def test_analytics_consumption_while_cut():
    rows = days(30)
    rows[20][3] = 40000
    rows[20][4] = 2500
    score, reasons = score_meter(rows)
    assert score >= 80 and "2.5 kWh used while cut" in reasons[0]
    rows[20][4] = 50  # a last pulse in the second of the cut is no theft
    assert score_meter(rows)[0] == 0


def test_analytics_sustained_drop_beats_a_holiday():
    theft = days(90)
    for r in theft[50:]:
        r[1] = r[2] = r[1] * 30 // 100
    holiday = days(90)
    for r in holiday[50:64]:
        r[1] = r[2] = r[1] // 10
    s_theft, why = score_meter(theft)
    s_holiday, why_h = score_meter(holiday)
    assert s_theft >= 50 > s_holiday
    assert any("(recovered)" in r for r in why_h)


def test_analytics_cover_open_alone_is_not_enough_but_adds_up():
    rows = days(90)
    rows[30][5] = 1
    assert 0 < score_meter(rows)[0] < 50
    for r in rows[49:]:
        r[1] = r[2] = r[1] * 55 // 100
    rows[50][5] = 1
    score, reasons = score_meter(rows)
    assert score >= 50 and "cover opened when the use fell" in reasons


def test_analytics_reading_went_down():
    rows = days(10)
    rows[3][2] = -5
    assert score_meter(rows)[0] >= 100


def test_analytics_ranking_and_evaluation():
    daily = {"a": days(60), "b": days(60), "c": days(60)}
    for r in daily["b"][30:]:
        r[1] = r[2] = 0
    daily["c"][20][3] = 3600
    daily["c"][20][4] = 900
    found = suspects(daily)
    assert [s["id"] for s in found] == ["b", "c"]
    ev = evaluate(found, {"a": None, "b": "stopped", "c": None})
    assert ev["planted"] == 1 and ev["flagged"] == 2 and ev["true_positives"] == 1
    assert ev["precision_pm"] == 500 and ev["recall_pm"] == 1000
    assert ev["by_kind"] == {"stopped": {"planted": 1, "caught": 1}}
