"""The prepaid meter core: one object fed events, returning actions.

``Meter.handle(event)`` is the only way in.  It meters pulses into exact
registers, debits the account by tariff, freezes readings, decides the
relay through the policy table (``agent.relay.policy``), drives it through
the latching driver, and logs every decision as a sequence-numbered event.
It never reads a clock and never does I/O: see ``agent.events``.

Ordering guarantee: whenever state that money or the relay depends on
changed, the returned actions start with ``Persist(urgent=True)``; the
durability layer commits before it passes on any ``Ack`` or coil pulse.
"""

from agent import results
from agent.commands import NAMES
from agent.account.account import FRIENDLY_FIELDS, LIMIT_NAMES, POSTPAID, PREPAID, Account, account_field, active_tariff_field, check_friendly
from agent.account.tariff import TARIFF_FIELDS, check_tariff
from agent.calendar import DAY, date_key, weekday
from agent.config import INT, STR, TABLE, ConfigError, Field, at_least, between, validate
from agent.eventlog import EventLog
from agent.events import Ack, Alarm, Persist, Publish
from agent.metering import freeze as freeze_mod
from agent.metering import pulse as pulse_mod
from agent.metering.freeze import Freezer
from agent.metering.plausibility import Plausibility
from agent.metering.pulse import PulseFilter
from agent.metering.registers import Registers
from agent.relay import driver as driver_mod
from agent.relay import policy
from agent.relay.driver import RelayDriver

SNAPSHOT_VERSION = 2  # 2: compact freezes and load profile (agent.metering.freeze)


def _check_meter_id(value):
    if len(value) != 12 or not value.isdigit():
        return "must be the 12-digit meter address, got %r" % (value,)
    return None


METER_FIELDS = {
    "id": Field(STR, "000000000001", _check_meter_id, None, "12-digit meter address (as on the nameplate)"),
    "constant": Field(INT, 3200, between(1, 100000), doc="meter constant, imp/kWh"),
    "tz_offset_min": Field(INT, 480, between(-720, 840), doc="local time zone, minutes east of UTC (China: 480)"),
    "supply_max_w": Field(INT, 13800, at_least(100), doc="the most the supply can deliver (60 A x 230 V = 13800 W)"),
}

SCHEMA = {
    "meter": Field(TABLE, {}, None, METER_FIELDS, "the meter"),
    "pulse": Field(TABLE, {}, None, pulse_mod.SCHEMA, "pulse input filter"),
    "account": account_field(),
    "tariff": active_tariff_field(),
    "relay": Field(TABLE, {}, None, driver_mod.SCHEMA, "latching relay"),
    "freeze": Field(TABLE, {}, None, freeze_mod.SCHEMA, "frozen readings"),
}

