"""Simulator v0: virtual meters living through days, driven event by event.

Each virtual meter has a seeded household (its load), a pulse source (the
meter's S0 output), a latching relay model, a scripted customer who tops
up, and the real meter core (in-process, or in a MicroPython process).
Time jumps from one interesting instant to the next — a load change, a
deadline the core asked for, the customer's action, or the step limit —
and the pulses of each interval are delivered as one count, so a day costs
a few dozen events, not thousands of pulses.

Same seed, same output: every random draw comes from a ``random.Random``
seeded from (seed, meter, purpose).
"""

from agent.account.account import MONEY_SCALE
from agent.calendar import format_wall, parse_datetime
from agent.events import Alarm, Boot, PulseCoil, Publish, Pulses, RelayFeedback, TopUp
from sim import derive_seed
from sim.cores import LocalCore, MicroPythonCore, MicroPythonServer
from sim.customer import Customer
from sim.household import Household
from sim.pulses import PulseSource
from sim.relay_model import LatchingRelay

DEFAULT_START = "2026-01-01 00:00"
TZ_S = 8 * 3600

# The embedded demo configuration: a rural household on Guangdong-style
# monthly tiers, with the utility's 30 CNY reminder and a 30-minute trip delay.
DEFAULT_CONFIG = {
    "meter": {"constant": 3200, "tz_offset_min": 480, "supply_max_w": 13800},
    "account": {
        "mode": "prepaid",
        "opening_balance": 50 * MONEY_SCALE,
        "alarm1": 30 * MONEY_SCALE,
        "alarm2": 10 * MONEY_SCALE,
        "overdraft": 0,
        "close_allowed": 0,
        "trip_delay_s": 1800,
    },
    "tariff": {"kind": "tiered", "tier_kwh": [260, 600], "tier_prices": [5883, 6383, 8883]},
    "relay": {"pulse_ms": 60, "min_interval_ms": 1000},
    "freeze": {"profile_keep": 96},
}


def meter_config(base, index):
    """The configuration of meter ``index``: the base with its own address."""
    cfg = {}
    for section in base:
        cfg[section] = dict(base[section])
    cfg.setdefault("meter", {})["id"] = "%012d" % (100000000001 + index)
    return cfg


