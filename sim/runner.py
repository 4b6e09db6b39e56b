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

A scenario (``sim.scenario``) adds, per meter, a plan of happenings
(``sim.faults``): power cuts (PowerFail, snapshot, Boot from the
snapshot), relay faults, clock drift and syncs, cover-open tamper,
operators' commands, vacations and planted thefts.  Every meter also keeps
a daily series as the head-end would see it (``DAILY_FIELDS``), which the
anti-theft analytics (``headend.analytics``) and the reports read.
"""

import random

from agent import results
from agent.account.account import MONEY_SCALE
from agent.calendar import format_wall, parse_datetime
from agent.relay.policy import CLOSED_STATES
from agent.events import Ack, Alarm, Anomaly, Boot, Command, PowerFail, PulseCoil, Publish, Pulses, RelayFeedback, SetClock, Tamper, TopUp
from sim import derive_seed
from sim.cores import LocalCore, MicroPythonCore, MicroPythonServer
from sim.customer import Customer
from sim.faults import draw_plan, operator_targets
from sim.household import Household
from sim.pulses import PulseSource
from sim.relay_model import LatchingRelay

DEFAULT_START = "2026-01-01 00:00"
TZ_S = 8 * 3600
DAY_S = 86400

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


CUT_STATES = ("tripped_arrears", "tripped_command", "close_allowed")
OP_WINDOW_S = 900  # a remote cut or reconnection counts as done if the relay is there within 15 min
DRIFT_WH = 20  # the shell's daily register check ignores smaller pulse/register deviations ...
DRIFT_PM = 20  # ... and deviations within 2 % of the register


class VirtualMeter:
    """One simulated installation: household, meter core, relay and customer.

    ``plan`` (a ``sim.faults.MeterPlan``) adds what a scenario makes
    happen to this meter: power cuts, relay faults, clock drift, tamper,
    theft, operators' commands; ``outages`` are the broker's down windows.
    """

    def __init__(self, index, seed, base_cfg, core, start, feedback=False, customer=None, plan=None, outages=()):
        self.index = index
        self.cfg = meter_config(base_cfg, index)
        self.id = self.cfg["meter"]["id"]
        self.core = core
        self.start = start
        self.plan = plan
        profile = plan.profile if plan is not None else None
        if plan is not None and plan.customer is not None:
            customer = plan.customer
        self.house = Household(derive_seed(seed, "house", index), profile=profile, tz_offset_s=TZ_S)
        self.source = PulseSource(self.cfg["meter"].get("constant", 3200))
        # The relay starts closed, as shipped; the core re-drives it at boot anyway.
        miss = plan.miss_ppm / 1000000 if plan is not None and plan.miss_ppm else 0.0
        rng = random.Random(derive_seed(seed, "relay", index)) if miss else None
        self.relay = LatchingRelay(closed=True, feedback_wired=feedback, miss_rate=miss, rng=rng)
        self.customer = Customer(derive_seed(seed, "customer", index), kind=customer, tz_offset_s=TZ_S)
        self.feedback = feedback
        self.balance_start = self.cfg["account"].get("opening_balance", 0)
        self.max_w = self.cfg["meter"].get("supply_max_w", 13800)
        self.max_price = max_price(self.cfg.get("tariff", {}))
        acc = self.cfg["account"]
        # Balances at which the meter's behaviour changes (alarms, the cut).
        self.thresholds = (acc.get("alarm1", 300000), acc.get("alarm2", 100000), -acc.get("overdraft", 0))
        self.pulse_mwh = 1000000 // self.source.constant + 1
        self.outages = outages
        self.cuts = 0
        self.reconnects = 0
        self.alarms = 0
        self.topups = 0
        self.refused = 0
        self.timeline = []  # (wall, what, detail) for the readable report
        self.faults = []  # (wall, what, detail): power cuts and relay faults, for the report's plots
        self.restore_delays = []  # seconds from a top-up bought while cut to the relay closing
        self.alarm_delays = []  # seconds from alarm 1 to the next top-up bought
        self.ops = [0, 0, 0, 0]  # cuts tried, cuts done, reconnections tried, reconnections done
        self.commands = {}  # operator action number -> [sent, accepted]
        self.daily = []  # per local day: see DAILY_FIELDS
        self.stolen_mwh = 0  # ground truth: energy used that no one paid for
        self.power_cuts = 0
        self._pending_topup = None
        self._alarm_level = 0
        self._alarm_at = None
        self._op = None  # (expect_closed, wall) of the relay operation under way
        self._last_ack = None
        self._boot_wall = start
        self._clk_ref = start
        self._clk_base = 0
        self._drift = plan.drift_ppm if plan is not None else 0
        self._reg_ppm = plan.register_ppm if plan is not None else 0
        self._theft = None
        self._vacation = False
        self._cut = False
        self._queue = []  # (deliver_at, seq, kind, payload): top-ups and commands held by a broker outage
        self._qseq = 0
        # Daily bookkeeping, as the head-end would see it.
        self._day0 = (start + TZ_S) // DAY_S
        self._day_end = (self._day0 + 1) * DAY_S - TZ_S
        self._reg_acc = 0  # register in mWh * 10**6 (register drift carried exactly)
        self._day_energy = 0
        self._day_reg = 0
        self._d_cut_s = 0
        self._d_cut_wh = 0
        self._d_covers = 0
        self._d_flags = 0
        self._d_down_s = 0
        self._d_true = 0
        self._d_dark_s = 0

    def mono(self, wall):
        return (wall - self._boot_wall) * 1000

    def cw(self, wall):
        """The meter's own (drifting) clock at true time ``wall``."""
        if not self._drift:
            return wall
        return wall + self._clk_base + (wall - self._clk_ref) * self._drift // 1000000

    def feed(self, event, wall):
        """Give the core one event and carry out what it asks."""
        for act in self.core.handle(event):
            if isinstance(act, PulseCoil):
                mono = self.mono(wall)
                self.relay.apply(act.coil, act.width_ms, mono)
                if self.feedback:
                    self.feed(RelayFeedback(self.relay.feedback(), mono + act.width_ms), wall)
                if act.coil == "set" and self._pending_topup is not None and self.relay.closed:
                    self.restore_delays.append(wall - self._pending_topup)
                    self._pending_topup = None
            elif isinstance(act, Alarm):
                if act.on:
                    self.customer.on_alarm(act.level, wall)
            elif isinstance(act, Publish):
                self._record(act.record, wall)
            elif isinstance(act, Ack):
                self._last_ack = act.code

    def _record(self, rec, wall):
        kind = rec.kind
        data = rec.data
        if kind == "trip":
            self.cuts += 1
            self._relay_op(False, wall)
            self._cut = True
            self.customer.on_cut(wall)
            self.timeline.append((wall, "cut", "%s, balance %s" % (rec.reason, money(data.get("balance", 0)))))
        elif kind == "close":
            self.reconnects += 1
            self._relay_op(True, wall)
            self._cut = False
            self.timeline.append((wall, "reconnected", "%s, balance %s" % (rec.reason, money(data.get("balance", 0)))))
        elif kind == "alarm" and data.get("level", 0) > self._alarm_level:
            self.alarms += 1
            if self._alarm_at is None:
                self._alarm_at = wall
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
            # With a feedback contact the head-end learns where the relay really is.
            self._cut = data.get("observed") == "open"
            self.timeline.append((wall, "relay failed", "%s: expected %s, observed %s" % (rec.reason, data.get("expected"), data.get("observed"))))
        elif kind == "plausibility":
            self._d_flags += 1
        elif kind == "cover_open":
            self._d_covers += 1

    # ------------------------------------------------------------ relay operations

    def _relay_op(self, closed, wall):
        self._settle_op()
        self._op = (closed, wall)
        self.ops[2 if closed else 0] += 1

    def _settle_op(self):
        """Count the operation under way as done if the contact is where it was sent."""
        if self._op is not None:
            if self.relay.closed == self._op[0]:
                self.ops[3 if self._op[0] else 1] += 1
            self._op = None

    # ------------------------------------------------------------ the run

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
        events = self.plan.events if self.plan is not None else ()
        k = 0
        while t < end:
            nxt = end if end < t + 86400 else t + 86400
            if self._day_end < nxt:
                nxt = self._day_end
            dl = self.core.next_deadline()
            if dl is not None and self._drift:
                dl -= self.cw(t) - t
                dl = dl if dl > t else t + 1
            for candidate in (dl, self._customer_time(t)):
                if candidate is not None and t < candidate < nxt:
                    nxt = candidate
            if k < len(events) and events[k][0] < nxt:
                nxt = events[k][0] if events[k][0] > t else t + 1
            if self._queue and self._queue[0][0] < nxt:
                nxt = self._queue[0][0] if self._queue[0][0] > t else t + 1
            if self._op is not None and t >= self._op[1] + OP_WINDOW_S:
                self._settle_op()
            nxt = self._safe_until(t, nxt, step_s)
            # The load only draws through a closed contact (or a bypass around it).
            flowing = self.relay.closed or self._theft == "relay_bypass"
            mwh = self.house.energy_mwh(t, nxt) if flowing else 0
            if mwh and self._vacation:
                mwh //= 10
            count = self.source.advance(self._meter(mwh, not self.relay.closed))
            was_cut = self._cut
            before = self.core.stats()["energy_wh"] if was_cut else 0
            if not self.relay.closed:
                self._d_dark_s += nxt - t
            self.feed(Pulses(count, self.cw(nxt), self.mono(nxt)), nxt)
            if was_cut:
                self._d_cut_s += nxt - t
                self._d_cut_wh += self.core.stats()["energy_wh"] - before
            t = nxt
            if t >= self._day_end:
                self._close_days(t)
            while k < len(events) and events[k][0] <= t:
                t = self._happen(events[k], t, end)
                k += 1
            while self._queue and self._queue[0][0] <= t:
                self._deliver(self._queue.pop(0), t)
            amount = self.customer.take_action(t)
            # A customer who jumpered the relay stops paying.
            if amount and self._theft != "relay_bypass":
                serial += 1
                if self._alarm_at is not None:
                    self.alarm_delays.append(t - self._alarm_at)
                    self._alarm_at = None
                self._send(t, "topup", (amount, "%s-%d" % (self.id, serial), t))
        self._settle_op()
        if t >= self._day_end:
            self._close_days(t)

    def _meter(self, mwh, around_relay):
        """Split the household's ``mwh`` into what the meter sees; returns the pulse-path mWh.

        ``around_relay``: the energy flows through a jumper around an open relay."""
        self._d_true += mwh
        theft = self._theft
        if theft is None:
            metered = mwh
            pulsed = mwh
        elif theft == "meter_bypass":
            metered = mwh - mwh * self.plan.fraction_pm // 1000
            pulsed = metered
        elif theft == "stopped":
            metered = pulsed = 0
        elif theft == "pulse_tamper":
            metered = mwh
            pulsed = mwh - mwh * self.plan.fraction_pm // 1000
        else:  # relay_bypass: metered and billed, but never cut
            metered = pulsed = mwh
        self.stolen_mwh += mwh if around_relay else mwh - pulsed
        self._reg_acc += metered * (1000000 + self._reg_ppm)
        return pulsed

    def _send(self, t, kind, payload):
        """Hand a top-up or command to the head-end: delivered now, or when the broker is back."""
        at = t
        for a, b in self.outages:
            if a <= t < b:
                at = b
                break
        if at == t:
            self._deliver((t, 0, kind, payload), t)
        else:
            self._qseq += 1
            self._queue.append((at, self._qseq, kind, payload))
            self._queue.sort()

    def _deliver(self, item, t):
        kind, payload = item[2], item[3]
        if kind == "topup":
            amount, ref, bought = payload
            self._pending_topup = bought if self.core.stats()["relay_state"] == "tripped_arrears" else None
            self.feed(TopUp(amount, ref, self.cw(t), self.mono(t), "sim"), t)
            if self.plan is not None and self.core.stats()["relay_state"] == "tripped_arrears":
                # Not enough to clear the arrears: still in the dark, the customer buys again.
                self.customer.on_cut(t)
        else:
            number, name, args = payload
            self._last_ack = None
            self.feed(Command(name, dict(args), "op%d-%s" % (number, self.id), self.cw(t), self.mono(t)), t)
            tally = self.commands.setdefault(number, [0, 0])
            tally[0] += 1
            if self._last_ack == results.ACCEPTED:
                tally[1] += 1

    def _happen(self, item, t, end):
        """Carry out one planned happening at ``t``; returns the time after it."""
        _, what, arg = item
        if what == "power_fail":
            return self._power_cut(t, min(arg, end))
        mono = self.mono(t)
        if what == "relay_fault":
            self.relay.set_fault(arg)
            self.timeline.append((t, "relay fault", arg))
            self.faults.append((t, "relay fault", arg))
        elif what == "relay_repair":
            self.relay.set_fault(arg, False)
            self.faults.append((t, "relay repaired", arg))
        elif what == "cover":
            self.feed(Tamper(arg, self.cw(t), mono), t)
        elif what == "clock_sync":
            self._clk_base = 0
            self._clk_ref = t
            self.feed(SetClock(t, mono, "sync"), t)
        elif what == "vacation":
            self._vacation = arg
        elif what == "theft":
            self._theft = arg
        elif what == "command":
            self._send(t, "command", arg)
        return t

    def _power_cut(self, t, back):
        """The supply fails at ``t`` and returns at ``back``: the core commits,
        loses its RAM, and boots from its snapshot; the relay stays where it was."""
        self.power_cuts += 1
        self.faults.append((t, "power cut", back - t))
        self.feed(PowerFail(self.cw(t), self.mono(t)), t)
        snap = self.core.snapshot()
        if back > t:
            self._close_days(back, down_from=t)
        self.core.restore(self.cfg, snap)
        self.relay.power_cycle()
        self._boot_wall = back
        self.feed(Boot(self.cw(back), 0), back)
        return back

    def _close_days(self, t, down_from=None):
        """Close every local day that ended by ``t`` into a daily row."""
        while self._day_end <= t:
            if down_from is not None and down_from < self._day_end:
                self._d_down_s += self._day_end - down_from
                down_from = self._day_end
            s = self.core.stats()
            reg_wh = self._reg_acc // 1000000000
            energy = s["energy_wh"] - self._day_energy
            reg = reg_wh - self._day_reg
            if self.plan is not None and abs(energy - reg) > DRIFT_WH and abs(energy - reg) * 1000 > DRIFT_PM * reg:
                # The shell's daily DL/T 645 cross-check of the host meter's register.
                self.feed(Anomaly("register_drift", {"pulse_wh": energy, "register_wh": reg}, self.cw(self._day_end), self.mono(self._day_end)), self._day_end)
            self.daily.append([
                (self._day_end - DAY_S + TZ_S) // DAY_S - self._day0,
                energy,
                reg,
                self._d_cut_s,
                self._d_cut_wh,
                self._d_covers,
                self._d_flags,
                self._d_down_s,
                s["balance"],
                self._d_true // 1000,
                self._d_dark_s,
            ])
            self._day_energy = s["energy_wh"]
            self._day_reg = reg_wh
            self._d_cut_s = self._d_cut_wh = self._d_covers = self._d_flags = self._d_down_s = self._d_true = self._d_dark_s = 0
            self._day_end += DAY_S
        if down_from is not None and down_from < t:
            self._d_down_s += t - down_from

    def _safe_until(self, t, nxt, step_s):
        """Shorten the step (t, nxt] so that no money threshold can be crossed
        inside it, down to ``step_s``: a threshold is then seen at most one
        fine step late, as by a meter reading its counter every ``step_s``.
        """
        if nxt - t <= step_s or not (self.relay.closed or self._theft == "relay_bypass"):
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
        row = {
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
            # A top-up bought while cut whose supply never came back before the end.
            "unrestored_topups": 0 if self._pending_topup is None else 1,
            "alarm_topup_delays_s": list(self.alarm_delays),
            "remote_ops": list(self.ops),
            "power_cuts": self.power_cuts,
            "coil_violations": len(self.relay.violations),
            "faults": [[w, what, detail] for w, what, detail in self.faults],
        }
        if self.plan is not None:
            row["commands"] = [[n, self.commands[n][0], self.commands[n][1]] for n in sorted(self.commands)]
            row["truth"] = {
                "theft": self.plan.theft,
                "theft_start": self.plan.theft_start,
                "stolen_wh": self.stolen_mwh // 1000,
                "profile": self.plan.profile or "rural",
                "customer": self.customer.kind,
                "relay_faults": sorted(self.relay.faults),
            }
        return row


