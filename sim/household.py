"""A seeded household load model: how many watts a home draws, and when.

Each household draws its own traits once from its seed (mean daily use,
base load, wake and bed times, which appliances it owns and their ratings,
whether someone is home in the daytime).  Each local week is then planned
from ``(seed, week)``, day by day: a night base load, morning and evening
peaks, appliance runs (kettle, rice cooker, induction hob, water heater,
fan, air conditioner, heater, washing machine, water pump, lights, TV),
a weekday/weekend difference and a seasonal one.  The day's shape is then
scaled so its energy matches a target drawn around the household's mean,
which keeps the fleet's consumption realistic and configurable.

Time grid: every load change falls on a 36-second grid counted from local
midnight (100 steps an hour, 2,400 a day).  36 W*s is exactly 10 mWh, so
every segment holds a whole number of milli-watt-hours and energy between
any two instants is exact integer arithmetic: splitting an interval never
gains or loses a milli-watt-hour (see ``energy_mwh``).

Floats appear only inside the random draws; every output (watts, wall
seconds, mWh) is an int, and the same seed gives the same plan on every
CPython run.
"""

import math
import random
import time
from bisect import bisect_right

from sim import derive_seed

DAY_S = 86400
STEP_S = 36  # grid step: 36 W*s = 10 mWh exactly
STEPS_PER_HOUR = 100
STEPS_PER_DAY = 2400
MWH_PER_WATT_STEP = 10
SPLIT_SHIFT = 24  # task watts stay below 2**24 in a packed level
SPLIT = 1 << SPLIT_SHIFT
SPLIT_MASK = SPLIT - 1
K_MIN = 0.25  # comfort loads scale within K_MIN..K_MAX before tasks scale too
K_MAX = 2.5

# Defaults of the "rural" profile; a profile dict overrides any of them.
RURAL = {
    "mean_wh_min": 3000,  # household mean daily use is drawn log-uniformly in [min, max]
    "mean_wh_max": 15000,
    "mean_wh": 0,  # > 0: fix the household's mean daily use instead of drawing it
    "weekend_factor": 1.15,  # weekend day / weekday energy
    "day_sigma": 0.2,  # spread of one day's energy around its expectation (lognormal)
    "seasonal": True,  # summer cooling and winter heating change daily use
    "max_w": 8000,  # a household never draws more: keep it below the meter's supply_max_w
    "min_w": 5,  # standby floor: the meter never sees a dead-still house
}

PROFILES = {
    "rural": {},
    # Small homes that run out of credit quickly: useful for short demos.
    "small": {"mean_wh_min": 2000, "mean_wh_max": 5000},
    "large": {"mean_wh_min": 10000, "mean_wh_max": 30000, "max_w": 14000},
}

_INT_KEYS = ("mean_wh_min", "mean_wh_max", "mean_wh", "max_w", "min_w")
_FLOAT_KEYS = ("weekend_factor", "day_sigma")


def resolve_profile(profile):
    """Return the full parameter dict for ``profile``.

    ``profile`` is None (rural), a preset name from ``PROFILES`` or a dict
    overriding keys of the rural profile.  Raises ValueError naming the key
    on anything else.
    """
    params = dict(RURAL)
    if profile is None:
        return params
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(
                "household profile %r is unknown (known: %s)" % (profile, ", ".join(sorted(PROFILES)))
            )
        params.update(PROFILES[profile])
        return params
    if not isinstance(profile, dict):
        raise ValueError("household profile must be a preset name or a dict, got %r" % (profile,))
    for key in sorted(profile):
        if key not in RURAL:
            raise ValueError(
                "household profile key %r is unknown (known: %s)" % (key, ", ".join(sorted(RURAL)))
            )
        value = profile[key]
        if key in _INT_KEYS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("household profile key %r must be an integer >= 0, got %r" % (key, value))
        elif key in _FLOAT_KEYS:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 10:
                raise ValueError("household profile key %r must be a number in 0..10, got %r" % (key, value))
        elif not isinstance(value, bool):
            raise ValueError("household profile key %r must be true or false, got %r" % (key, value))
        params[key] = value
    if params["mean_wh_min"] < 100 or params["mean_wh_max"] < params["mean_wh_min"]:
        raise ValueError(
            "household profile: need 100 <= mean_wh_min <= mean_wh_max, got %d and %d"
            % (params["mean_wh_min"], params["mean_wh_max"])
        )
    if params["max_w"] < 100 or params["min_w"] > params["max_w"]:
        raise ValueError("household profile: need max_w >= 100 and min_w <= max_w")
    return params


