"""A scripted prepaid customer: when they top up, and how much.

Three kinds of customer (drawn from the seed unless given):

- ``prompt``: tops up some hours after the alarm-1 reminder (SMS);
- ``waits_for_cut``: ignores reminders and tops up some hours after the
  supply is cut;
- ``payday``: tops up on a fixed day of the month (a habit), with a larger
  amount, and after a cut if the money runs out before payday.

Everyone who is cut off tops up eventually (the reaction to a cut is
faster than to a reminder).  An action that would fall at night (23:00 to
07:00 local) moves to the next morning, 07:00 to 09:00: people sleep.
Amounts come from a realistic set of 20/50/100/200 CNY, in money minor
units (MONEY_SCALE = 10000 per CNY).

The driver calls ``on_alarm`` and ``on_cut`` when the meter reports them,
asks ``next_action`` when the customer will next act (to schedule its
clock) and calls ``take_action`` at that time to get the amount to top up.
Every random draw comes from the customer's own ``random.Random``, so the
same seed and the same calls give the same actions.
"""

import calendar
import random
import time

from sim import derive_seed
from sim.household import check_tz

MONEY_SCALE = 10000  # minor units per CNY, as agent.account.account.MONEY_SCALE
AMOUNTS = (20 * MONEY_SCALE, 50 * MONEY_SCALE, 100 * MONEY_SCALE, 200 * MONEY_SCALE)
HOUR = 3600
DAY_S = 86400

# Per kind: delay after alarm 1 and after a cut as (min, mode, max) seconds
# of a triangular distribution (None = does not react), and the weights of
# AMOUNTS.
KINDS = {
    "prompt": {
        "alarm_delay_s": (HOUR // 2, 4 * HOUR, 48 * HOUR),
        "cut_delay_s": (HOUR // 4, HOUR, 12 * HOUR),
        "weights": (20, 40, 30, 10),
    },
    "waits_for_cut": {
        "alarm_delay_s": None,
        "cut_delay_s": (HOUR // 2, 2 * HOUR, 24 * HOUR),
        "weights": (30, 40, 20, 10),
    },
    "payday": {
        "alarm_delay_s": None,
        "cut_delay_s": (HOUR, 8 * HOUR, 36 * HOUR),
        "weights": (40, 40, 20, 0),  # after a cut, before payday: what is left
        "payday_weights": (0, 20, 40, 40),
    },
}
KIND_WEIGHTS = (("prompt", 60), ("waits_for_cut", 25), ("payday", 15))
NIGHT_START_H = 23
NIGHT_END_H = 7


class Customer:
    """One customer's top-up behaviour; see the module docstring."""

    __slots__ = ("seed", "kind", "tz_offset_s", "payday", "rng", "pending", "_payday_at", "_payday_amount", "taken")

    def __init__(self, seed, kind=None, tz_offset_s=28800, payday=None):
        self.seed = seed
        self.rng = random.Random(derive_seed(seed, "customer"))
        self.tz_offset_s = check_tz(tz_offset_s)
        if kind is None:
            kind = self._weighted([k for k, _ in KIND_WEIGHTS], [w for _, w in KIND_WEIGHTS])
        elif kind not in KINDS:
            raise ValueError("customer kind %r is unknown (known: %s)" % (kind, ", ".join(sorted(KINDS))))
        self.kind = kind
        drawn_day = self.rng.randint(1, 28)
        if payday is None:
            payday = drawn_day
        elif not isinstance(payday, int) or isinstance(payday, bool) or not 1 <= payday <= 28:
            raise ValueError("customer payday must be a day of the month 1..28, got %r" % (payday,))
        self.payday = payday if kind == "payday" else None
        self.pending = None  # reactive top-up: (wall, amount, reason, trigger_wall)
        self._payday_at = None  # next payday top-up (wall), once known
        self._payday_amount = 0
        self.taken = []  # every action taken: (wall, amount, reason, trigger_wall)

    def _weighted(self, items, weights):
        pick = self.rng.random() * sum(weights)
        for item, weight in zip(items, weights):
            if pick < weight:
                return item
            pick -= weight
        return items[-1]

    def _amount(self, weights_key="weights"):
        return self._weighted(AMOUNTS, KINDS[self.kind][weights_key])

    def _delay(self, spec):
        low, mode, high = spec
        return int(self.rng.triangular(low, high, mode))

    def _awake(self, wall):
        """``wall`` if the customer is awake then, else 07:00-09:00 next morning."""
        local = wall + self.tz_offset_s
        hour = local % DAY_S // HOUR
        if NIGHT_END_H <= hour < NIGHT_START_H:
            return wall
        morning = local - local % DAY_S + NIGHT_END_H * HOUR
        if hour >= NIGHT_START_H:
            morning += DAY_S
        return morning - self.tz_offset_s + self.rng.randint(0, 2 * HOUR)

    def _schedule(self, wall, spec, reason):
        at = self._awake(wall + self._delay(spec))
        if self.pending is None or at < self.pending[0]:
            self.pending = (at, self._amount(), reason, wall)

    def on_alarm(self, level, wall):
        """The meter raised balance alarm ``level`` (1 or 2) at ``wall``."""
        spec = KINDS[self.kind]["alarm_delay_s"]
        if level == 1 and spec is not None and self.pending is None:
            self._schedule(wall, spec, "alarm")

    def on_cut(self, wall):
        """The supply was cut for lack of credit at ``wall``."""
        self._schedule(wall, KINDS[self.kind]["cut_delay_s"], "cut")

    def _next_payday(self, wall):
        """First payday top-up time after ``wall``: on the payday, 09:00-21:00 local."""
        local = wall + self.tz_offset_s
        tm = time.gmtime(local)
        year, month = tm.tm_year, tm.tm_mon
        while True:
            day_start = calendar.timegm((year, month, self.payday, 0, 0, 0))
            at_local = day_start + 9 * HOUR + self.rng.randint(0, 12 * HOUR)
            if at_local > local:
                return at_local - self.tz_offset_s
            month += 1
            if month > 12:
                month = 1
                year += 1

    def _due(self, wall):
        """The next action as (wall, amount, is_payday), or None."""
        if self.payday is None:
            pending = self.pending
            return None if pending is None else (pending[0], pending[1], False)
        if self._payday_at is None:
            self._payday_at = self._next_payday(wall)
            self._payday_amount = self._amount("payday_weights")
        if self.pending is None or self._payday_at < self.pending[0]:
            return self._payday_at, self._payday_amount, True
        return self.pending[0], self.pending[1], False

    def next_action(self, wall):
        """When the customer next acts, as (wall, amount), or None."""
        due = self._due(wall)
        return None if due is None else (due[0], due[1])

    def take_action(self, wall):
        """Top up now if an action is due by ``wall``: the amount, or None.

        A payday top-up also settles a pending reaction to an alarm or a cut.
        """
        if self.pending is None and self.payday is None:
            return None  # the common case, checked first: runners ask every step
        due = self._due(wall)
        if due is None or due[0] > wall:
            return None
        at, amount, is_payday = due
        if is_payday:
            self.taken.append((at, amount, "payday", at))
            local = at + self.tz_offset_s
            self._payday_at = self._next_payday(local - local % DAY_S + DAY_S - self.tz_offset_s)
            self._payday_amount = self._amount("payday_weights")
        else:
            self.taken.append(self.pending)
        self.pending = None
        return amount