class VirtualMeter:
    """One simulated installation: household, meter core, relay and customer."""

    def __init__(self, index, seed, base_cfg, core, start, feedback=False, customer=None):
        self.index = index
        self.cfg = meter_config(base_cfg, index)
        self.id = self.cfg["meter"]["id"]
        self.core = core
        self.start = start
        self.house = Household(derive_seed(seed, "house", index), tz_offset_s=TZ_S)
        self.source = PulseSource(self.cfg["meter"].get("constant", 3200))
        # The relay starts closed, as shipped; the core re-drives it at boot anyway.
        self.relay = LatchingRelay(closed=True, feedback_wired=feedback)
        self.customer = Customer(derive_seed(seed, "customer", index), kind=customer, tz_offset_s=TZ_S)
        self.feedback = feedback
        self.balance_start = self.cfg["account"].get("opening_balance", 0)
        self.max_w = self.cfg["meter"].get("supply_max_w", 13800)
        self.max_price = max_price(self.cfg.get("tariff", {}))
        acc = self.cfg["account"]
        # Balances at which the meter's behaviour changes (alarms, the cut).
        self.thresholds = (acc.get("alarm1", 300000), acc.get("alarm2", 100000), -acc.get("overdraft", 0))
        self.pulse_mwh = 1000000 // self.source.constant + 1
        self.cuts = 0
        self.reconnects = 0
        self.alarms = 0
        self.topups = 0
        self.refused = 0
        self.timeline = []  # (wall, what, detail) for the readable report
        self.restore_delays = []  # seconds from an accepted top-up to the relay closing
        self._pending_topup = None
        self._alarm_level = 0

    def mono(self, wall):
        return (wall - self.start) * 1000

    def feed(self, event, wall):
        """Give the core one event and carry out what it asks."""
        for act in self.core.handle(event):
            if isinstance(act, PulseCoil):
                mono = self.mono(wall)
                self.relay.apply(act.coil, act.width_ms, mono)
                if self.feedback:
                    self.feed(RelayFeedback(self.relay.feedback(), mono + act.width_ms), wall)
                if act.coil == "set" and self._pending_topup is not None:
                    self.restore_delays.append(wall - self._pending_topup)
                    self._pending_topup = None
            elif isinstance(act, Alarm):
                if act.on:
                    self.customer.on_alarm(act.level, wall)
            elif isinstance(act, Publish):
                self._record(act.record, wall)

    def _record(self, rec, wall):
        kind = rec.kind
        data = rec.data
        if kind == "trip":
            self.cuts += 1
            self.customer.on_cut(wall)
            self.timeline.append((wall, "cut", "%s, balance %s" % (rec.reason, money(data.get("balance", 0)))))
        elif kind == "close":
            self.reconnects += 1
            self.timeline.append((wall, "reconnected", "%s, balance %s" % (rec.reason, money(data.get("balance", 0)))))
        elif kind == "alarm" and data.get("level", 0) > self._alarm_level:
            self.alarms += 1
            self.timeline.append((wall, "alarm %d" % data["level"], "balance %s" % money(data.get("balance", 0))))
        if kind == "alarm":
            self._alarm_level = data.get("level", 0)
        elif kind == "topup":
            self.topups += 1
            self.timeline.append((wall, "top-up", "+%s -> %s" % (money(data["amount"]), money(data["balance"]))))
        elif kind == "topup_refused":
            self.refused += 1
            self.timeline.append((wall, "top-up refused", rec.reason))
        elif kind == "relay_failed":
            self.timeline.append((wall, "relay failed", "%s: expected %s, observed %s" % (rec.reason, data.get("expected"), data.get("observed"))))

    def run(self, end, step_s):
        """Live from ``start`` to ``end`` (wall seconds).

        Steps are at most ``step_s`` long while the balance is near a
        threshold, so cuts and alarms happen within a step of when they
        would on a real meter; far from any threshold a step runs to the
        core's next deadline (midnight, a tariff slot, a timer), which
        changes no result: the core charges each interval's count exactly.
        """
        t = self.start
        self.feed(Boot(t, 0), t)
        serial = 0
        while t < end:
            nxt = end if end < t + 86400 else t + 86400
            for candidate in (self.core.next_deadline(), self._customer_time(t)):
                if candidate is not None and t < candidate < nxt:
                    nxt = candidate
            nxt = self._safe_until(t, nxt, step_s)
            # The load only draws through a closed contact.
            mwh = self.house.energy_mwh(t, nxt) if self.relay.closed else 0
            count = self.source.advance(mwh)
            self.feed(Pulses(count, nxt, self.mono(nxt)), nxt)
            t = nxt
            amount = self.customer.take_action(t)
            if amount:
                serial += 1
                self._pending_topup = t if self.core.stats()["relay_state"] == "tripped_arrears" else None
                self.feed(TopUp(amount, "%s-%d" % (self.id, serial), t, self.mono(t), "sim"), t)

    def _safe_until(self, t, nxt, step_s):
        """Shorten the step (t, nxt] so that no money threshold can be crossed
        inside it, down to ``step_s``: a threshold is then seen at most one
        fine step late, as by a meter reading its counter every ``step_s``.
        """
        if nxt - t <= step_s or not self.relay.closed:
            return nxt
        balance = self.core.stats()["balance"]
        below = None
        for level in self.thresholds:
            if level < balance and (below is None or level > below):
                below = level
        if below is None:
            return nxt
        room = balance - below
        while nxt - t > step_s:
            # Dearest case: every Wh of the step at the highest price, plus a pulse of carry.
            cost = (self.house.energy_mwh(t, nxt) + self.pulse_mwh) * self.max_price // 1000000 + 1
            if cost < room:
                return nxt
            nxt = t + (nxt - t) // 2
        return t + step_s

    def _customer_time(self, t):
        nxt = self.customer.next_action(t)
        return nxt[0] if nxt else None

    def result(self):
        """The per-meter figures of the JSON report."""
        s = self.core.stats()
        return {
            "id": self.id,
            "energy_wh": s["energy_wh"],
            "charged": s["charged"],
            "credited": s["credited"],
            "balance_start": self.balance_start,
            "balance_end": s["balance"],
            "cuts": self.cuts,
            "reconnects": self.reconnects,
            "alarms": self.alarms,
            "topups": self.topups,
            "topups_refused": self.refused,
            "relay": "closed" if self.relay.closed else "open",
            "relay_state": s["relay_state"],
            "restore_delays_s": list(self.restore_delays),
            "coil_violations": len(self.relay.violations),
        }


def max_price(tariff):
    """The dearest price a tariff can charge (minor units per kWh)."""
    kind = tariff.get("kind", "flat")
    tou = max(tariff.get("tou_prices") or [0])
    tier = max(tariff.get("tier_prices") or [0])
    if kind == "tou":
        return tou
    if kind == "tiered":
        return tier
    if kind == "tiered_tou":
        return tou + tier
    return tariff.get("price", 5883)


