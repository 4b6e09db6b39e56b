"""Latching-relay driver: turns a wanted position into safe coil pulses.

A latching relay has a set coil (close) and a reset coil (open) and keeps
its position without power, so after a restart the position is unknown
until it is driven or read back.  The driver

- pulses one coil at a time for ``pulse_ms`` and never starts a pulse
  before the previous one ended plus ``min_interval_ms`` (so the coils are
  never energised together, whatever the requests);
- reads the feedback contact ``settle_ms`` after a pulse, where wired;
- retries a failed operation with doubling backoff, then reports failure
  with what it expected and what it saw.

Sans-I/O: ``request``, ``feedback`` and ``poll`` return actions and
diagnostic findings; times are monotonic milliseconds.
"""

from agent.config import BOOL, INT, STR, Field, between, one_of
from agent.events import PulseCoil

SCHEMA = {
    "pulse_ms": Field(INT, 60, between(10, 250), doc="coil pulse width (latching relays: 40-100 ms typical)"),
    "min_interval_ms": Field(INT, 1000, between(0, 600000), doc="minimum time between two coil operations"),
    "settle_ms": Field(INT, 50, between(0, 10000), doc="wait after a pulse before reading the feedback contact"),
    "feedback": Field(BOOL, False, None, doc="a feedback (auxiliary) contact is wired"),
    "retries": Field(INT, 3, between(0, 10), doc="retries after a failed operation"),
    "retry_backoff_ms": Field(INT, 2000, between(0, 3600000), doc="first retry delay; doubles on each retry"),
    "reconnect": Field(STR, "auto", one_of("auto", "button"), doc="after a top-up: close at once, or wait for the button"),
    "high_load_w": Field(INT, 0, between(0, 1000000), doc="do not cut for arrears while the load is above this (0 = off): spares the contacts"),
    "high_load_hold_s": Field(INT, 1800, between(0, 86400), doc="... but at most this long past the trip delay"),
}

IDLE = 0
PULSING = 1  # a pulse is running; verify when it has settled
WAITING = 2  # waiting for the spacing or a retry backoff before the next pulse


class RelayDriver:
    """State of one latching relay and its pending operation."""

    __slots__ = (
        "pulse_ms",
        "min_interval",
        "settle",
        "has_feedback",
        "retries",
        "backoff",
        "target",
        "driving",
        "position",
        "sensed",
        "phase",
        "due",
        "free_at",
        "attempt",
        "failed",
        "operations",
    )

    def __init__(self, cfg):
        self.pulse_ms = cfg["pulse_ms"]
        self.min_interval = cfg["min_interval_ms"]
        self.settle = cfg["settle_ms"]
        self.has_feedback = cfg["feedback"]
        self.retries = cfg["retries"]
        self.backoff = cfg["retry_backoff_ms"]
        self.target = None  # wanted position: True closed, False open
        self.driving = None  # position the running pulse drives to
        self.position = None  # believed position; None = unknown (after boot)
        self.sensed = None  # last feedback reading
        self.phase = IDLE
        self.due = 0  # when the current phase ends (mono ms)
        self.free_at = None  # earliest start of the next pulse
        self.attempt = 0
        self.failed = False
        self.operations = 0

    def boot(self):
        """After a restart the contact position is unknown until driven or sensed."""
        self.position = self.sensed if self.has_feedback else None
        self.phase = IDLE
        self.free_at = None
        self.attempt = 0
        self.failed = False

    def request(self, closed, mono, force=False):
        """Want the relay ``closed`` (True) or open; returns actions."""
        if self.target == closed and not force and (self.phase != IDLE or self.position == closed):
            return []
        self.target = closed
        self.attempt = 0
        self.failed = False
        if self.phase == PULSING:
            return []  # verify() of the running pulse will start the next one
        if self.position == closed and not force:
            self.phase = IDLE
            return []
        return self._start(mono)

    def _start(self, mono):
        if self.free_at is not None and mono < self.free_at:
            self.phase = WAITING
            self.due = self.free_at
            return []
        self.phase = PULSING
        self.driving = self.target
        self.operations += 1
        self.due = mono + self.pulse_ms + self.settle
        self.free_at = mono + self.pulse_ms + self.min_interval
        return [PulseCoil("set" if self.target else "reset", self.pulse_ms)]

    def feedback(self, closed, mono):
        """The feedback contact reads ``closed``; returns a finding or None."""
        self.sensed = closed
        if self.has_feedback and self.phase == IDLE:
            changed = self.position is not None and closed != self.position
            self.position = closed
            if changed and self.target is not None and closed != self.target:
                return ("moved", self.target, closed)
        return None

    def deadline(self):
        """Mono ms at which ``poll`` must run next, or None."""
        return self.due if self.phase != IDLE else None

    def poll(self, mono):
        """Advance timers; returns (actions, finding) where finding is None,
        ("done", target, position) or ("failed", target, observed, attempts)."""
        if self.phase == IDLE or mono < self.due:
            return [], None
        if self.phase == WAITING:
            return self._start(mono), None
        # A pulse has finished and settled: check where the contact went.
        observed = self.sensed if self.has_feedback else self.driving
        if observed == self.driving:
            self.position = observed
            self.phase = IDLE
            self.attempt = 0
            actions = []
            if self.target != observed:
                # The wanted position changed while the pulse ran.
                actions = self._start(mono)
            return actions, ("done", observed, observed)
        self.position = observed
        if self.target != self.driving:
            self.attempt = 0
            return self._start(mono), None
        if self.attempt < self.retries:
            self.attempt += 1
            self.phase = WAITING
            wait = self.backoff << (self.attempt - 1)
            self.due = mono + wait if mono + wait > self.free_at else self.free_at
            return [], None
        self.phase = IDLE
        self.failed = True
        return [], ("failed", self.target, observed, self.attempt + 1)
