"""Frozen readings: daily (00:00), monthly (settlement day) and load profile.

Freezes are keyed by local day numbers, never by "has the clock passed
midnight", so a clock set backwards never re-runs a freeze and a jump
forward (or a power cut over midnight) fills in each missed day, as
meters do for settlement.
"""

from agent.calendar import civil_from_days, day_start
from agent.config import INT, Field, between

SCHEMA = {
    "daily_keep": Field(INT, 62, between(1, 400), doc="daily freezes kept (meters keep 62)"),
    "monthly_keep": Field(INT, 12, between(1, 120), doc="monthly freezes kept"),
    "settlement_day": Field(INT, 1, between(1, 28), doc="day of the month of the monthly (settlement) freeze"),
    "profile_minutes": Field(INT, 15, between(1, 1440), doc="load profile period in minutes (1440 must be a multiple)"),
    "profile_keep": Field(INT, 96, between(0, 8928), doc="load profile periods kept (0 = no profile)"),
}

MISSED_DAYS_MAX = 62  # cap on catch-up freezes after a long outage or clock jump


class Ring:
    """A fixed-size store of the last ``keep`` records of ``width`` ints.

    One int list per field (``cols``), grown until it holds ``keep`` values
    and then overwritten in turn: a word per value where nested lists cost
    several objects per record, and no block much larger than ``keep``
    words, so a fragmented heap never has to find a big one.
    """

    __slots__ = ("keep", "width", "cols", "count", "next")

    def __init__(self, keep, width):
        self.keep = keep
        self.width = width
        self.cols = [[] for _ in range(width)]
        self.count = 0  # records held
        self.next = 0  # slot the next record goes to

    def push(self, values):
        """Store one record (``width`` ints), dropping the oldest if full."""
        if not self.keep:
            return
        at = self.next
        cols = self.cols
        if self.count < self.keep:
            for k in range(self.width):
                cols[k].append(values[k])
        else:
            for k in range(self.width):
                cols[k][at] = values[k]
        self.next = (self.next + 1) % self.keep
        if self.count < self.keep:
            self.count += 1

    def newest(self, i):
        """Slot in ``cols`` of the ``i``-th newest record (0 = newest)."""
        return (self.next - 1 - i) % self.keep

    def snapshot(self):
        """The records oldest first, flat (independent of the ring's layout)."""
        out = []
        for i in range(self.count - 1, -1, -1):
            at = self.newest(i)
            for col in self.cols:
                out.append(col[at])
        return out

    def restore(self, flat, what):
        """Load a ``snapshot`` (keeping the newest ``keep`` if it holds more)."""
        width = self.width
        if not isinstance(flat, list) or len(flat) % width:
            raise ValueError("freeze snapshot: %s must be a flat list of %d-int records" % (what, width))
        for v in flat:
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError("freeze snapshot: %s holds a non-integer %r" % (what, v))
        self.cols = [[] for _ in range(width)]
        self.count = 0
        self.next = 0
        for at in range(0, len(flat), width):
            self.push(flat[at : at + width])


def _rows(ring):
    """Freezes newest first, as [wall, energy_wh, [4 rate Wh], balance] lists."""
    out = []
    c = ring.cols
    for i in range(ring.count):
        at = ring.newest(i)
        out.append([c[0][at], c[1][at], [c[2][at], c[3][at], c[4][at], c[5][at]], c[6][at]])
    return out


