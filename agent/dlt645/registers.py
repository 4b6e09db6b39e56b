"""The registers the DL/T 645 slave serves, read from a view of the meter.

``read_value(di, ...)`` returns the data bytes of a data identifier (DI)
or None ("no such data").  Formats follow DL/T 645-2007: energies
XXXXXX.XX kWh and money XXXXXX.XX CNY as 4 little-endian BCD bytes, times
least significant field first.  The table is in docs/dlt645.md.
"""

from agent.dlt645.bcd import to_bcd
from agent.dlt645.clock import encode_time

MINOR_PER_CENT = 100  # MONEY_SCALE 10000 minor units per CNY; the wire shows 0.01 CNY
BCD8_MAX = 99999999  # largest XXXXXX.XX value
ENERGY_WRAP = 100000000  # 0.01 kWh registers roll over like a real meter's
LIMIT_KEYS = ("alarm1", "alarm2", "overdraft", "hoarding", "close_allowed")  # 04001001..05
TRIP_KIND = "trip"  # view.records() kinds used for 1D00xxxx, 1E00xxxx and 0333xxxx
CLOSE_KIND = "close"
TOPUP_KIND = "topup"


class MeterView:
    """The read-only view of the meter the slave needs (``agent.meter.Meter`` fits).

    Attributes: ``energy_wh`` (int, forward active total), ``rate_energy_wh``
    (list of 4 ints: sharp, peak, flat, valley), ``balance`` (int minor
    units, negative = overdraft used), ``limits`` (dict with the keys of
    LIMIT_KEYS, minor units), ``relay_position`` (True closed / False open /
    None unknown), ``relay_closed`` (what the policy commands),
    ``alarm_level`` (0, 1, 2), ``payment_mode`` ("prepaid"/"postpaid"),
    ``relay_state`` (policy state name, "guarantee" while guaranteed),
    ``daily_freezes`` (newest first: [day_start_wall, energy_wh, [4 rate Wh],
    balance]), ``meter_id`` (12-digit str) and ``records(kind)`` (newest
    first; each with ``.wall`` and ``.data`` dict).  Optional:
    ``monthly_freezes`` (same layout as daily), ``purchase_count`` (int).
    """

    __slots__ = ()