def check_tz(tz_offset_s):
    """Validate a UTC offset in seconds (a multiple of 15 minutes, within +-14 h)."""
    if not isinstance(tz_offset_s, int) or isinstance(tz_offset_s, bool):
        raise ValueError("tz_offset_s must be an integer number of seconds, got %r" % (tz_offset_s,))
    if tz_offset_s % 900 or not -14 * 3600 <= tz_offset_s <= 14 * 3600:
        raise ValueError("tz_offset_s must be a multiple of 900 within +-50400, got %d" % tz_offset_s)
    return tz_offset_s


class DayPlan:
    """One local day's load: segments of constant watts.

    ``starts[i]`` is the wall second segment ``i`` begins (``starts[0]`` is
    local midnight), ``watts[i]`` its power, ``cum[i]`` the mWh used from
    midnight to ``starts[i]``; ``total`` is the day's mWh; ``scale`` the
    factor applied to comfort loads (diagnostics).
    """

    __slots__ = ("day", "start", "end", "starts", "watts", "cum", "total", "scale")

    def __init__(self, day, start, starts, watts, cum, total, scale):
        self.day = day
        self.scale = scale  # how far comfort loads were scaled to meet the day's target
        self.start = start
        self.end = start + DAY_S
        self.starts = starts
        self.watts = watts
        self.cum = cum
        self.total = total

    def index(self, wall):
        """Index of the segment holding ``wall`` (which must be in the day)."""
        return bisect_right(self.starts, wall) - 1

    def mwh_to(self, wall):
        """mWh used from local midnight to ``wall`` (floored within a segment)."""
        i = bisect_right(self.starts, wall) - 1
        return self.cum[i] + self.watts[i] * (wall - self.starts[i]) * 10 // STEP_S


