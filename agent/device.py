"""The durability layer between the meter core and its shell.

``Device`` owns a ``Meter`` and a ``Store``.  It restores the meter at
boot, commits before anything the commit justifies leaves the device
(an ``Ack``, a relay close), takes bounded checkpoints of energy and
balance, and commits on the power-fail signal and on clean shutdown.

Guarantees (see docs/store.md):
- every ``Persist`` the core asks for is committed before ``feed``
  returns; the returned actions no longer contain ``Persist``;
- other parts changed with the same event are in that same commit:
  ``feed(event, before_commit)`` calls ``before_commit(actions)`` after
  the core and before the commit; it may update other parts (and add
  actions) and returns a commit reason when it changed one, else None;
- ``commit(reason)`` commits what changed outside any event (a part
  alone: a keypad lockout, a link message refused);
- checkpoints every ``checkpoint_s`` seconds (if energy or balance moved)
  and, when ``checkpoint_wh`` > 0, whenever that much energy accrued;
- after boot a ``store``/``unaccounted_energy`` record says how much
  energy an unclean cut may have lost (0 after PowerFail/Shutdown);
- when files exist but none can be restored, the device boots a fresh
  meter in guarantee (supply on), publishes ``state_lost`` with what was
  found, and keeps ``balance_valid`` False until the head-end clears it;
- every commit but a plain checkpoint also writes the marks record (commit
  counter, replay high-water marks of the parts, event record floor): at
  boot a state older than the marks (damage to the newest file) is state
  lost too ("rolled_back"), and the marks are raised into the parts
  whatever was restored, so no token is accepted twice and no outbox
  sequence is reused;
- free supply after a loss ends after ``lost_supply_s`` (an event says so);
- stored state that does not fit the config (another meter id, keypad key
  removed or changed, older key revision) raises ConfigError naming the
  key, before anything is written.

The stored value is a dict of parts: {"v": 1, "meter": ..., "device":
..., <part name>: ...}; other durable parts (the token replay guard)
register with ``add_part(name, obj)``: ``obj.snapshot()`` -> value,
``obj.restore(value)`` (value None when the store had none); a part with
replay state also has ``marks()`` (a small value) and ``raise_marks(value)``
(merge a marks value in: never lowers anything; ValueError if damaged,
ConfigError if it does not fit the config).

``next_deadline()`` is the wall second of the next Tick the meter or a
checkpoint needs, so a shell may sleep until it.
"""

import gc

from agent.config import INT, ConfigError, Field, at_least
from agent.events import Boot, Command
from agent.store import BASE_LOST, OTHER_METER, REJECTED, Finding, StoreError

DEVICE_VERSION = 1

STORE_FIELDS = {
    "checkpoint_s": Field(INT, 60, at_least(1), doc="seconds between checkpoints of energy and balance"),
    "checkpoint_wh": Field(INT, 0, at_least(0), doc="also checkpoint after this many Wh (0 = off; costs flash wear)"),
    "lost_supply_s": Field(INT, 7 * 86400, at_least(0), doc="seconds of free supply (guarantee) after the stored "
                           "state is lost; then the meter runs on the balance it has until restored"),
}

_RESERVED = ("v", "meter", "device")
_STATE_LOST_REF = "state_lost"
RETRY_S = 5  # a failing store is retried this often (and on every event while acks wait)


def store_settings(cfg):
    """The ``store`` section of a config, with defaults when it is absent."""
    sc = cfg.get("store") if isinstance(cfg, dict) else None
    out = {"checkpoint_s": 60, "checkpoint_wh": 0, "lost_supply_s": 7 * 86400}
    if sc:
        for k in sorted(out):
            if k in sc:
                out[k] = sc[k]
    return out


