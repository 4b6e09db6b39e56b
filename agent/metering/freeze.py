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


class Freezer:
    """Keeps the frozen readings of one meter."""

    __slots__ = ("daily_keep", "monthly_keep", "sday", "lp_s", "lp_keep", "last_day", "last_month", "daily", "monthly", "lp_period", "lp_start_wh", "profile")

    def __init__(self, cfg):
        self.daily_keep = cfg["daily_keep"]
        self.monthly_keep = cfg["monthly_keep"]
        self.sday = cfg["settlement_day"]
        self.lp_s = cfg["profile_minutes"] * 60
        self.lp_keep = cfg["profile_keep"]
        self.last_day = None  # local day number of the newest daily freeze boundary seen
        self.last_month = None
        self.daily = []  # newest first: [day_start_wall, energy_wh, rate_wh, balance]
        self.monthly = []
        self.lp_period = None
        self.lp_start_wh = 0
        self.profile = []  # newest first: [period_start_wall, wh]

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
                self.daily.insert(0, [day_start(d, tz_s), energy_wh, list(rate_wh), balance])
                made_daily += 1
                month = self.month_of(d)
                if month > self.last_month:
                    self.last_month = month
                    self.monthly.insert(0, [day_start(d, tz_s), energy_wh, list(rate_wh), balance])
                    made_monthly += 1
            del self.daily[self.daily_keep :]
            del self.monthly[self.monthly_keep :]
            self.last_day = day
        return made_daily, made_monthly

    def next_day_wall(self, tz_s):
        """Wall second of the next daily freeze."""
        if self.last_day is None:
            return None
        return day_start(self.last_day + 1, tz_s)

    def profile_step(self, wall, tz_s, energy_wh):
        """Close load-profile periods that ended before ``wall``."""
        if not self.lp_keep:
            return
        period = (wall + tz_s) // self.lp_s
        if self.lp_period is None:
            self.lp_period = period
            self.lp_start_wh = energy_wh
            return
        if period <= self.lp_period:
            return
        self.profile.insert(0, [self.lp_period * self.lp_s - tz_s, energy_wh - self.lp_start_wh])
        gap = period - self.lp_period - 1
        if gap > self.lp_keep:
            gap = self.lp_keep
        for i in range(gap, 0, -1):
            self.profile.insert(0, [(period - i) * self.lp_s - tz_s, 0])
        del self.profile[self.lp_keep :]
        self.lp_period = period
        self.lp_start_wh = energy_wh

    def freeze_now(self, wall, energy_wh, rate_wh, balance):
        """An on-demand freeze (command or DL/T 645 0x16), kept with the daily ones."""
        self.daily.insert(0, [wall, energy_wh, list(rate_wh), balance])
        del self.daily[self.daily_keep :]

    def snapshot(self):
        return [self.last_day, self.last_month, self.daily, self.monthly, self.lp_period, self.lp_start_wh, self.profile]

    def restore(self, snap):
        self.last_day, self.last_month, self.daily, self.monthly, self.lp_period, self.lp_start_wh, self.profile = snap
