"""The customer's account: balance, charges, thresholds and payment mode.

Money is integer minor units.  A charge is ``units * price / (1000 * C)``
minor units; what does not make a whole unit is carried to the next
charge, so the total charged over any period is exactly the energy times
the price, whatever the batching.  A negative balance is overdraft; a
top-up pays it off first simply by being added.
"""

from agent.account.tariff import Tariff, tariff_field
from agent.calendar import parse_date, parse_hhmm
from agent.config import BOOL, INT, LIST, STR, TABLE, Field, at_least, one_of

MONEY_SCALE = 10000  # minor units per currency unit: 4-decimal prices are exact

PREPAID = "prepaid"
POSTPAID = "postpaid"


def check_friendly(f):
    for key in ("night_start", "night_end"):
        if f[key] and parse_hhmm(f[key]) is None:
            return "%s must be a time HH:MM, got %r" % (key, f[key])
    if bool(f["night_start"]) != bool(f["night_end"]):
        return "night_start and night_end go together"
    for d in f["holidays"]:
        if parse_date(d) is None:
            return "holidays must be dates YYYY-MM-DD, got %r" % (d,)
    return None


FRIENDLY_FIELDS = {
    "night_start": Field(STR, "", None, doc="no disconnection from this local time (HH:MM, empty = none)"),
    "night_end": Field(STR, "", None, doc="... until this local time"),
    "weekends": Field(BOOL, False, None, doc="no disconnection on Saturdays and Sundays"),
    "holidays": Field(LIST, [], None, doc="no disconnection on these dates (YYYY-MM-DD)"),
}


def _check_account(a):
    if a["alarm1"] < a["alarm2"]:
        return "alarm1 (%d) must be at least alarm2 (%d)" % (a["alarm1"], a["alarm2"])
    if a["hoarding"] and a["opening_balance"] > a["hoarding"]:
        return "opening_balance exceeds the hoarding limit"
    return None


ACCOUNT_FIELDS = {
    "mode": Field(STR, PREPAID, one_of(PREPAID, POSTPAID), doc="prepaid (cut when credit runs out) or postpaid (bill only)"),
    "opening_balance": Field(INT, 0, None, doc="balance at first start, minor units (10000 = 1 CNY)"),
    "alarm1": Field(INT, 300000, at_least(0), doc="alarm amount 1 (light, SMS reminder), minor units"),
    "alarm2": Field(INT, 100000, at_least(0), doc="alarm amount 2 (sound), minor units; alarm1 >= alarm2"),
    "overdraft": Field(INT, 0, at_least(0), doc="overdraft limit: supply continues until the balance falls below -overdraft"),
    "hoarding": Field(INT, 0, at_least(0), doc="hoarding limit: refuse a top-up that would exceed it (0 = none)"),
    "close_allowed": Field(INT, 0, None, doc="after a cut, the relay closes only once the balance reaches this"),
    "trip_delay_s": Field(INT, 1800, at_least(0), doc="seconds credit must stay exhausted before the cut"),
    "friendly": Field(TABLE, {}, check_friendly, FRIENDLY_FIELDS, "friendly-credit periods: no disconnection"),
}


def account_field():
    """The [account] table of the meter configuration."""
    return Field(TABLE, {}, _check_account, ACCOUNT_FIELDS, "money, thresholds and payment mode")


def active_tariff_field():
    """The [tariff] table."""
    return tariff_field("the active tariff", {})


LIMIT_NAMES = ("alarm1", "alarm2", "overdraft", "hoarding", "close_allowed")