class Household:
    """A seeded household: ``power_w(wall)`` watts, changing at ``next_change``.

    ``seed`` is any int or str; ``profile`` a preset name, a dict of
    overrides (see ``RURAL``) or None; ``tz_offset_s`` the local time's UTC
    offset (China: 28800).  Day plans are built a week at a time on demand
    and the last two weeks are cached, so stepping forward through time
    costs O(1) per segment.
    """

    CACHE_WEEKS = 2

    def __init__(self, seed, profile=None, tz_offset_s=28800):
        self.seed = seed
        self.params = resolve_profile(profile)
        self.tz_offset_s = check_tz(tz_offset_s)
        self._week_key = derive_seed(seed, "household-week") << 24
        self._rng = random.Random()
        self._cache = {}
        self._draw_traits(random.Random(derive_seed(seed, "household")))

    # ------------------------------------------------------------ traits

    def _draw_traits(self, rng):
        p = self.params
        lo, hi = p["mean_wh_min"], p["mean_wh_max"]
        if p["mean_wh"]:
            mean = p["mean_wh"]
        else:
            mean = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        self.mean_wh = mean
        # size in 0..1 places the household between a small and a large
        # home of the rural range; ownership and ratings grow with it.
        size = (math.log(max(mean, 3000)) - math.log(3000)) / (math.log(15000) - math.log(3000))
        size = min(1.0, size)
        self.size = size
        self.base_w = int(rng.uniform(25, 60) + 120 * size)  # fridge, freezer, standby
        self.wake_h = rng.uniform(5.5, 7.0)
        self.weekend_lie_in_h = rng.uniform(0.5, 1.5)
        self.bed_h = rng.uniform(21.5, 23.5)
        self.home_daytime = rng.random() < 0.45  # farmers, elderly, small shop at home
        owns = {}
        chances = (
            ("lights", 1.0, 40 + 100 * size, 80 + 140 * size),
            ("tv", 0.9, 60, 150),
            ("kettle", 0.7, 1500, 2200),
            ("rice_cooker", 0.95, 500, 900),
            ("induction", 0.35 + 0.4 * size, 1200, 2100),
            ("water_heater", 0.3 + 0.6 * size, 1500, 3000),
            ("fan", 0.8, 40, 70),
            # Larger homes run more than one air conditioner or heater.
            ("ac", 0.1 + 0.6 * size, 800 * (1 + 2 * size), 1500 * (1 + 2 * size)),
            ("heater", 0.1 + 0.3 * size, 1000 * (1 + size), 2000 * (1 + size)),
            ("washer", 0.4 + 0.4 * size, 300, 600),
            ("pump", 0.3, 370, 750),
        )
        for name, chance, w_lo, w_hi in chances:
            # Draw every rating even when not owned, so owning one appliance
            # does not shift the random stream of the next.
            owned = rng.random() < chance
            rating = int(rng.uniform(w_lo, w_hi))
            if owned:
                owns[name] = rating
        self.appliances = owns

    # ------------------------------------------------------------ day plans

    def local_day(self, wall):
        """Local day number (days since 1970-01-01 local) holding ``wall``."""
        return (wall + self.tz_offset_s) // DAY_S

    def plan(self, day):
        """The ``DayPlan`` of local day number ``day`` (cached by week)."""
        week = (day + 3) // 7  # weeks start on Monday (1970-01-01 was a Thursday)
        plans = self._cache.get(week)
        if plans is None:
            if len(self._cache) >= self.CACHE_WEEKS:
                self._cache.pop(min(self._cache) if week > max(self._cache) else max(self._cache))
            # One seed per week: seeding costs as much as planning a day.
            self._rng.seed(self._week_key + (week & 0xFFFFFF))
            first = week * 7 - 3
            plans = [self._build(first + i) for i in range(7)]
            self._cache[week] = plans
        return plans[day - week * 7 + 3]

    def _build(self, day):
        rng = self._rng
        p = self.params
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        weekend = weekday >= 5
        if p["seasonal"]:
            yday = time.gmtime(day * DAY_S).tm_yday
            summer = max(0.0, math.cos(2 * math.pi * (yday - 200) / 365.25))
            winter = max(0.0, math.cos(2 * math.pi * (yday - 15) / 365.25))
        else:
            summer = winter = 1 / math.pi
        tasks, comfort = self._runs(rng, weekday, weekend, summer, winter)

        # Natural energy of the day's shape, in watt-steps: fixed task loads
        # and scalable comfort loads (with the base load).  One dict of
        # level changes carries both as ``task + comfort * SPLIT`` so a
        # single sorted sweep recovers each part.
        fixed = 0
        scalable = self.base_w * STEPS_PER_DAY
        delta = {0: self.base_w * SPLIT}
        for runs, unit in ((tasks, 1), (comfort, SPLIT)):
            for start_h, end_h, watts in runs:
                a = int(start_h * STEPS_PER_HOUR)
                b = int(end_h * STEPS_PER_HOUR)
                a = 0 if a < 0 else a
                b = STEPS_PER_DAY if b > STEPS_PER_DAY else b
                if b <= a or watts <= 0:
                    continue
                if unit == 1:
                    fixed += watts * (b - a)
                else:
                    scalable += watts * (b - a)
                delta[a] = delta.get(a, 0) + watts * unit
                delta[b] = delta.get(b, 0) - watts * unit

        # The day's energy target around the household's mean.
        wk = p["weekend_factor"]
        factor = 7.0 / (5.0 + 2.0 * wk)  # so a week averages the mean
        if weekend:
            factor *= wk
        if p["seasonal"]:
            # Zero-mean over a year: max(0, cos) averages 1/pi.
            factor *= 1.0 + 0.35 * (summer - 1 / math.pi) + 0.15 * (winter - 1 / math.pi)
        sigma = p["day_sigma"]
        if sigma:
            factor *= math.exp(rng.gauss(0.0, sigma) - sigma * sigma / 2)
        target = self.mean_wh * 100.0 * factor  # 1 Wh = 100 watt-steps
        # Meet it by scaling the comfort loads (a bigger home has more
        # lights, a bigger fridge and water heater).  On a busy day of a
        # small home the task loads scale down too; on a quiet day with
        # little to scale (past K_MAX) the day simply uses less.
        k_task = 1.0
        k_comfort = (target - fixed) / scalable
        if k_comfort > K_MAX:
            k_comfort = K_MAX
        elif k_comfort < K_MIN and fixed:
            k_comfort = K_MIN
            k_task = (target - K_MIN * scalable) / fixed
            k_task = K_MIN if k_task < K_MIN else k_task
        lo_w = p["min_w"]
        hi_w = p["max_w"]

        # Sweep the runs into constant-power segments on the step grid.
        day_start = day * DAY_S - self.tz_offset_s
        starts = []
        watts = []
        cum = []
        total = 0
        level = 0
        last_w = -1
        last_s = 0
        for s in sorted(delta):
            level += delta[s]
            if s >= STEPS_PER_DAY:
                break
            w = int((level & SPLIT_MASK) * k_task + (level >> SPLIT_SHIFT) * k_comfort + 0.5)
            w = lo_w if w < lo_w else hi_w if w > hi_w else w
            if w == last_w:
                continue
            if last_w >= 0:
                total += last_w * (s - last_s) * MWH_PER_WATT_STEP
            starts.append(day_start + s * STEP_S)
            watts.append(w)
            cum.append(total)
            last_w = w
            last_s = s
        total += last_w * (STEPS_PER_DAY - last_s) * MWH_PER_WATT_STEP
        return DayPlan(day, day_start, starts, watts, cum, total, k_comfort)

    def _runs(self, rng, weekday, weekend, summer, winter):
        """Appliance runs of one day: two lists of (start_h, end_h, watts).

        ``tasks`` (cooking, kettle, pump, washing) have fixed ratings and
        durations; ``comfort`` loads (lights, TV, water heater, fan, air
        conditioning, heating) scale with the household's size and the
        day's energy target, along with the base load.
        """
        u = rng.uniform
        has = self.appliances
        tasks = []
        comfort = []
        home = weekend or self.home_daytime
        wake = self.wake_h + (self.weekend_lie_in_h if weekend else 0.0) + u(-0.25, 0.25)
        bed = self.bed_h + u(-0.5, 0.5) + (0.5 if weekday in (4, 5) else 0.0)
        dusk = 18.3 + 1.2 * summer - 0.8 * winter + u(-0.2, 0.2)
        dawn = 6.0 + 1.2 * winter - 0.8 * summer
        lights = has.get("lights", 0)
        comfort.append((dusk, bed, lights))
        if wake < dawn:
            comfort.append((wake, min(dawn, wake + 1.0), lights))
        if "tv" in has and rng.random() < 0.85:
            comfort.append((19.0 + u(-0.5, 0.5), bed - u(0.0, 0.5), has["tv"]))
        if "kettle" in has:
            if rng.random() < 0.8:
                t = wake + u(0.05, 0.3)
                tasks.append((t, t + u(0.05, 0.1), has["kettle"]))
            if rng.random() < 0.4:
                t = 20.0 + u(-1.0, 1.0)
                tasks.append((t, t + u(0.05, 0.08), has["kettle"]))
        if "pump" in has:
            if rng.random() < 0.7:
                t = wake + u(0.0, 1.0)
                tasks.append((t, t + u(0.15, 0.35), has["pump"]))
            if rng.random() < 0.5:
                t = 17.5 + u(-0.5, 0.5)
                tasks.append((t, t + u(0.1, 0.25), has["pump"]))
        rice = has.get("rice_cooker", 0)
        hob = has.get("induction", 0)
        if rice and rng.random() < 0.35:
            t = wake + 0.1
            tasks.append((t, t + u(0.3, 0.6), rice))
        if home and rng.random() < 0.8:
            t = 11.0 + u(0.0, 0.7)
            tasks.append((t, t + u(0.4, 0.7), rice or hob))
            if hob:
                t += 0.6
                tasks.append((t, t + u(0.2, 0.4), hob))
        if rng.random() < 0.95:
            t = 17.0 + u(0.0, 1.0)
            tasks.append((t, t + u(0.5, 0.8), rice or hob))
            if hob and rng.random() < 0.9:
                t += 0.3
                tasks.append((t, t + u(0.2, 0.5), hob))
        if "water_heater" in has and rng.random() < 0.6 + 0.35 * summer:
            t = u(19.5, 21.5)
            # More people, more showers; colder water takes longer to heat.
            hours = u(0.3, 0.8) * (1.0 + 1.5 * self.size) * (1.0 + 0.5 * winter)
            comfort.append((t, t + hours, has["water_heater"]))
        cooling = rng.random() < summer
        if cooling and "ac" in has:
            if home:
                comfort.append((13.5 + u(-0.5, 0.5), 17.0 + u(-0.5, 0.5), has["ac"]))
            comfort.append((20.0 + u(-0.5, 1.0), 24.0, has["ac"]))
            comfort.append((0.0, u(1.0, 4.0), has["ac"]))
        elif "fan" in has and rng.random() < summer * 1.2:
            if home:
                comfort.append((13.0, 17.0 + u(-0.5, 0.5), has["fan"]))
            comfort.append((bed - 1.0, 24.0, has["fan"]))
            comfort.append((0.0, u(2.0, 5.0), has["fan"]))
        if "heater" in has and rng.random() < winter:
            # A thermostat cycles the heater: model its average draw.
            comfort.append((18.5 + u(-0.5, 0.5), bed - 0.5, int(has["heater"] * 0.6)))
        if "washer" in has and rng.random() < (0.5 if weekend else 0.12):
            t = wake + 1.5 + u(0.0, 2.0)
            tasks.append((t, t + u(0.6, 1.0), has["washer"]))
        return tasks, comfort

    # ------------------------------------------------------------ queries

    def _use_tz(self, tz_offset_s):
        if tz_offset_s is not None and tz_offset_s != self.tz_offset_s:
            self.tz_offset_s = check_tz(tz_offset_s)
            self._cache = {}

    def power_w(self, wall, tz_offset_s=None):
        """Watts drawn at wall second ``wall``; constant until ``next_change``.

        ``tz_offset_s``, if given, moves the household to that UTC offset
        (its days are local days); by default the constructor's is used.
        """
        self._use_tz(tz_offset_s)
        plan = self.plan((wall + self.tz_offset_s) // DAY_S)
        return plan.watts[bisect_right(plan.starts, wall) - 1]

    def next_change(self, wall):
        """Wall second of the next change of ``power_w`` after ``wall``."""
        plan = self.plan((wall + self.tz_offset_s) // DAY_S)
        i = bisect_right(plan.starts, wall) - 1
        if i + 1 < len(plan.starts):
            return plan.starts[i + 1]
        # Across midnight the power may stay the same: look for a real change.
        current = plan.watts[i]
        for _ in range(3):
            plan = self.plan(plan.day + 1)
            if plan.watts[0] != current:
                return plan.start
            if len(plan.starts) > 1:
                return plan.starts[1]
        return plan.end

    def segments(self, t0, t1):
        """Yield (start, end, watts) segments of constant power covering [t0, t1)."""
        t = t0
        while t < t1:
            w = self.power_w(t)
            nxt = self.next_change(t)
            end = nxt if nxt < t1 else t1
            yield t, end, w
            t = end

    def energy_mwh(self, t0, t1):
        """Integer mWh used from wall ``t0`` to ``t1`` (``t0 <= t1``).

        Exact and additive: ``energy_mwh(a, b) + energy_mwh(b, c) ==
        energy_mwh(a, c)`` for any ``a <= b <= c``, because segments start on
        the 36 s grid where cumulative energy is a whole number of mWh.
        """
        if not isinstance(t0, int) or not isinstance(t1, int) or t1 < t0:
            raise ValueError("energy_mwh needs integer wall seconds t0 <= t1, got %r, %r" % (t0, t1))
        tz = self.tz_offset_s
        d0 = (t0 + tz) // DAY_S
        d1 = (t1 + tz) // DAY_S
        first = self.plan(d0)
        if d0 == d1:
            return first.mwh_to(t1) - first.mwh_to(t0)
        total = first.total - first.mwh_to(t0)
        for d in range(d0 + 1, d1):
            total += self.plan(d).total
        return total + self.plan(d1).mwh_to(t1)

    def day_energy_mwh(self, day):
        """mWh used over local day number ``day``."""
        return self.plan(day).total