COMMAND_NAMES = NAMES


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class Meter:
    """One prepaid meter's complete behaviour.  See the module docstring."""

    def __init__(self, cfg):
        m = cfg["meter"]
        self.cfg = cfg
        self.meter_id = m["id"]
        self.constant = m["constant"]
        self.tz_s = m["tz_offset_min"] * 60
        self.filter = PulseFilter(cfg["pulse"])
        self.regs = Registers(self.constant)
        self.account = Account(cfg["account"], cfg["tariff"], self.constant)
        self.freezer = Freezer(cfg["freeze"])
        self.plaus = Plausibility(m["supply_max_w"], self.constant)
        self.reconnect = cfg["relay"]["reconnect"]
        self.driver = RelayDriver(cfg["relay"])
        self.log = EventLog()
        self.state = policy.CONNECTED
        self.force_until = None  # wall second a forced reconnection ends; 0 = until cleared
        self.timer_at = None  # trip_then_close: wall second of the delayed close
        self.timer_trigger = None
        self.alarm_forced = False
        self.alarm_out = 0
        self.arrears_since = None  # mono ms since credit has been exhausted
        self.high_load_w = cfg["relay"]["high_load_w"]
        self.high_load_hold_ms = cfg["relay"]["high_load_hold_s"] * 1000
        self.power_w = 0  # load estimated from the last pulses
        self.energy_mono = None  # mono of the last metered pulses
        self.power_span = 0  # the interval that estimate was measured over
        self.trip_postponed = False
        self.boots = 0
        self.purchase_count = 0  # accepted top-ups, ever (DL/T 645 03330201)
        self.wall = None
        self.mono = 0
        self._persist = False
        self._actions = None

    # ================================================================ reads

    @property
    def energy_wh(self):
        """Total forward active energy, Wh."""
        return self.regs.total // self.constant

    @property
    def rate_energy_wh(self):
        """Energy per rate (sharp, peak, flat, valley), Wh."""
        return self.regs.rate_wh()

    @property
    def balance(self):
        """Balance in minor units; negative means overdraft is in use."""
        return self.account.balance

    @property
    def limits(self):
        """Money limits (alarm1, alarm2, overdraft, hoarding, close_allowed)."""
        return dict(self.account.limits)

    @property
    def payment_mode(self):
        return self.account.mode

    @property
    def relay_state(self):
        """The relay policy's state name (see ``agent.relay.policy``)."""
        return self.state

    @property
    def relay_closed(self):
        """True if the policy wants the supply on."""
        return policy.closed_in(self.state)

    @property
    def relay_position(self):
        """Last known contact position: True closed, False open, None unknown."""
        return self.driver.position

    @property
    def alarm_level(self):
        return self.alarm_out

    @property
    def daily_freezes(self):
        return self.freezer.daily

    @property
    def monthly_freezes(self):
        return self.freezer.monthly

    @property
    def load_profile(self):
        return self.freezer.profile

    def records(self, kind):
        """The last records of an event kind, newest first."""
        return self.log.recent(kind)

    def note(self, kind, reason, data=None):
        """Log an event record made outside the core (store, link) and return
        the Publish action for it: it gets a sequence number like any other."""
        return Publish(self.log.add(kind, self.wall if self.wall is not None else 0, reason, data))

    # ================================================================ entry

    def handle(self, event):
        """Process one input event; returns the list of actions to carry out."""
        kind = event.kind
        if kind == "edge":
            # The hot path on real hardware: most edges count nothing.
            counted = self.filter.edge(event.level, event.mono)
            if not counted:
                return []
            return self._run(self._on_pulses, counted, self._wall_at(event.mono), event.mono)
        if kind == "pulses":
            return self._run(self._on_pulses, event.count, event.wall, event.mono)
        if kind == "tick":
            return self._run(self._on_tick, event)
        if kind == "topup":
            return self._run(self._on_topup, event)
        if kind == "command":
            return self._run(self._on_command, event)
        if kind == "boot":
            return self._run(self._on_boot, event)
        if kind == "button":
            return self._run(self._on_button, event)
        if kind == "feedback":
            return self._run(self._on_feedback, event)
        if kind == "power_fail" or kind == "shutdown":
            return self._run(self._on_power_down, event)
        if kind == "set_clock":
            return self._run(self._on_set_clock, event)
        if kind == "tamper":
            return self._run(self._on_tamper, event)
        if kind == "anomaly":
            return self._run(self._on_anomaly, event)
        raise ValueError("unknown event kind %r" % (kind,))

    def _run(self, fn, *args):
        self._actions = []
        self._persist = False
        fn(*args)
        actions = self._actions
        self._actions = None
        if self._persist:
            actions.insert(0, Persist(self._persist, True))
        return actions

    # ============================================================ internals

    def _wall_at(self, mono):
        if self.wall is None:
            return 0
        return self.wall + (mono - self.mono) // 1000

    def _publish(self, kind, reason, data=None):
        action = self.note(kind, reason, data)
        self._actions.append(action)
        return action.record

    def _mark(self, reason):
        if not self._persist:
            self._persist = reason

    def _advance(self, wall, mono):
        """Move time to (wall, mono): freezes, tariff switch, timers, relay driver."""
        if wall is not None:
            self.wall = wall
        self.mono = mono
        wall = self.wall
        if wall is None:
            return
        acc = self.account
        if acc.passive is not None and acc.switch_tariff(wall):
            self._publish("tariff", "passive_tariff_activated", {"kind": acc.tariff.kind})
            self._mark("tariff")
        day = (wall + self.tz_s) // DAY
        fr = self.freezer
        if fr.last_day is None or day > fr.last_day:
            rate_wh = self.regs.rate_wh()
            daily, monthly = fr.advance(day, self.tz_s, self.energy_wh, rate_wh, acc.balance)
            if daily:
                # ``chg`` and ``rates`` at the freeze instant make the head-end's
                # daily settlement exact (a later state may include later charges);
                # ``day`` is the local day number the freeze opens.
                self._publish("freeze", "daily", {"days": daily, "day": day, "energy_wh": self.energy_wh,
                                                  "balance": acc.balance, "chg": acc.charged, "rates": rate_wh})
                self._mark("freeze")
            if monthly:
                self._publish("freeze", "monthly", {"energy_wh": self.energy_wh, "balance": acc.balance})
        if self.force_until and wall >= self.force_until:
            self.force_until = None
            self._trigger(policy.FORCE_EXPIRED, "forced_reconnection_ended")
        if self.timer_at is not None and wall >= self.timer_at:
            trigger = self.timer_trigger
            self.timer_at = None
            self.timer_trigger = None
            self._trigger(trigger, "trip_timer_ended")
        self._poll_driver()

    def _poll_driver(self):
        drv = self.driver
        if drv.phase == 0 or self.mono < drv.due:
            return
        actions, finding = drv.poll(self.mono)
        self._actions.extend(actions)
        if finding is None:
            return
        if finding[0] == "failed":
            self._publish(
                "relay_failed",
                "position_mismatch",
                {"expected": "closed" if finding[1] else "open", "observed": _pos(finding[2]), "attempts": finding[3]},
            )
            self._mark("relay_failed")
        elif finding[1]:
            self.plaus.relay_closed()

    def _evaluate(self):
        """Re-derive relay triggers and alarms from the account."""
        acc = self.account
        state = self.state
        if acc.exhausted():
            if state == policy.CONNECTED or state == policy.CLOSE_ALLOWED:
                if self.arrears_since is None:
                    self.arrears_since = self.mono
                waited = self.mono - self.arrears_since - acc.trip_delay_s * 1000
                if waited >= 0 and not self._friendly():
                    if self._high_load() and waited < self.high_load_hold_ms:
                        if not self.trip_postponed:
                            self.trip_postponed = True
                            self._publish("trip_postponed", "high_load", {"watts": self.power_w, "limit_w": self.high_load_w})
                    else:
                        self._trigger(policy.ARREARS, "credit_exhausted")
        else:
            self.arrears_since = None
            if state == policy.TRIPPED_ARREARS and acc.may_close():
                self._trigger(policy.CREDIT_OK, "credit_restored")
        level = 2 if self.alarm_forced else acc.alarm_level()
        if level != self.alarm_out:
            old = self.alarm_out
            self.alarm_out = level
            for lv in (1, 2):
                was, now = old >= lv, level >= lv
                if was != now:
                    self._actions.append(Alarm(lv, now))
            self._publish("alarm", "balance_alarm" if not self.alarm_forced else "alarm_command", {"level": level, "balance": acc.balance})

    def _high_load(self):
        """True while the load is above ``high_load_w`` (cutting it would burn the contacts)."""
        if not self.high_load_w or self.energy_mono is None:
            return False
        # No pulse for twice the last interval (at least a minute): the load has dropped.
        quiet = self.mono - self.energy_mono
        if quiet > 2 * self.power_span and quiet > 60000:
            return False
        return self.power_w > self.high_load_w

    def _friendly(self):
        if self.wall is None:
            return False
        local = self.wall + self.tz_s
        day = local // DAY
        return self.account.is_friendly(day, local % DAY // 60, weekday(day), date_key(day))

    def _trigger(self, trigger, reason):
        """Apply a policy trigger; returns a result code."""
        new = policy.next_state(self.state, trigger, self.reconnect)
        if new == policy.REFUSE:
            return results.REFUSED
        if new is None or new == self.state:
            return results.ACCEPTED
        old = self.state
        self.state = new
        closed = policy.closed_in(new)
        if policy.closed_in(old) != closed:
            self._publish("close" if closed else "trip", reason, {"from": old, "to": new, "balance": self.account.balance, "energy_wh": self.energy_wh})
        else:
            self._publish("relay_state", reason, {"from": old, "to": new})
        # A trip delay runs only while the supply is on; any change restarts it.
        self.arrears_since = None
        self.trip_postponed = False
        self._mark("relay")
        self._actions.extend(self.driver.request(closed, self.mono))
        return results.ACCEPTED

    # ============================================================== events

    def _on_pulses(self, count, wall, mono):
        self._advance(wall, mono)
        if count <= 0:
            self._evaluate()
            return
        local = self.wall + self.tz_s
        rate = self.account.tariff.rate_at(local % DAY // 60)
        if self.energy_mono is not None and mono > self.energy_mono:
            # W = count * (1000/C Wh) / (span ms / 3,600,000 ms/h)
            self.power_span = mono - self.energy_mono
            self.power_w = count * 3600000000 // (self.constant * self.power_span)
        self.energy_mono = mono
        units = self.regs.add_pulses(count, rate)
        self.account.charge(units, rate, local // DAY)
        for reason, data in self.plaus.pulses(count, mono, self.driver.position is False):
            self._publish("plausibility", reason, data)
        self.freezer.profile_step(self.wall, self.tz_s, self.energy_wh)
        self._evaluate()

    def _on_tick(self, ev):
        old = self.wall
        if old is not None and ev.wall is not None:
            expected = old + (ev.mono - self.mono) // 1000
            if ev.mono >= self.mono and abs(ev.wall - expected) > 60:
                self.wall = ev.wall
                self._publish("clock_set", "clock_jump", {"old": expected, "new": ev.wall})
        pulses = self.filter.settle(ev.mono)
        if pulses:
            self._on_pulses(pulses, ev.wall, ev.mono)
            return
        self._advance(ev.wall, ev.mono)
        self.freezer.profile_step(self.wall, self.tz_s, self.energy_wh)
        self._evaluate()

    def _on_boot(self, ev):
        self.boots += 1
        self.wall = ev.wall
        self.mono = ev.mono
        self.arrears_since = None
        self.trip_postponed = False
        self.energy_mono = None  # mono may restart at boot: no load estimate across it
        self.filter = PulseFilter(self.cfg["pulse"])
        self.driver.boot()
        self.alarm_out = 0
        self._publish("power_up", "boot", {"boots": self.boots})
        self._mark("boot")
        self._advance(ev.wall, ev.mono)
        # A latching relay's position is unknown after power-up: re-drive it.
        self._actions.extend(self.driver.request(policy.closed_in(self.state), self.mono, force=True))
        self._evaluate()

    def _on_power_down(self, ev):
        self._advance(ev.wall, ev.mono)
        self._publish("power_down", ev.kind, {"energy_wh": self.energy_wh, "balance": self.account.balance})
        self._mark(ev.kind)

    def _on_set_clock(self, ev):
        old = self._wall_at(ev.mono)
        self.wall = ev.wall
        self.mono = ev.mono
        self._publish("clock_set", ev.source, {"old": old, "new": ev.wall})
        self._mark("clock")
        self._advance(ev.wall, ev.mono)
        self._evaluate()

    def _on_tamper(self, ev):
        self._advance(ev.wall, ev.mono)
        self._publish("cover_open" if ev.opened else "cover_close", "tamper_switch", {})
        self._mark("tamper")

    def _on_anomaly(self, ev):
        self._advance(ev.wall, ev.mono)
        data = ev.data if isinstance(ev.data, dict) else {}
        self._publish("plausibility", str(ev.reason), data)
        self._mark("anomaly")

    def _on_button(self, ev):
        self._advance(ev.wall, ev.mono)
        self._trigger(policy.BUTTON, "button_pressed")
        self._evaluate()

    def _on_feedback(self, ev):
        finding = self.driver.feedback(ev.closed, ev.mono)
        self.mono = ev.mono
        if finding is not None:
            self._publish("relay_failed", "moved_by_itself", {"expected": _pos(finding[1]), "observed": _pos(finding[2])})
            self._mark("relay_failed")
        self._poll_driver()

    def _on_topup(self, ev):
        self._advance(ev.wall, ev.mono)
        acc = self.account
        amount = ev.amount
        if not _int(amount) or amount <= 0:
            self._publish("topup_refused", results.BAD_ARGUMENT, {"ref": ev.ref, "source": ev.source})
            self._actions.append(Ack(ev.ref, results.BAD_ARGUMENT, acc.balance))
            return
        if acc.would_hoard(amount):
            self._publish("topup_refused", results.OVER_HOARDING_LIMIT, {"ref": ev.ref, "amount": amount, "balance": acc.balance, "source": ev.source})
            self._actions.append(Ack(ev.ref, results.OVER_HOARDING_LIMIT, acc.balance))
            return
        acc.credit(amount)
        self.purchase_count += 1
        self._publish("topup", results.ACCEPTED, {"ref": ev.ref, "amount": amount, "balance": acc.balance, "source": ev.source})
        self._mark("topup")
        self._evaluate()
        self._actions.append(Ack(ev.ref, results.ACCEPTED, acc.balance))

    # ============================================================ commands

    def _on_command(self, ev):
        self._advance(ev.wall, ev.mono)
        name = ev.name
        args = ev.args
        if name not in COMMAND_NAMES:
            code = results.UNKNOWN_COMMAND
        elif not isinstance(args, dict):
            code = results.BAD_ARGUMENT
        else:
            code = getattr(self, "_cmd_" + name)(args)
        self._publish("command", code, {"name": name, "ref": ev.ref})
        if code == results.ACCEPTED:
            self._mark("command")
        self._evaluate()
        self._actions.append(Ack(ev.ref, code, self.account.balance))

    def _relay_cmd(self, trigger):
        return self._trigger(trigger, "command_" + trigger)

    def _cmd_trip(self, args):
        return self._relay_cmd(policy.TRIP)

    def _cmd_close_allowed(self, args):
        return self._relay_cmd(policy.CLOSE_ALLOWED_CMD)

    def _cmd_close_direct(self, args):
        return self._relay_cmd(policy.CLOSE_DIRECT)

    def _cmd_guarantee_on(self, args):
        return self._relay_cmd(policy.GUARANTEE_ON)

    def _cmd_guarantee_off(self, args):
        return self._relay_cmd(policy.GUARANTEE_OFF)

    def _cmd_trip_then_close(self, args):
        minutes = args.get("minutes")
        then = args.get("then", "close")
        if not _int(minutes) or minutes <= 0 or minutes > 24 * 60 or then not in ("close", "allow"):
            return results.BAD_ARGUMENT
        code = self._relay_cmd(policy.TRIP)
        if code == results.ACCEPTED:
            self.timer_at = self.wall + minutes * 60
            self.timer_trigger = policy.CLOSE_DIRECT if then == "close" else policy.CLOSE_ALLOWED_CMD
        return code

    def _cmd_force_on(self, args):
        seconds = args.get("seconds", 0)
        if not _int(seconds) or seconds < 0:
            return results.BAD_ARGUMENT
        code = self._relay_cmd(policy.FORCE_ON)
        if code == results.ACCEPTED and self.state == policy.FORCED:
            self.force_until = self.wall + seconds if seconds else 0
        return code

    def _cmd_force_off(self, args):
        self.force_until = None
        return self._relay_cmd(policy.FORCE_OFF)

    def _cmd_alarm_on(self, args):
        self.alarm_forced = True
        return results.ACCEPTED

    def _cmd_alarm_off(self, args):
        self.alarm_forced = False
        return results.ACCEPTED

    def _cmd_set_mode(self, args):
        mode = args.get("mode")
        if mode not in (PREPAID, POSTPAID):
            return results.BAD_ARGUMENT
        self.account.mode = mode
        return results.ACCEPTED

    def _cmd_set_limits(self, args):
        new = dict(self.account.limits)
        for key in sorted(args):
            value = args[key]
            if key not in LIMIT_NAMES or not _int(value) or (value < 0 and key != "close_allowed"):
                return results.BAD_ARGUMENT
            new[key] = value
        if new["alarm1"] < new["alarm2"]:
            return results.BAD_ARGUMENT
        self.account.limits = new
        return results.ACCEPTED

    def _cmd_set_tariff(self, args):
        at = args.get("activate_at", 0)
        try:
            tariff = validate(args.get("tariff"), TARIFF_FIELDS, "tariff.")
        except ConfigError:
            return results.BAD_ARGUMENT
        if not _int(at) or at < 0 or check_tariff(tariff):
            return results.BAD_ARGUMENT
        self.account.set_passive(tariff, at)
        if self.account.switch_tariff(self.wall):
            self._publish("tariff", "tariff_set", {"kind": tariff["kind"]})
        return results.ACCEPTED

    def _cmd_clear_credit(self, args):
        self.account.clear()
        return results.ACCEPTED

    def _cmd_set_credit(self, args):
        # OpenPAYGO SET tokens and the head-end's restore of a lost store.
        amount = args.get("amount")
        if not _int(amount):
            return results.BAD_ARGUMENT
        self.account.credited += amount - self.account.balance
        self.account.balance = amount
        return results.ACCEPTED

    def _cmd_set_friendly(self, args):
        try:
            friendly = validate(args, FRIENDLY_FIELDS, "friendly.")
        except ConfigError:
            return results.BAD_ARGUMENT
        if check_friendly(friendly):
            return results.BAD_ARGUMENT
        self.account.friendly = friendly
        return results.ACCEPTED

    def _cmd_freeze(self, args):
        self.freezer.freeze_now(self.wall, self.energy_wh, self.regs.rate_wh(), self.account.balance)
        self._publish("freeze", "on_demand", {"energy_wh": self.energy_wh})
        return results.ACCEPTED

    def _cmd_set_clock(self, args):
        wall = args.get("wall")
        if not _int(wall) or wall < 0:
            return results.BAD_ARGUMENT
        old = self.wall
        self.wall = wall
        self._publish("clock_set", "command", {"old": old, "new": wall})
        self._advance(wall, self.mono)
        return results.ACCEPTED

    # ============================================================ deadlines

    def next_deadline(self):
        """Wall second by which the core next wants a Tick (or pending counts), or None."""
        wall = self.wall
        if wall is None:
            return None
        local = wall + self.tz_s
        minute = local % DAY // 60
        best = wall - local % DAY + self.account.tariff.next_slot_minute(minute) * 60
        nd = self.freezer.next_day_wall(self.tz_s)
        if nd is not None and nd < best:
            best = nd
        for t in (self.account.passive_at, self.force_until or None, self.timer_at):
            if t is not None and t < best:
                best = t
        if self.trip_postponed and wall + 60 < best:
            best = wall + 60  # re-check the load
        if self.arrears_since is not None:
            t = wall + (self.arrears_since + self.account.trip_delay_s * 1000 - self.mono + 999) // 1000
            if t < best:
                best = t if t > wall else wall + 1
            for edge in self.account.friendly_edges():
                t = wall - local % DAY + edge * 60
                if t <= wall:
                    t += DAY
                if t < best:
                    best = t
        dl = self.driver.deadline()
        if dl is not None:
            t = wall + (dl - self.mono + 999) // 1000
            if t < best:
                best = t if t > wall else wall
        return best

    # ============================================================ snapshot

    def snapshot(self):
        """All durable state as plain values (msgpack-able, no floats, no dict order)."""
        return [
            SNAPSHOT_VERSION,
            self.meter_id,
            self.boots,
            self.wall,
            self.regs.snapshot(),
            self.account.snapshot(),
            self.freezer.snapshot(),
            self.state,
            self.force_until,
            self.timer_at,
            self.timer_trigger,
            self.alarm_forced,
            self.log.snapshot(),
            self.filter.snapshot(),
            self.purchase_count,
        ]

    @classmethod
    def restore(cls, cfg, snap):
        """A Meter in the state ``snap`` (from ``snapshot``); ValueError if it does not fit."""
        meter = cls(cfg)
        try:
            if snap[0] != SNAPSHOT_VERSION:
                raise ValueError("snapshot version %r, expected %d" % (snap[0], SNAPSHOT_VERSION))
            if snap[1] != meter.meter_id:
                raise ValueError("snapshot is of meter %r, not %r" % (snap[1], meter.meter_id))
            (_, _, meter.boots, meter.wall, regs, acc, fr, state, meter.force_until, meter.timer_at, meter.timer_trigger, meter.alarm_forced, log, filt, meter.purchase_count) = snap
            meter.regs.restore(regs)
            meter.account.restore(acc)
            meter.freezer.restore(fr)
            if state not in policy.STATES:
                raise ValueError("unknown relay state %r" % (state,))
            meter.state = state
            meter.log.restore(log)
            meter.filter.restore(filt)
        except (ValueError, MemoryError):
            raise
        except Exception as exc:  # IndexError, TypeError, KeyError: a damaged shape
            raise ValueError("snapshot does not fit this meter: %r" % (exc,))
        return meter


def _pos(value):
    if value is None:
        return "unknown"
    return "closed" if value else "open"


def load_config(raw):
    """Validate a raw configuration dict for the core; raises ConfigError."""
    return validate(raw, SCHEMA)