class Account:
    """Balance and charging state of one meter."""

    __slots__ = (
        "constant",
        "mode",
        "balance",
        "charged",
        "credited",
        "carry",
        "cycle",
        "cycle_units",
        "limits",
        "trip_delay_s",
        "tariff",
        "passive",
        "passive_at",
        "friendly",
    )

    def __init__(self, cfg, tariff_cfg, constant):
        self.constant = constant
        self.mode = cfg["mode"]
        self.balance = cfg["opening_balance"]
        self.charged = 0
        self.credited = 0
        self.carry = 0
        self.cycle = None
        self.cycle_units = 0
        self.limits = {}
        for name in LIMIT_NAMES:
            self.limits[name] = cfg[name]
        self.trip_delay_s = cfg["trip_delay_s"]
        self.tariff = Tariff(tariff_cfg)
        self.passive = None
        self.passive_at = None
        self.friendly = cfg["friendly"]

    # -------------------------------------------------------------- money

    def charge(self, units, rate, day):
        """Debit ``units`` of energy used at ``rate`` on local ``day``; returns minor units."""
        cycle = self.tariff.cycle_of(day)
        if self.cycle is None or cycle > self.cycle:
            # A new tier cycle starts; a clock set backwards never reopens an old one.
            self.cycle = cycle
            self.cycle_units = 0
        denom = 1000 * self.constant
        num = self.carry
        for part, price in self.tariff.segments(units, rate, self.cycle_units, self.constant):
            num += part * price
        self.cycle_units += units
        whole = num // denom
        self.carry = num - whole * denom
        self.balance -= whole
        self.charged += whole
        return whole

    def would_hoard(self, amount):
        """True if adding ``amount`` would exceed the hoarding limit."""
        limit = self.limits["hoarding"]
        return limit > 0 and self.balance + amount > limit

    def credit(self, amount):
        """Add a top-up (pays off any overdraft first, by construction)."""
        self.balance += amount
        self.credited += amount

    def clear(self):
        """Clear credit (a management command): the balance goes to zero."""
        self.credited -= self.balance
        self.balance = 0

    # -------------------------------------------------------- conditions

    def exhausted(self):
        """Credit is used up: the balance passed the overdraft limit."""
        return self.mode == PREPAID and self.balance + self.limits["overdraft"] <= 0

    def may_close(self):
        """Enough credit to reconnect after a cut for arrears."""
        return self.mode == POSTPAID or (not self.exhausted() and self.balance >= self.limits["close_allowed"])

    def alarm_level(self):
        """0 none, 1 at or below alarm amount 1, 2 at or below alarm amount 2."""
        if self.mode != PREPAID:
            return 0
        if self.balance <= self.limits["alarm2"]:
            return 2
        if self.balance <= self.limits["alarm1"]:
            return 1
        return 0

    def is_friendly(self, day, minute, weekday, date_key):
        """True while disconnection for arrears is suspended."""
        f = self.friendly
        if f["weekends"] and weekday >= 6:
            return True
        if f["holidays"]:
            y, rest = date_key // 10000, date_key % 10000
            text = "%04d-%02d-%02d" % (y, rest // 100, rest % 100)
            if text in f["holidays"]:
                return True
        if f["night_start"]:
            start = parse_hhmm(f["night_start"])
            end = parse_hhmm(f["night_end"])
            if start <= end:
                return start <= minute < end
            return minute >= start or minute < end
        return False

    def friendly_edges(self):
        """Minutes of the day at which a friendly night window starts or ends."""
        f = self.friendly
        if not f["night_start"]:
            return ()
        return (parse_hhmm(f["night_start"]), parse_hhmm(f["night_end"]))

    # ----------------------------------------------------------- tariffs

    def set_passive(self, tariff_cfg, activate_at):
        """Install a second tariff that takes over at wall second ``activate_at``."""
        self.passive = tariff_cfg
        self.passive_at = activate_at

    def switch_tariff(self, wall):
        """Activate the passive tariff if its time has come; True if it did."""
        if self.passive is None or wall < self.passive_at:
            return False
        self.tariff = Tariff(self.passive)
        self.passive = None
        self.passive_at = None
        return True

    # ---------------------------------------------------------- snapshot

    def snapshot(self):
        """Plain-value state (limits in LIMIT_NAMES order)."""
        return [
            self.mode,
            self.balance,
            self.charged,
            self.credited,
            self.carry,
            self.cycle,
            self.cycle_units,
            [self.limits[n] for n in LIMIT_NAMES],
            self.trip_delay_s,
            self.tariff.cfg,
            self.passive,
            self.passive_at,
            self.friendly,
        ]

    def restore(self, snap):
        """Load a snapshot made by ``snapshot``."""
        (
            self.mode,
            self.balance,
            self.charged,
            self.credited,
            self.carry,
            self.cycle,
            self.cycle_units,
            limits,
            self.trip_delay_s,
            tariff_cfg,
            self.passive,
            self.passive_at,
            self.friendly,
        ) = snap
        for i in range(len(LIMIT_NAMES)):
            self.limits[LIMIT_NAMES[i]] = limits[i]
        self.tariff = Tariff(tariff_cfg)