class Freezer:
    """Keeps the frozen readings of one meter.

    Freezes are stored as 7 ints each (day_start_wall, energy_wh, 4 rate
    Wh, balance) and the load profile as the Wh of consecutive periods,
    with ``lp_top`` the start wall of the newest closed period; ``daily``,
    ``monthly`` and ``profile`` build the public nested-list form on demand.
    """

    __slots__ = ("sday", "lp_s", "last_day", "last_month", "_daily", "_monthly", "lp_period", "lp_start_wh", "lp_top", "_profile")

    def __init__(self, cfg):
        self.sday = cfg["settlement_day"]
        self.lp_s = cfg["profile_minutes"] * 60
        self.last_day = None  # local day number of the newest daily freeze boundary seen
        self.last_month = None
        self._daily = Ring(cfg["daily_keep"], 7)
        self._monthly = Ring(cfg["monthly_keep"], 7)
        self.lp_period = None
        self.lp_start_wh = 0
        self.lp_top = 0  # start wall of the newest closed profile period
        self._profile = Ring(cfg["profile_keep"], 1)

    @property
    def daily(self):
        """Daily (and on-demand) freezes, newest first: [day_start_wall, energy_wh, [4 rate Wh], balance]."""
        return _rows(self._daily)

    @property
    def monthly(self):
        """Monthly freezes, newest first, laid out as ``daily``."""
        return _rows(self._monthly)

    @property
    def profile(self):
        """Closed load-profile periods, newest first: [period_start_wall, wh]."""
        p = self._profile
        return [[self.lp_top - i * self.lp_s, p.cols[0][p.newest(i)]] for i in range(p.count)]

    def month_of(self, day):
        y, m, d = civil_from_days(day)
        index = y * 12 + m - 1
        return index if d >= self.sday else index - 1

    def advance(self, day, tz_s, energy_wh, rate_wh, balance):
        """Time reached local ``day``: freeze every boundary crossed since last time.

        Returns the number of daily and monthly freezes made (for events).
        """
        made_daily = 0
        made_monthly = 0
        if self.last_day is None:
            self.last_day = day
            self.last_month = self.month_of(day)
            return 0, 0
        if day > self.last_day:
            first = self.last_day + 1
            if day - first >= MISSED_DAYS_MAX:
                first = day - MISSED_DAYS_MAX + 1
            for d in range(first, day + 1):
                self._daily.push(_record(day_start(d, tz_s), energy_wh, rate_wh, balance))
                made_daily += 1
                month = self.month_of(d)
                if month > self.last_month:
                    self.last_month = month
                    self._monthly.push(_record(day_start(d, tz_s), energy_wh, rate_wh, balance))
                    made_monthly += 1
            self.last_day = day
        return made_daily, made_monthly

    def next_day_wall(self, tz_s):
        """Wall second of the next daily freeze."""
        if self.last_day is None:
            return None
        return day_start(self.last_day + 1, tz_s)

    def profile_step(self, wall, tz_s, energy_wh):
        """Close load-profile periods that ended before ``wall``."""
        p = self._profile
        if not p.keep:
            return
        period = (wall + tz_s) // self.lp_s
        if self.lp_period is None:
            self.lp_period = period
            self.lp_start_wh = energy_wh
            return
        if period <= self.lp_period:
            return
        p.push((energy_wh - self.lp_start_wh,))
        gap = period - self.lp_period - 1
        if gap > p.keep:
            gap = p.keep
        for _ in range(gap):
            p.push((0,))
        self.lp_top = (period - 1) * self.lp_s - tz_s
        self.lp_period = period
        self.lp_start_wh = energy_wh

    def freeze_now(self, wall, energy_wh, rate_wh, balance):
        """An on-demand freeze (command or DL/T 645 0x16), kept with the daily ones."""
        self._daily.push(_record(wall, energy_wh, rate_wh, balance))

    def snapshot(self):
        return [self.last_day, self.last_month, self._daily.snapshot(), self._monthly.snapshot(), self.lp_period, self.lp_start_wh, self.lp_top, self._profile.snapshot()]

    def restore(self, snap):
        last_day, last_month, daily, monthly, lp_period, lp_start_wh, lp_top, profile = snap
        self._daily.restore(daily, "daily")
        self._monthly.restore(monthly, "monthly")
        self._profile.restore(profile, "profile")
        self.last_day, self.last_month, self.lp_period, self.lp_start_wh, self.lp_top = last_day, last_month, lp_period, lp_start_wh, lp_top


def _record(wall, energy_wh, rate_wh, balance):
    return (wall, energy_wh, rate_wh[0], rate_wh[1], rate_wh[2], rate_wh[3], balance)