def energy_bcd(wh):
    """Wh -> 4 bytes XXXXXX.XX kWh (0.01 kWh resolution, rolls over at 1e6 kWh)."""
    return to_bcd((wh // 10) % ENERGY_WRAP, 4)


def money_bcd(minor, round_up=False):
    """Minor units (>= 0) -> 4 bytes XXXXXX.XX CNY; clamps at 999999.99.

    Rounds down by default so the meter never shows more credit than it
    has; ``round_up`` for amounts owed, so it never shows less debt.
    """
    if minor < 0:
        minor = 0
    cents = -((-minor) // MINOR_PER_CENT) if round_up else minor // MINOR_PER_CENT
    return to_bcd(min(cents, BCD8_MAX), 4)


def read_value(di, view, wall, tz_s, address):
    """The data bytes (without the DI) served for ``di``, or None.

    ``tz_s`` is the zone offset for time fields; ``address`` the 6 wire
    bytes served for 04000401/04000402.
    """
    di3 = di >> 24
    di2 = (di >> 16) & 0xFF
    di1 = (di >> 8) & 0xFF
    di0 = di & 0xFF
    if di == 0x00900200:
        return money_bcd(view.balance)
    if di == 0x00900201:
        return money_bcd(-view.balance, True)
    if di3 == 0x00:
        return _energy(di2, di1, di0, view)
    if 0x04001001 <= di <= 0x04001005:
        value = view.limits[LIMIT_KEYS[di - 0x04001001]]
        return money_bcd(value)
    if di == 0x04000503:
        word = status_word3(view)
        return bytes((word & 0xFF, word >> 8))
    if di == 0x04000101:
        return encode_time(wall, tz_s, "YYMMDDWW")
    if di == 0x04000102:
        return encode_time(wall, tz_s, "hhmmss")
    if di in (0x04000401, 0x04000402):
        return address
    if di3 == 0x05 and di2 == 0x06 and 1 <= di0 <= 0x3E:
        return _daily_freeze(di1, di0, view, tz_s)
    if (di3, di2) in ((0x1D, 0x00), (0x1E, 0x00)):
        return _relay_record(TRIP_KIND if di3 == 0x1D else CLOSE_KIND, di1, di0, view, tz_s)
    if di3 == 0x03 and di2 == 0x33 and 1 <= di1 <= 3 and 1 <= di0 <= 10:
        return _purchase(di1, di0, view, tz_s)
    return None


def _energy(kind, rate, nth, view):
    if kind not in (0x00, 0x01, 0x02):
        return None
    if nth == 0:
        total = view.energy_wh
        rates = view.rate_energy_wh
    else:
        months = getattr(view, "monthly_freezes", None) or []
        if nth > 12 or nth > len(months):
            return None
        total = months[nth - 1][1]
        rates = months[nth - 1][2]
    if kind == 0x02:
        # no reverse energy is metered: an import-only pulse meter
        total = 0
        rates = [0, 0, 0, 0]
    if rate == 0:
        return energy_bcd(total)
    if 1 <= rate <= 4:
        return energy_bcd(rates[rate - 1])
    if rate == 0xFF:
        out = energy_bcd(total)
        for r in rates:
            out += energy_bcd(r)
        return out
    return None


def _daily_freeze(what, nth, view, tz_s):
    freezes = view.daily_freezes
    if nth > len(freezes):
        return None
    entry = freezes[nth - 1]
    if what == 0x00:
        return encode_time(entry[0], tz_s, "YYMMDDhhmm")
    if what == 0x01:
        out = energy_bcd(entry[1])
        for r in entry[2]:
            out += energy_bcd(r)
        return out
    return None


def _relay_record(kind, what, nth, view, tz_s):
    recs = view.records(kind)
    if what == 0x00 and nth == 0x01:
        return to_bcd(min(len(recs), 999999), 3)
    if what != 0x01 or nth < 1 or nth > len(recs):
        return None
    rec = recs[nth - 1]
    data = rec.data if isinstance(rec.data, dict) else {}
    operator = data.get("operator", 0)
    if not isinstance(operator, int) or operator < 0:
        operator = 0
    energy = data.get("energy_wh", 0)
    if not isinstance(energy, int) or energy < 0:
        energy = 0
    return (
        encode_time(rec.wall, tz_s, "YYMMDDhhmmss")
        + to_bcd(operator % ENERGY_WRAP, 4)
        + energy_bcd(energy)
        + energy_bcd(0)
    )


def _purchase(what, nth, view, tz_s):
    recs = view.records(TOPUP_KIND)
    if nth > len(recs):
        return None
    rec = recs[nth - 1]
    data = rec.data if isinstance(rec.data, dict) else {}
    if what == 1:
        return encode_time(rec.wall, tz_s, "YYMMDDhhmm")
    if what == 2:
        total = getattr(view, "purchase_count", None)
        if not isinstance(total, int):
            total = len(recs)
        return to_bcd(max(total - (nth - 1), 0) % 10000, 2)
    amount = data.get("amount")
    if not isinstance(amount, int):
        return None
    return money_bcd(amount)


def status_word3(view):
    """Status word 3 (04000503) from the view, as an int (sent low byte first).

    bit4 relay actual state (1 = open; without feedback the commanded state
    is assumed), bit6 relay command state (1 = trip), bit7 pre-trip alarm
    (any balance or remote alarm), bits 8-9 meter type (10 = money prepaid),
    bit12 guarantee power.
    """
    word = 0
    position = view.relay_position
    if position is None:
        position = view.relay_closed
    if not position:
        word |= 1 << 4
    if not view.relay_closed:
        word |= 1 << 6
    if view.alarm_level:
        word |= 1 << 7
    if view.payment_mode == "prepaid":
        word |= 2 << 8
    if view.relay_state == "guarantee":
        word |= 1 << 12
    return word
