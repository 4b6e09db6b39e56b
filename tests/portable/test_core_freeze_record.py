"""The daily freeze record the head-end settles days from (both runtimes).

In its own module: test_core_meter.py is at the edge of the 128K heap the
MicroPython run allows."""

from agent.events import Boot, Pulses
from agent.meter import Meter, load_config

T0 = 1767196800  # 2026-01-01 00:00 in China (UTC+8)


def test_daily_freeze_record_carries_the_charge_and_rates_of_its_instant():
    # headend/settlement.py checks each day exactly from these fields.
    m = Meter(load_config({"meter": {"constant": 1000}, "tariff": {"price": 10000}}))
    m.handle(Boot(T0, 0))
    m.handle(Pulses(100, T0 + 23 * 3600, 23 * 3600 * 1000))
    charged, rates, balance = m.account.charged, list(m.rate_energy_wh), m.balance
    assert charged == 1000
    m.handle(Pulses(100, T0 + 25 * 3600, 25 * 3600 * 1000))  # charged after the freeze, in the same event
    rec = m.records("freeze")[0]
    assert (rec.reason, rec.data["day"], rec.data["days"]) == ("daily", (T0 + 24 * 3600 + m.tz_s) // 86400, 1)
    assert (rec.data["chg"], rec.data["rates"], rec.data["balance"]) == (charged, rates, balance)
    assert m.account.charged == 2000
