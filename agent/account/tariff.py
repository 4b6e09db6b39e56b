"""Tariffs: flat, tiered (阶梯), time-of-use (分时) and tiered + time-of-use.

Prices are integer money minor units per kWh (MONEY_SCALE = 10000, so the
four-decimal 0.5883 CNY/kWh is 5883).  Energy arrives in *units* of
1/C Wh for a meter constant C imp/kWh, so one pulse is exactly 1000 units
and nothing is ever rounded before money is computed.
"""

from agent.calendar import civil_from_days, parse_hhmm
from agent.config import INT, LIST, STR, TABLE, Field, at_least, between, one_of

RATES = ("sharp", "peak", "flat", "valley")  # DL/T 645 tariff numbers 1..4
FLAT_RATE = 2


def check_tariff(t):
    kind = t["kind"]
    if kind in ("tou", "tiered_tou"):
        prices = t["tou_prices"]
        if len(prices) != 4:
            return "tou_prices needs 4 prices (sharp, peak, flat, valley), got %d" % len(prices)
        for p in prices:
            if not isinstance(p, int) or isinstance(p, bool) or p < 0:
                return "tou_prices must be whole non-negative minor units per kWh, got %r" % (p,)
        problem = _check_slots(t["tou_slots"])
        if problem:
            return problem
    if kind in ("tiered", "tiered_tou"):
        limits = t["tier_kwh"]
        prices = t["tier_prices"]
        if not limits:
            return "tier_kwh needs at least one threshold for a tiered tariff"
        last = 0
        for kwh in limits:
            if not isinstance(kwh, int) or isinstance(kwh, bool) or kwh <= last:
                return "tier_kwh must be whole kWh in strictly rising order, got %r" % (limits,)
            last = kwh
        if len(prices) != len(limits) + 1:
            return "tier_prices needs %d prices (one more than tier_kwh), got %d" % (len(limits) + 1, len(prices))
        for p in prices:
            if not isinstance(p, int) or isinstance(p, bool) or p < 0:
                return "tier_prices must be whole non-negative minor units per kWh, got %r" % (p,)
    return None


def _check_slots(slots):
    if not slots:
        return "tou_slots needs at least one [\"HH:MM\", rate] slot starting at 00:00"
    if len(slots) > 48:
        return "tou_slots allows at most 48 slots, got %d" % len(slots)
    last = -1
    for slot in slots:
        if not isinstance(slot, list) or len(slot) != 2:
            return "each tou_slots entry must be [\"HH:MM\", rate], got %r" % (slot,)
        minute = parse_hhmm(slot[0])
        if minute is None or minute >= 1440:
            return "tou_slots start %r is not a time HH:MM" % (slot[0],)
        if minute % 15:
            return "tou_slots start %r is not on a 15-minute boundary" % (slot[0],)
        if minute <= last:
            return "tou_slots starts must rise strictly through the day, %r does not" % (slot[0],)
        if last < 0 and minute != 0:
            return "the first tou_slots entry must start at 00:00, not %r" % (slot[0],)
        if slot[1] not in RATES:
            return "tou_slots rate %r must be one of %s" % (slot[1], ", ".join(RATES))
        last = minute
    return None


TARIFF_FIELDS = {
    "kind": Field(STR, "flat", one_of("flat", "tiered", "tou", "tiered_tou"), doc="flat, tiered, tou or tiered_tou"),
    "price": Field(INT, 5883, at_least(0), doc="flat price, minor units per kWh (5883 = 0.5883 CNY/kWh)"),
    "tou_prices": Field(LIST, [], None, doc="time-of-use prices for sharp, peak, flat, valley (minor units per kWh)"),
    "tou_slots": Field(LIST, [["00:00", "flat"]], None, doc="daily slots [\"HH:MM\", rate], 15-minute granularity, first at 00:00"),
    "tier_kwh": Field(LIST, [], None, doc="tier thresholds in kWh per cycle, rising"),
    "tier_prices": Field(LIST, [], None, doc="price per tier (one more than tier_kwh); added to the TOU price for tiered_tou"),
    "tier_cycle": Field(STR, "monthly", one_of("monthly", "yearly"), doc="tier settlement cycle"),
    "settlement_day": Field(INT, 1, between(1, 28), doc="day of the month a tier cycle starts"),
    "settlement_month": Field(INT, 1, between(1, 12), doc="month a yearly tier cycle starts"),
}


def tariff_field(doc, default):
    """A TABLE field holding a tariff (used for the active and passive tariff)."""
    return Field(TABLE, default, check_tariff, TARIFF_FIELDS, doc)


class Tariff:
    """A validated tariff: which rate applies when, and at what price."""

    __slots__ = ("cfg", "kind", "price", "tou_prices", "slot_starts", "slot_rates", "tier_limits_wh", "tier_prices", "yearly", "sday", "smonth")

    def __init__(self, cfg):
        self.cfg = cfg
        self.kind = cfg["kind"]
        self.price = cfg["price"]
        self.tou_prices = list(cfg["tou_prices"])
        self.slot_starts = [parse_hhmm(s[0]) for s in cfg["tou_slots"]]
        self.slot_rates = [RATES.index(s[1]) for s in cfg["tou_slots"]]
        self.tier_limits_wh = [k * 1000 for k in cfg["tier_kwh"]]
        self.tier_prices = list(cfg["tier_prices"])
        self.yearly = cfg["tier_cycle"] == "yearly"
        self.sday = cfg["settlement_day"]
        self.smonth = cfg["settlement_month"]

    @property
    def has_tou(self):
        return self.kind in ("tou", "tiered_tou")

    @property
    def has_tiers(self):
        return self.kind in ("tiered", "tiered_tou")

    def rate_at(self, minute):
        """Rate index (0 sharp .. 3 valley) at ``minute`` past local midnight."""
        if not self.has_tou:
            return FLAT_RATE
        rate = self.slot_rates[0]
        for i in range(len(self.slot_starts)):
            if self.slot_starts[i] <= minute:
                rate = self.slot_rates[i]
            else:
                break
        return rate

    def next_slot_minute(self, minute):
        """Minute of the next rate change after ``minute`` (1440 = midnight)."""
        if self.has_tou:
            for start in self.slot_starts:
                if start > minute:
                    return start
        return 1440

    def cycle_of(self, day):
        """Tier cycle number containing local day number ``day``."""
        y, m, d = civil_from_days(day)
        if self.yearly:
            return y if (m, d) >= (self.smonth, self.sday) else y - 1
        index = y * 12 + m - 1
        return index if d >= self.sday else index - 1

    def segments(self, units, rate, cycle_units, constant):
        """Split ``units`` of energy into [(units, price)] parts.

        ``cycle_units`` is the energy already used in this tier cycle, so a
        batch that crosses a tier threshold is charged exactly on each side.
        """
        base = self.tou_prices[rate] if self.has_tou else self.price
        if not self.has_tiers:
            return [(units, base)]
        adder = self.kind == "tiered_tou"
        out = []
        used = cycle_units
        left = units
        tier = 0
        limits = self.tier_limits_wh
        while tier < len(limits) and used >= limits[tier] * constant:
            tier += 1
        while left > 0:
            if tier < len(limits):
                room = limits[tier] * constant - used
                part = left if left < room else room
            else:
                part = left
            price = self.tier_prices[tier] + (base if adder else 0)
            out.append((part, price))
            used += part
            left -= part
            tier += 1
        return out