# The last two are ground truth, never given to the analytics: the household's
# true use, and the seconds the contact was really open (a silent relay failure
# is dark with no cut reported).
DAILY_FIELDS = ("day", "energy_wh", "register_wh", "cut_s", "cut_wh", "cover_opens", "flags", "down_s", "balance", "true_wh", "dark_s")


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
    """Minor units -> "12.3456 CNY", exactly and without floats.

    All four decimals: the core charges in 1/10000 CNY, and a figure cut to
    fen would not add up with the others (opening + credited - charged)."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    return "%s%d.%04d CNY" % (sign, minor // MONEY_SCALE, minor % MONEY_SCALE)


class Fleet:
    """What every worker needs to build virtual meters the same way."""

    __slots__ = ("seed", "base", "t0", "end", "step_s", "feedback", "kind", "scenario", "targets")

    def __init__(self, seed, base, t0, end, step_s, feedback, kind, scenario, meters):
        self.seed = seed
        self.base = base
        self.t0 = t0
        self.end = end
        self.step_s = step_s
        self.feedback = feedback
        self.kind = kind
        self.scenario = scenario
        self.targets = []
        if scenario is not None:
            for number, op in enumerate(scenario.operators):
                self.targets.append((op, set(operator_targets(op, meters, seed, number))))

    def meter(self, i, core):
        plan = None
        outages = ()
        if self.scenario is not None:
            plan = draw_plan(self.scenario, i, self.seed, self.t0, self.end)
            for number, (op, chosen) in enumerate(self.targets):
                if i in chosen and self.t0 <= op["wall"] < self.end:
                    plan.events.append((op["wall"], "command", (number, op["command"], op["args"])))
            plan.events.sort(key=lambda e: (e[0], e[1], str(e[2])))
            outages = self.scenario.outages
        return VirtualMeter(i, self.seed, self.base, core, self.t0, self.feedback, self.kind, plan, outages)


def run(meters=1, days=30, seed=1, runtime="cpython", step_s=900, start=DEFAULT_START, config=None, feedback=False, customers="auto", scenario=None, progress=None):
    """Simulate ``meters`` meters for ``days`` days; returns the report dict.

    ``customers`` is a customer kind for every meter, "mixed" (drawn per
    meter from the seed) or "auto": a lone meter's customer waits for the
    cut (so the demo shows a cut and a reconnection), a fleet is mixed.
    ``scenario`` (a ``sim.scenario.Scenario``) adds households, customers,
    operators' actions, faults and thieves; ``progress(done, total)`` is
    called as meters finish.
    """
    if customers == "auto":
        customers = "waits_for_cut" if meters == 1 else "mixed"
    kind = None if customers == "mixed" else customers
    base = config if config is not None else DEFAULT_CONFIG
    t0 = parse_datetime(start, TZ_S)
    if t0 is None:
        raise ValueError("start must be 'YYYY-MM-DD HH:MM' local time, got %r" % (start,))
    end = t0 + days * 86400
    if feedback and not base.get("relay", {}).get("feedback"):
        # A wired feedback contact is only of use if the core reads it.
        base = dict(base)
        base["relay"] = dict(base.get("relay", {}), feedback=True)
    fleet = Fleet(seed, base, t0, end, step_s, feedback, kind, scenario, meters)
    if runtime == "cpython" and meters >= PARALLEL_FROM and workers() > 1:
        n = workers()
        # Small chunks keep both workers busy to the end and let progress move.
        size = max(1, min(25, meters // (4 * n)))
        jobs = [(fleet, list(range(k, min(k + size, meters)))) for k in range(0, meters, size)]
        import multiprocessing

        parts = []
        with multiprocessing.get_context("fork").Pool(n) as pool:
            for part in pool.imap_unordered(_run_slice, jobs):
                parts.append(part)
                if progress:
                    progress(sum(len(p) for p in parts), meters)
        rows = sorted((r for part in parts for r in part), key=lambda r: r["id"])
        return report(rows, [], meters, days, seed, runtime, t0, scenario)
    server = MicroPythonServer() if runtime == "micropython" else None
    rows = []
    timeline = []
    try:
        for i in range(meters):
            cfg = meter_config(base, i)
            core = MicroPythonCore(cfg, server) if server else LocalCore(cfg)
            vm = fleet.meter(i, core)
            vm.run(end, step_s)
            rows.append(_row(vm))
            if meters == 1:
                timeline = vm.timeline
            if progress:
                progress(i + 1, meters)
        return report(rows, timeline, meters, days, seed, runtime, t0, scenario)
    finally:
        if server:
            server.close()


PARALLEL_FROM = 50  # below this, starting worker processes costs more than it saves


def workers():
    """Worker processes for large in-process runs: one per core."""
    import os

    return os.cpu_count() or 1


def _row(vm):
    row = vm.result()
    row["_daily"] = vm.daily
    return row


def _run_slice(job):
    fleet, indices = job
    rows = []
    for i in indices:
        vm = fleet.meter(i, LocalCore(meter_config(fleet.base, i)))
        vm.run(fleet.end, fleet.step_s)
        rows.append(_row(vm))
    return rows


def percentile(values, pct):
    """The ``pct``-th percentile (nearest rank) of sorted ints, or None."""
    if not values:
        return None
    k = (len(values) * pct + 99) // 100 - 1
    return values[k if k > 0 else 0]


def report(rows, timeline, meters, days, seed, runtime, t0, scenario=None):
    """The run's report: per-meter results, fleet totals, and a lone meter's timeline.

    Each row's daily series moves to ``daily`` (meter id -> rows of
    ``DAILY_FIELDS``), which the JSON output leaves out.
    """
    daily = {}
    for r in rows:
        daily[r["id"]] = r.pop("_daily", [])
    delays = sorted(d for r in rows for d in r["restore_delays_s"])
    alarm_delays = sorted(d for r in rows for d in r["alarm_topup_delays_s"])
    ops = [sum(r["remote_ops"][k] for r in rows) for k in range(4)]
    silent = [r for r in rows if silent_relay_failure(r)]
    rep = {
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
            "restore_p90_s": percentile(delays, 90),
            "restore_p99_s": percentile(delays, 99),
            "restore_max_s": delays[-1] if delays else None,
            "restores": len(delays),
            "unrestored_topups": sum(r["unrestored_topups"] for r in rows),
            "alarm_topup_p50_s": percentile(alarm_delays, 50),
            "alarm_topup_p90_s": percentile(alarm_delays, 90),
            "alarm_topups": len(alarm_delays),
            "remote_cuts": ops[0],
            "remote_cuts_done": ops[1],
            "remote_reconnects": ops[2],
            "remote_reconnects_done": ops[3],
            "power_cuts": sum(r["power_cuts"] for r in rows),
            "coil_violations": sum(r["coil_violations"] for r in rows),
            "silent_relay_failures": len(silent),
        },
        "silent_relay_failures": [r["id"] for r in silent],
        "timeline": [[w, what, detail] for w, what, detail in timeline],
        "daily": daily,
    }
    if scenario is not None:
        rep["scenario"] = scenario.data["name"] or scenario.path
        ops_rep = []
        for number, op in enumerate(scenario.operators):
            sent = sum(c[1] for r in rows for c in r.get("commands", []) if c[0] == number)
            ok = sum(c[2] for r in rows for c in r.get("commands", []) if c[0] == number)
            ops_rep.append({"label": op["label"], "command": op["command"], "at": op["at"], "wall": op["wall"], "sent": sent, "accepted": ok})
        rep["operator_actions"] = ops_rep
        rep["broker_outages"] = [[a, b] for a, b in scenario.outages]
        from headend.analytics import evaluate, suspects

        found = suspects(daily, threshold=scenario.data["analytics"]["threshold"])
        # A planted thief who has not stolen anything yet (a relay jumper
        # never needed before the run ended) cannot be seen: the truth for
        # precision and recall is the thieves who did steal.
        truth = dict((r["id"], r["truth"]["theft"] if r["truth"]["stolen_wh"] else None) for r in rows)
        rep["theft"] = evaluate(found, truth)
        rep["theft"]["planted_all"] = sum(1 for r in rows if r["truth"]["theft"])
        rep["theft"]["stolen_wh"] = sum(r["truth"]["stolen_wh"] for r in rows)
    return rep


def silent_relay_failure(row):
    """True if a meter ends in the dark although its core wants the supply on
    (credit, guarantee power or a forced reconnection): a relay that failed to
    close and, without a feedback contact, nobody knows."""
    return row["relay"] == "open" and row["relay_state"] in CLOSED_STATES


def rate(done, tried):
    """'98.5 % (197/200)' without floats in the report, or 'n/a'."""
    if not tried:
        return "n/a"
    per_mille = done * 1000 // tried
    return "%d.%d %% (%d/%d)" % (per_mille // 10, per_mille % 10, done, tried)


def duration(s):
    """Seconds -> "45 s", "12 min" or "345.7 h" (rounded to the unit shown), or "n/a"."""
    if s is None:
        return "n/a"
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % ((s + 30) // 60)
    tenths = (s * 10 + 1800) // 3600
    return "%d.%d h" % (tenths // 10, tenths % 10)


def render(rep):
    """A readable summary of a report."""
    lines = []
    tot = rep["totals"]
    lines.append(
        "Simulated %d meter%s for %d days (seed %d, %s core)."
        % (tot["meters"], "" if tot["meters"] == 1 else "s", rep["days"], rep["seed"], rep["runtime"])
    )
    if rep.get("scenario"):
        lines.append("Scenario: %s" % rep["scenario"])
    if rep["timeline"]:
        lines.append("")
        lines.append("What happened:")
        for wall, what, detail in rep["timeline"]:
            lines.append("  %s  %-15s %s" % (format_wall(wall, TZ_S)[:16], what, detail))
    lines.append("")
    if len(rep["meters"]) <= 20:
        # Columns in ledger order: opening + credited - charged = balance, to the 1/10000 CNY.
        row = "%-13s %10s %16s %16s %16s %16s %5s %5s %6s  %s"
        lines.append(row % ("meter", "energy kWh", "opening", "credited", "charged", "balance", "cuts", "recon", "alarms", "relay"))
        for r in rep["meters"]:
            lines.append(row % (
                r["id"], kwh(r["energy_wh"]), money(r["balance_start"]), money(r["credited"]), money(r["charged"]), money(r["balance_end"]),
                r["cuts"], r["reconnects"], r["alarms"], r["relay"]))
        lines.append("")
    lines.append("Energy %s kWh, charged %s, credited %s." % (kwh(tot["energy_wh"]), money(tot["charged"]), money(tot["credited"])))
    lines.append("Cuts %d, reconnections %d, alarms %d, top-ups %d." % (tot["cuts"], tot["reconnects"], tot["alarms"], tot["topups"]))
    if tot["restores"] or tot["unrestored_topups"]:
        lines.append("Top-up to supply restored: %s (the utility's target: %s)." % (restore_figures(tot), duration(RESTORE_TARGET_S)))
    if rep.get("scenario") or tot["meters"] > 1:
        lines.append(
            "Remote cuts done %s, reconnections done %s (the utility reports 98 %% and 99 %%)."
            % (rate(tot["remote_cuts_done"], tot["remote_cuts"]), rate(tot["remote_reconnects_done"], tot["remote_reconnects"]))
        )
        if tot["alarm_topups"]:
            lines.append("Alarm 1 to top-up: median %s, 90th percentile %s (%d top-ups)." % (duration(tot["alarm_topup_p50_s"]), duration(tot["alarm_topup_p90_s"]), tot["alarm_topups"]))
        if tot["power_cuts"]:
            lines.append("Power cuts survived: %d (each a PowerFail, a snapshot and a Boot from it)." % tot["power_cuts"])
    for op in rep.get("operator_actions", []):
        lines.append("Operator: %-40s sent %d, accepted %d." % (op["label"], op["sent"], op["accepted"]))
    th = rep.get("theft")
    if th:
        lines.append(
            "Theft: %d thieves planted, %d stole before the end; %d suspects flagged, %d of them thieves: precision %s, recall %s; %s kWh stolen."
            % (th["planted_all"], th["planted"], th["flagged"], th["true_positives"], pct(th["precision_pm"]), pct(th["recall_pm"]), kwh(th["stolen_wh"]))
        )
        for s in th["suspects"][:10]:
            lines.append("  suspect %s score %3d %-6s %s" % (s["id"], s["score"], "THIEF" if s["thief"] else "", "; ".join(s["reasons"])))
    silent = rep["silent_relay_failures"]
    if silent:
        by_id = dict((r["id"], r) for r in rep["meters"])
        lines.append("SILENT RELAY FAILURES: %d meter%s end%s with the relay open although %s should supply:" % (
            len(silent), "" if len(silent) == 1 else "s", "s" if len(silent) == 1 else "", "it" if len(silent) == 1 else "they"))
        for mid in silent[:10]:
            lines.append("  %s  %s, balance %s" % (mid, silent_detail(by_id[mid]), money(by_id[mid]["balance_end"])))
        if len(silent) > 10:
            lines.append("  ... and %d more (see --json or --report)" % (len(silent) - 10))
    ok = all(r["balance_end"] == r["balance_start"] + r["credited"] - r["charged"] for r in rep["meters"])
    lines.append("Ledger check (balance_end == balance_start + credited - charged): %s." % ("exact for every meter" if ok else "MISMATCH"))
    if tot["coil_violations"]:
        lines.append("RELAY COIL VIOLATIONS: %d" % tot["coil_violations"])
    return "\n".join(lines)


RESTORE_TARGET_S = 900  # the utility's target from top-up to supply restored


def restore_figures(tot):
    """Top-up -> restore latency as one string: "median 5 s, p90 ..., worst 345.7 h over 432 restores",
    and the top-ups after which the supply never came back."""
    n = tot["restores"]
    if n == 1:
        text = "%s, 1 restore" % duration(tot["restore_max_s"])
    elif n:
        text = "median %s, p90 %s, p99 %s, worst %s over %d restores" % (
            duration(tot["restore_p50_s"]), duration(tot["restore_p90_s"]), duration(tot["restore_p99_s"]), duration(tot["restore_max_s"]), n)
    else:
        text = "no restore"
    if tot["unrestored_topups"]:
        text += "; NEVER restored after %d top-up%s" % (tot["unrestored_topups"], "" if tot["unrestored_topups"] == 1 else "s")
    return text


def silent_detail(row):
    """Why a silent relay failure's meter should supply, and its relay fault if one was planted."""
    faults = (row.get("truth") or {}).get("relay_faults")
    return "the core's relay state is %s (supply on)%s" % (row["relay_state"], ", relay fault %s" % "/".join(faults) if faults else "")


def pct(per_mille):
    if per_mille is None:
        return "n/a"
    return "%d.%d %%" % (per_mille // 10, per_mille % 10)


def kwh(wh):
    return "%d.%03d" % (wh // 1000, wh % 1000)