class Device:
    """One meter plus its durable store.  ``boot`` once, then ``feed`` events."""

    def __init__(self, cfg, store):
        from agent.meter import Meter

        self.cfg = cfg
        self.store = store
        self.meter_class = Meter
        sc = store_settings(cfg)
        self.checkpoint_s = sc["checkpoint_s"]
        self.checkpoint_wh = sc["checkpoint_wh"]
        self.lost_supply_s = sc["lost_supply_s"]
        self.supply_max_w = cfg["meter"]["supply_max_w"]
        self.meter = None
        self.parts = {}
        self.state_lost = 0  # wall second the state was found lost; 0 = state is genuine
        self.lost_ended = False  # the free supply after the loss has ended
        self.counter = 0  # commits ever made (stored): compared with the marks at boot
        self._marks_due = True  # the next commit must write the marks record
        self.findings = []
        self.source = None  # which files the state came from
        self.withheld = []  # Ack / close pulses waiting for a commit that failed
        self.store_error = None
        self.commits = 0
        self._mark_mono = 0
        self._fail_mono = 0  # mono ms of the last commit that failed
        self._mark_total = None
        self._mark_balance = None
        self._clean = False

    # --------------------------------------------------------------- parts

    def add_part(self, name, part):
        """Register another durable part (before ``boot``)."""
        if name in _RESERVED or not isinstance(name, str):
            raise ValueError("device part name %r is reserved or not a string" % (name,))
        self.parts[name] = part

    @property
    def balance_valid(self):
        """False while the balance is a fresh default after lost state."""
        return not self.state_lost

    # ---------------------------------------------------------------- boot

    def boot(self, wall, mono, before_commit=None):
        """Load the store, restore (or start) the meter, feed Boot; returns actions.

        ``before_commit(actions)`` sees every boot record (the core's and the
        device's own) before the boot commit; see ``feed``.  Raises
        ConfigError (and writes nothing) when the stored state belongs to
        another configuration.
        """
        # Free what setup left behind: reading a slot needs a contiguous
        # 4 KB buffer, and a board's heap is small and fragments.  Only on
        # MicroPython (mem_free is its own): CPython's full collection is slow.
        if hasattr(gc, "mem_free"):
            gc.collect()
        loads, findings, had_files = self.store.load()
        marks, mfind, had_marks = self.store.load_marks()
        findings.extend(mfind)
        other = _has(findings, OTHER_METER)
        if other is not None:
            raise ConfigError("meter.id", "the data directory holds another meter's state (%s: %s); "
                              "use that meter's config or another data directory" % (other.file, other.detail))
        meter = None
        dev = {}
        for loaded in loads:
            v = loaded.value
            try:
                if not isinstance(v, dict) or v.get("v") != DEVICE_VERSION:
                    raise ValueError("device state version %r, expected %d" % (v.get("v") if isinstance(v, dict) else v, DEVICE_VERSION))
                meter = self.meter_class.restore(self.cfg, v.get("meter"))
                for name in sorted(self.parts):
                    self.parts[name].restore(v.get(name))
                dev = v.get("device")
                if not isinstance(dev, dict):
                    dev = {}
            except (MemoryError, ConfigError):
                # Out of RAM is not damage, and a config that does not fit is
                # the operator's to fix: never fall back to an older state for it.
                raise
            except Exception as e:  # any damage must end in a finding, never a crash loop
                meter = None
                findings.append(Finding(loaded.source, REJECTED, "cannot restore: %s" % (e,)))
                continue
            self.store.adopt(loaded)
            self.source = loaded.source
            break
        lost_now = None
        if meter is None:
            self.store.adopt(None)
            for name in sorted(self.parts):
                self.parts[name].restore(None)
            meter = self.meter_class(self.cfg)
            if had_files or had_marks:
                lost_now = "no_valid_state"
        self.meter = meter
        self.findings = findings
        stored_n = _uint(dev.get("n"))
        marks_n = self._raise_marks(marks, findings)
        if lost_now is None and self.source is not None and (stored_n < marks_n or _has(findings, BASE_LOST)):
            # Newer commits are gone (a damaged file) and an older state
            # loaded: it may lack acknowledged top-ups.  The marks keep the
            # replay protection; the balance needs the head-end.
            lost_now = "rolled_back"
        self.counter = max(stored_n, marks_n)
        self.state_lost = _uint(dev.get("lost"))
        self.lost_ended = dev.get("lost_end") is True
        if lost_now:
            self.state_lost = wall if wall else 1
            self.lost_ended = False

        actions = meter.handle(Boot(wall, mono))
        if self.state_lost:
            if not self.lost_ended:
                # Keep the supply on: a meter that lost its balance must not cut anyone off (for a while).
                self._relay(actions, "guarantee_on", wall, mono)
            actions.append(
                self._record(
                    "state_lost",
                    lost_now or "still_unresolved",
                    {
                        "since": self.state_lost,
                        "balance_valid": False,
                        "found": [f.as_dict() for f in findings],
                        "state_commit": stored_n,
                        "marks_commit": marks_n,
                        "free_until": None if self.lost_ended else self.state_lost + self.lost_supply_s,
                    },
                )
            )
            self._end_free_supply(actions, wall, mono)
        elif findings:
            actions.append(self._record("store", "skipped_files", {"found": [f.as_dict() for f in findings], "used": self.source}))
        if not lost_now and (loads or had_files):
            damaged = False
            for f in findings:
                if not f.file.endswith(".tmp"):
                    damaged = True
            actions.append(self._record("store", "unaccounted_energy", self._unaccounted(dev, damaged)))
        if before_commit is not None:
            before_commit(actions)
        self._commit("boot", actions)
        return self._finish(actions)

    def _raise_marks(self, marks, findings):
        """Raise the parts' replay state to the marks record; its commit number (0 if none)."""
        if marks is None:
            return 0
        n = marks.get("n") if isinstance(marks, dict) else None
        parts = marks.get("p") if isinstance(marks, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(parts, dict):
            findings.append(Finding("mark", REJECTED, "marks record of an unknown shape"))
            return 0
        for name in sorted(self.parts):
            part = self.parts[name]
            if hasattr(part, "raise_marks") and parts.get(name) is not None:
                try:
                    part.raise_marks(parts[name])
                except (MemoryError, ConfigError):
                    raise
                except Exception as e:
                    findings.append(Finding("mark", REJECTED, "%s: %s" % (name, e)))
        floor = _uint(marks.get("evt"))
        if floor > self.meter.log.seq:
            self.meter.log.seq = floor  # event record numbers already published are never reused
        return n

    def _relay(self, actions, command, wall, mono):
        # A relay command of the device's own: its ack is not for anyone.
        more = self.meter.handle(Command(command, {}, _STATE_LOST_REF, wall, mono))
        actions.extend(a for a in more if not (a.kind == "ack" and a.ref == _STATE_LOST_REF))

    def _end_free_supply(self, actions, wall, mono):
        """End the guarantee of a lost state once ``lost_supply_s`` has passed; True if it ended now."""
        if not self.state_lost or self.lost_ended or wall is None or wall < self.state_lost + self.lost_supply_s:
            return False
        self.lost_ended = True
        self._relay(actions, "guarantee_off", wall, mono)
        actions.append(self._record("state_lost", "free_supply_ended", {
            "since": self.state_lost, "limit_s": self.lost_supply_s, "balance": self.meter.balance}))
        return True

    def _unaccounted(self, dev, damaged):
        """How much energy an unclean cut (or a damaged newest checkpoint) may have lost."""
        clean = dev.get("clean") is True and not damaged
        if clean:
            most = 0
        else:
            # pulses metered after the last commit and before the next due checkpoint
            most = (self.supply_max_w * self.checkpoint_s + 3599) // 3600
            if self.checkpoint_wh and self.checkpoint_wh < most:
                most = self.checkpoint_wh
        return {
            "clean": clean,
            "max_wh": most,
            "checkpoint_wall": dev.get("wall"),
            "energy_wh": self.meter.energy_wh,
        }

    # ---------------------------------------------------------------- feed

    def feed(self, event, before_commit=None):
        """Run one event through the meter; commit what must be durable; return actions.

        ``before_commit(actions)``, when given, runs after the core and
        before the commit on every event: it sees the core's actions, may
        update other parts and append actions, and returns a commit reason
        (a str) when it changed a part, else None.  So one atomic commit
        holds the event's effect on every part before any Ack or close
        pulse is returned.
        """
        actions = self.meter.handle(event)
        kind = event.kind
        reason = None
        for a in actions:
            if a.kind == "persist":
                reason = a.reason
                break
        if self._end_free_supply(actions, self.meter.wall, event.mono) and reason is None:
            reason = "free_supply_ended"
        if before_commit is not None:
            extra = before_commit(actions)
            if reason is None and extra:
                reason = extra
        clean = kind == "power_fail" or kind == "shutdown"
        if reason is None and (clean or self._checkpoint_due(event.mono)):
            reason = kind if clean else "checkpoint"
        if reason is None and self.store_error is not None and event.mono - self._fail_mono >= RETRY_S * 1000:
            reason = "retry"
        if reason is not None or self.withheld:
            self._commit(reason or "retry", actions, clean)
        return self._finish(actions)

    def _checkpoint_due(self, mono):
        m = self.meter
        total = m.regs.total
        if total == self._mark_total and m.balance == self._mark_balance:
            return False
        if mono - self._mark_mono >= self.checkpoint_s * 1000:
            return True
        if self.checkpoint_wh and self._mark_total is not None:
            return total - self._mark_total >= self.checkpoint_wh * m.constant  # units of 1/C Wh
        return False

    def commit(self, reason):
        """Commit every part now (a part changed outside any event); returns actions.

        The actions are the device's own: ``store`` records of a failed or
        recovered commit and the Acks / close pulses a failed commit held
        back, released now that one worked.  True durability is in
        ``store_error`` (None after a commit that worked).
        """
        actions = []
        self._commit(reason, actions)
        return actions

    def next_deadline(self):
        """Wall second of the next Tick the meter or a checkpoint needs (or None).

        A checkpoint is due ``checkpoint_s`` after the last commit once
        energy or balance moved; a failed commit holding back acks is
        retried within ``RETRY_S``.
        """
        m = self.meter
        if m is None:
            return None
        best = m.next_deadline()
        wall = m.wall
        if wall is None:
            return best
        t = None
        if self.withheld or self.store_error is not None:
            t = wall + RETRY_S
        elif m.regs.total != self._mark_total or m.balance != self._mark_balance:
            due = self._mark_mono + self.checkpoint_s * 1000
            # in wall seconds, rounded up so the Tick at that second finds it due
            t = wall + (due - m.mono + 999) // 1000
            if t < wall:
                t = wall
        if self.state_lost and not self.lost_ended:
            end = self.state_lost + self.lost_supply_s
            if t is None or end < t:
                t = end
        if t is not None and (best is None or t < best):
            best = t
        return best

    def clear_state_lost(self, wall, mono, before_commit=None):
        """The head-end vouched for the state (restored or reviewed it): end the flag.

        ``before_commit`` as for ``feed``.
        """
        if not self.state_lost:
            return []
        self.state_lost = 0
        actions = [self._record("state_lost", "cleared", {})]
        if not self.lost_ended:
            self._relay(actions, "guarantee_off", wall, mono)
        self.lost_ended = False
        if before_commit is not None:
            before_commit(actions)
        self._commit("state_lost_cleared", actions)
        return self._finish(actions)

    # ------------------------------------------------------------ internals

    def _record(self, kind, reason, data):
        return self.meter.note(kind, reason, data)

    def value(self, reason, clean=False):
        """The dict of parts that is stored."""
        m = self.meter
        v = {
            "v": DEVICE_VERSION,
            "meter": m.snapshot(),
            "device": {"lost": self.state_lost, "lost_end": self.lost_ended, "clean": clean, "reason": reason,
                       "wall": m.wall, "n": self.counter},
        }
        for name in sorted(self.parts):
            v[name] = self.parts[name].snapshot()
        return v

    def marks(self):
        """The marks record: commit counter, event record floor, the parts' marks."""
        parts = {}
        for name in sorted(self.parts):
            part = self.parts[name]
            if hasattr(part, "marks"):
                parts[name] = part.marks()
        return {"evt": self.meter.log.seq, "n": self.counter, "p": parts}

    def _commit(self, reason, actions, clean=False):
        # Every commit but a plain checkpoint may release something (an ack,
        # an outbox entry, a used token): the marks record goes with it.  A
        # checkpoint only moves energy, bounded like an unclean cut.
        if reason != "checkpoint":
            self._marks_due = True
        self.counter += 1
        try:
            self.store.commit(self.value(reason, clean), full=reason == "boot")
            if self._marks_due:
                self.store.commit_marks(self.marks())
        except StoreError as e:
            self._fail_mono = self.meter.mono
            # Durable before acknowledged: hold back acks and closes until a commit works.
            if self.store_error is None:
                actions.append(self._record("store", "commit_failed", {"error": str(e)}))
            self.store_error = str(e)
            keep = []
            for a in actions:
                if a.kind == "ack" or (a.kind == "pulse_coil" and a.coil == "set"):
                    self.withheld.append(a)
                else:
                    keep.append(a)
            actions[:] = keep
            return False
        self.commits += 1
        self._marks_due = False
        m = self.meter
        self._mark_mono = m.mono
        self._mark_total = m.regs.total
        self._mark_balance = m.balance
        if self.store_error is not None:
            self.store_error = None
            actions.append(self._record("store", "commit_recovered", {}))
        if self.withheld:
            # A close held back while commits failed is stale once the relay
            # was told to open since (credit ran out again): released after
            # that open pulse it would leave a tripped relay closed.
            stale = not self.meter.relay_closed or any(a.kind == "pulse_coil" and a.coil == "reset" for a in actions)
            for a in self.withheld:
                if not (stale and a.kind == "pulse_coil" and a.coil == "set"):
                    actions.append(a)
            self.withheld = []
        return True

    def _finish(self, actions):
        return [a for a in actions if a.kind != "persist"]


def _has(findings, problem):
    """The first finding with ``problem``, or None."""
    for f in findings:
        if f.problem == problem:
            return f
    return None


def _uint(v):
    """``v`` if it is a non-negative int (not a bool), else 0."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
