"""Tariffs and the account, against hand-computed tables (both runtimes)."""

from agent.account.account import ACCOUNT_FIELDS, Account
from agent.account.tariff import TARIFF_FIELDS, Tariff, check_tariff
from agent.calendar import days_from_civil
from agent.config import ConfigError, validate
from agent.meter import SCHEMA

C = 3200  # imp/kWh
KWH = 1000 * C  # energy units in one kWh (units are 1/C Wh)


def _account(tariff, **acc):
    return Account(validate(acc, ACCOUNT_FIELDS), validate(tariff, TARIFF_FIELDS), C)


def test_flat_price_with_four_decimals_is_exact():
    a = _account({"price": 5883}, opening_balance=1000000)
    day = days_from_civil(2026, 3, 1)
    # 1 pulse = 0.3125 Wh costs 0.18384375 minor units: carried, never rounded away
    total = 0
    for _ in range(3200 * 7):
        total += a.charge(1000, 2, day)
    assert total == 7 * 5883  # exactly 7 kWh at 0.5883
    assert a.balance == 1000000 - 7 * 5883
    assert a.carry == 0


def test_tiered_tariff_matches_hand_computed_bill():
    # Guangdong-style monthly tiers: 0-260 kWh 0.5883, 260-600 0.6383, above 0.8883
    t = {"kind": "tiered", "tier_kwh": [260, 600], "tier_prices": [5883, 6383, 8883], "settlement_day": 1}
    a = _account(t)
    day = days_from_civil(2026, 3, 5)
    a.charge(250 * KWH, 2, day)
    a.charge(100 * KWH, 2, day)  # crosses 260 inside the batch
    a.charge(300 * KWH, 2, day)  # crosses 600
    expected = 260 * 5883 + 340 * 6383 + 50 * 8883
    assert a.charged == expected
    # next month starts again in tier 1
    a.charge(10 * KWH, 2, days_from_civil(2026, 4, 1))
    assert a.charged == expected + 10 * 5883


def test_tier_cycle_follows_the_settlement_day_and_a_clock_set_back_does_not_reopen_it():
    t = {"kind": "tiered", "tier_kwh": [10], "tier_prices": [100, 200], "settlement_day": 15}
    a = _account(t)
    a.charge(10 * KWH, 2, days_from_civil(2026, 3, 14))
    a.charge(1 * KWH, 2, days_from_civil(2026, 3, 14))  # still the Feb-15 cycle: tier 2
    assert a.charged == 10 * 100 + 200
    a.charge(1 * KWH, 2, days_from_civil(2026, 3, 15))  # new cycle
    a.charge(1 * KWH, 2, days_from_civil(2026, 3, 14))  # clock went back: same cycle kept
    assert a.charged == 10 * 100 + 200 + 100 + 100


def test_yearly_tiers():
    t = {"kind": "tiered", "tier_kwh": [2160], "tier_prices": [5883, 6383], "tier_cycle": "yearly", "settlement_month": 1}
    a = _account(t)
    a.charge(2000 * KWH, 2, days_from_civil(2026, 6, 1))
    a.charge(300 * KWH, 2, days_from_civil(2026, 12, 1))
    a.charge(100 * KWH, 2, days_from_civil(2027, 1, 2))
    assert a.charged == 2160 * 5883 + 140 * 6383 + 100 * 5883


TOU = {
    "kind": "tou",
    "tou_prices": [12000, 10000, 6000, 3000],
    "tou_slots": [
        ["00:00", "valley"],
        ["08:00", "flat"],
        ["10:00", "peak"],
        ["12:00", "flat"],
        ["14:00", "peak"],
        ["19:00", "sharp"],
        ["21:00", "peak"],
        ["22:00", "flat"],
    ],
}


def test_time_of_use_rates_by_slot():
    t = Tariff(validate(TOU, TARIFF_FIELDS))
    assert [t.rate_at(m) for m in (0, 479, 480, 600, 719, 720, 840, 1140, 1260, 1320, 1439)] == [3, 3, 2, 1, 1, 2, 1, 0, 1, 2, 2]
    assert t.next_slot_minute(0) == 480 and t.next_slot_minute(1320) == 1440


def test_time_of_use_bill_matches_hand_computed_table():
    a = _account(TOU)
    day = days_from_civil(2026, 3, 2)
    t = Tariff(validate(TOU, TARIFF_FIELDS))
    for minute, kwh in ((60, 5), (540, 2), (660, 3), (1200, 4), (1380, 1)):
        a.charge(kwh * KWH, t.rate_at(minute), day)
    assert a.charged == 5 * 3000 + 2 * 6000 + 3 * 10000 + 4 * 12000 + 1 * 6000


def test_tiered_and_time_of_use_combined_adds_the_tier_surcharge():
    t = dict(TOU)
    t["kind"] = "tiered_tou"
    t["tier_kwh"] = [100]
    t["tier_prices"] = [0, 500]
    a = _account(t)
    day = days_from_civil(2026, 3, 2)
    a.charge(90 * KWH, 3, day)
    a.charge(20 * KWH, 0, day)  # 10 kWh in tier 1, 10 kWh in tier 2, at sharp
    assert a.charged == 90 * 3000 + 10 * 12000 + 10 * 12500


def test_bad_tariffs_are_refused_with_the_rule():
    bad = (
        {"kind": "tiered", "tier_kwh": [600, 260], "tier_prices": [1, 2, 3]},
        {"kind": "tiered", "tier_kwh": [260], "tier_prices": [1]},
        {"kind": "tou", "tou_prices": [1, 2, 3], "tou_slots": [["00:00", "flat"]]},
        {"kind": "tou", "tou_prices": [1, 2, 3, 4], "tou_slots": [["00:10", "flat"]]},
        {"kind": "tou", "tou_prices": [1, 2, 3, 4], "tou_slots": [["00:00", "flat"], ["08:07", "peak"]]},
        {"kind": "tou", "tou_prices": [1, 2, 3, 4], "tou_slots": [["00:00", "cheap"]]},
    )
    for t in bad:
        assert check_tariff(validate(t, TARIFF_FIELDS)) is not None, t
    try:
        validate({"tariff": {"price": -1}}, SCHEMA)
        raise AssertionError("negative price accepted")
    except ConfigError as e:
        assert e.key == "tariff.price"


def test_alarm_amounts_out_of_order_and_unknown_keys_are_config_errors():
    for raw, key in (
        ({"account": {"alarm1": 100, "alarm2": 200}}, "account"),
        ({"account": {"alarm": 100}}, "account.alarm"),
        ({"meter": {"constant": "3200"}}, "meter.constant"),
        ({"meter": {"id": "12345"}}, "meter.id"),
    ):
        try:
            validate(raw, SCHEMA)
            raise AssertionError("accepted %r" % (raw,))
        except ConfigError as e:
            assert e.key == key, (e.key, key)


def test_overdraft_hoarding_and_close_allowed():
    a = _account({"price": 10000}, opening_balance=5000, overdraft=20000, hoarding=1000000, close_allowed=10000)
    assert not a.exhausted()
    a.charge(1 * KWH, 2, 0)  # 1.0000 CNY -> balance -5000 (into overdraft)
    assert a.balance == -5000 and not a.exhausted()
    a.charge(2 * KWH, 2, 0)
    assert a.balance == -25000 and a.exhausted()
    a.credit(30000)  # pays off the overdraft first
    assert a.balance == 5000 and not a.exhausted() and not a.may_close()
    a.credit(5000)
    assert a.may_close()
    assert a.would_hoard(1000000 - 9999) and not a.would_hoard(1000000 - 10000)
