"""What happens to one virtual meter in a scenario, drawn from the seed.

``draw_plan`` turns a scenario's rates into one meter's concrete plan: its
household profile and customer kind, the instants of its power cuts, the
day its relay fails and how, its clock drift, its cover-open events, its
register deviation, a vacation, and, for a planted thief, the kind of
theft, when it starts and how much it hides.  The plan is a list of timed
happenings the runner delivers in order, plus a few constant traits.

Every draw comes from ``random.Random(derive_seed(seed, "plan", index))``,
so one meter's plan does not depend on how many meters run or in which
process; the same seed gives the same village.
"""

import random

from sim import derive_seed

DAY_S = 86400
YEAR_S = 365 * DAY_S


class MeterPlan:
    """One meter's traits and its timed happenings ``events`` [(wall, what, arg)]."""

    __slots__ = ("profile", "customer", "events", "miss_ppm", "drift_ppm", "register_ppm", "theft", "theft_start", "fraction_pm", "repair_s")

    def __init__(self):
        self.profile = None
        self.customer = None
        self.events = []
        self.miss_ppm = 0
        self.drift_ppm = 0
        self.register_ppm = 0
        self.theft = None  # kind of theft (ground truth), or None
        self.theft_start = None
        self.fraction_pm = 0  # per mille of the load hidden by a bypass or pulse tamper
        self.repair_s = 0


def _pick(rng, weights):
    """A key of ``weights`` (dict name -> int weight), by weight; None if empty."""
    keys = sorted(k for k in weights if weights[k] > 0)
    if not keys:
        return None
    pick = rng.random() * sum(weights[k] for k in keys)
    for k in keys:
        if pick < weights[k]:
            return k
        pick -= weights[k]
    return keys[-1]


def _chance(rng, per_mille):
    return per_mille > 0 and rng.random() * 1000 < per_mille


def draw_plan(scenario, index, seed, t0, end):
    """The ``MeterPlan`` of meter ``index`` over [t0, end)."""
    rng = random.Random(derive_seed(seed, "plan", index))
    d = scenario.data
    f = d["faults"]
    th = d["theft"]
    plan = MeterPlan()
    plan.profile = _pick(rng, d["households"])
    plan.customer = _pick(rng, d["customers"])
    span = end - t0
    ev = plan.events

    # Power cuts: a Poisson number of outages per meter over the span.
    mean = f["power_cuts_per_year"] * span / YEAR_S
    n = 0
    if mean > 0:
        # Knuth's method: fine for the small means a scenario uses.
        limit = pow(2.718281828459045, -mean)
        p = rng.random()
        while p > limit and n < 10000:
            n += 1
            p *= rng.random()
    for _ in range(n):
        at = t0 + rng.randrange(span)
        dur = rng.randint(f["power_cut_min_s"], f["power_cut_max_s"])
        ev.append((at, "power_fail", at + dur))

    # Relay failures (at most one per meter; the first that fires wins).
    for fault in ("welded", "stuck", "open_set", "open_reset"):
        if _chance(rng, f["relay_%s_per_mille" % fault]):
            at = t0 + rng.randrange(span)
            ev.append((at, "relay_fault", fault))
            if f["relay_repair_days"]:
                ev.append((at + f["relay_repair_days"] * DAY_S, "relay_repair", fault))
            break
    plan.miss_ppm = f["relay_miss_ppm"]

    if f["clock_drift_ppm"]:
        plan.drift_ppm = rng.randint(-f["clock_drift_ppm"], f["clock_drift_ppm"])
        step = f["clock_sync_days"] * DAY_S
        t = t0 + step
        while t < end:
            ev.append((t, "clock_sync", None))
            t += step
    if f["register_drift_ppm"]:
        plan.register_ppm = rng.randint(-f["register_drift_ppm"], f["register_drift_ppm"])
    if _chance(rng, f["tamper_per_mille"]):
        at = t0 + rng.randrange(span)
        ev.append((at, "cover", True))
        ev.append((at + rng.randint(600, 7200), "cover", False))
    if _chance(rng, f["vacation_per_mille"]):
        at = t0 + rng.randrange(span)
        ev.append((at, "vacation", True))
        ev.append((at + rng.randint(7, 21) * DAY_S, "vacation", False))

    if _chance(rng, th["thieves_per_mille"]):
        first = t0 + th["start_day_min"] * DAY_S
        if first < end:
            plan.theft = _pick(rng, th["kinds"])
            plan.theft_start = first + rng.randrange(end - first)
            plan.fraction_pm = rng.randint(th["fraction_pct_min"] * 10, th["fraction_pct_max"] * 10)
            ev.append((plan.theft_start, "theft", plan.theft))
            if plan.theft != "relay_bypass" and rng.randint(1, 100) <= th["cover_open_pct"]:
                ev.append((plan.theft_start - 60, "cover", True))
                ev.append((plan.theft_start + rng.randint(300, 1800), "cover", False))

    # A stable order for happenings at the same second.
    ev.sort(key=lambda e: (e[0], e[1], str(e[2])))
    return plan


def operator_targets(op, meters, seed, number):
    """Meter indices operator action ``number`` goes to."""
    if op["meters"] is not None:
        return sorted(set(op["meters"]))
    if op["per_mille"] >= 1000:
        return list(range(meters))
    rng = random.Random(derive_seed(seed, "operator", number))
    return [i for i in range(meters) if rng.random() * 1000 < op["per_mille"]]