def money(minor):
    """Minor units -> "12.3456 CNY" without floats."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    return "%s%d.%02d CNY" % (sign, minor // MONEY_SCALE, minor % MONEY_SCALE // 100)


def run(meters=1, days=30, seed=1, runtime="cpython", step_s=900, start=DEFAULT_START, config=None, feedback=False, customers="auto"):
    """Simulate ``meters`` meters for ``days`` days; returns the report dict.

    ``customers`` is a customer kind for every meter, "mixed" (drawn per
    meter from the seed) or "auto": a lone meter's customer waits for the
    cut (so the demo shows a cut and a reconnection), a fleet is mixed.
    """
    if customers == "auto":
        customers = "waits_for_cut" if meters == 1 else "mixed"
    kind = None if customers == "mixed" else customers
    base = config if config is not None else DEFAULT_CONFIG
    t0 = parse_datetime(start, TZ_S)
    if t0 is None:
        raise ValueError("start must be 'YYYY-MM-DD HH:MM' local time, got %r" % (start,))
    end = t0 + days * 86400
    if runtime == "cpython" and meters >= PARALLEL_FROM and workers() > 1:
        n = workers()
        jobs = [(list(range(k, meters, n)), seed, base, t0, end, step_s, feedback, kind) for k in range(n)]
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(n) as pool:
            parts = pool.map(_run_slice, jobs)
        rows = sorted((r for part in parts for r in part), key=lambda r: r["id"])
        return report(rows, [], meters, days, seed, runtime, t0)
    server = MicroPythonServer() if runtime == "micropython" else None
    sims = []
    try:
        for i in range(meters):
            cfg = meter_config(base, i)
            core = MicroPythonCore(cfg, server) if server else LocalCore(cfg)
            vm = VirtualMeter(i, seed, base, core, t0, feedback, kind)
            vm.run(end, step_s)
            sims.append(vm)
        return report([vm.result() for vm in sims], sims[0].timeline if meters == 1 else [], meters, days, seed, runtime, t0)
    finally:
        if server:
            server.close()


PARALLEL_FROM = 50  # below this, starting worker processes costs more than it saves


def workers():
    """Worker processes for large in-process runs: one per core."""
    import os

    return os.cpu_count() or 1


def _run_slice(job):
    indices, seed, base, t0, end, step_s, feedback, kind = job
    rows = []
    for i in indices:
        vm = VirtualMeter(i, seed, base, LocalCore(meter_config(base, i)), t0, feedback, kind)
        vm.run(end, step_s)
        rows.append(vm.result())
    return rows


def report(rows, timeline, meters, days, seed, runtime, t0):
    """The run's report: per-meter results, fleet totals, and a lone meter's timeline."""
    delays = sorted(d for r in rows for d in r["restore_delays_s"])
    return {
        "money_scale": MONEY_SCALE,
        "seed": seed,
        "days": days,
        "runtime": runtime,
        "start": t0,
        "meters": rows,
        "totals": {
            "meters": meters,
            "energy_wh": sum(r["energy_wh"] for r in rows),
            "charged": sum(r["charged"] for r in rows),
            "credited": sum(r["credited"] for r in rows),
            "cuts": sum(r["cuts"] for r in rows),
            "reconnects": sum(r["reconnects"] for r in rows),
            "alarms": sum(r["alarms"] for r in rows),
            "topups": sum(r["topups"] for r in rows),
            "restore_p50_s": delays[len(delays) // 2] if delays else None,
            "restore_max_s": delays[-1] if delays else None,
            "coil_violations": sum(r["coil_violations"] for r in rows),
        },
        "timeline": [[w, what, detail] for w, what, detail in timeline],
    }


def render(rep):
    """A readable summary of a report."""
    lines = []
    tot = rep["totals"]
    lines.append(
        "Simulated %d meter%s for %d days (seed %d, %s core)."
        % (tot["meters"], "" if tot["meters"] == 1 else "s", rep["days"], rep["seed"], rep["runtime"])
    )
    if rep["timeline"]:
        lines.append("")
        lines.append("What happened:")
        for wall, what, detail in rep["timeline"]:
            lines.append("  %s  %-15s %s" % (format_wall(wall, TZ_S)[:16], what, detail))
    lines.append("")
    if len(rep["meters"]) <= 20:
        lines.append("%-13s %10s %15s %15s %15s %5s %5s %6s  %s" % ("meter", "energy kWh", "charged", "credited", "balance", "cuts", "recon", "alarms", "relay"))
        for r in rep["meters"]:
            lines.append(
                "%-13s %10s %15s %15s %15s %5d %5d %6d  %s"
                % (r["id"], kwh(r["energy_wh"]), money(r["charged"]), money(r["credited"]), money(r["balance_end"]), r["cuts"], r["reconnects"], r["alarms"], r["relay"])
            )
        lines.append("")
    lines.append("Energy %s kWh, charged %s, credited %s." % (kwh(tot["energy_wh"]), money(tot["charged"]), money(tot["credited"])))
    lines.append("Cuts %d, reconnections %d, alarms %d, top-ups %d." % (tot["cuts"], tot["reconnects"], tot["alarms"], tot["topups"]))
    if tot["restore_p50_s"] is not None:
        lines.append("Top-up to supply restored: median %d s, worst %d s (the utility's target: 900 s)." % (tot["restore_p50_s"], tot["restore_max_s"]))
    ok = all(r["balance_end"] == r["balance_start"] + r["credited"] - r["charged"] for r in rep["meters"])
    lines.append("Ledger check (balance_end == balance_start + credited - charged): %s." % ("exact for every meter" if ok else "MISMATCH"))
    if tot["coil_violations"]:
        lines.append("RELAY COIL VIOLATIONS: %d" % tot["coil_violations"])
    return "\n".join(lines)


def kwh(wh):
    return "%d.%03d" % (wh // 1000, wh % 1000)

