"""Pulse filter: turns raw input edges into counted meter pulses.

A level only counts once it has held for its minimum width (so contact
bounce and glitches never make a pulse), a repeated level is a ghost edge
and is ignored (counting both edges, or the same level twice, is how
ESPHome and Tasmota users got doubled totals), and two counted pulses must
start at least ``min_gap_ms`` apart.  Edges carry their own timestamps, so
the filter is exact however late the shell delivers them.
"""

from agent.config import INT, Field, between

SCHEMA = {
    "min_high_ms": Field(INT, 25, between(1, 10000), doc="a pulse must stay active at least this long (S0: >= 30 ms pulses)"),
    "min_low_ms": Field(INT, 20, between(1, 10000), doc="the input must rest inactive at least this long between pulses"),
    "min_gap_ms": Field(INT, 50, between(0, 60000), doc="minimum time between the starts of two counted pulses"),
}


class PulseFilter:
    """Edge-in, pulse-count-out debounce state machine.

    Feed ``edge(level, mono)`` for every interrupt and ``settle(mono)`` on
    clock ticks; both return how many new pulses were accepted.
    """

    __slots__ = ("min_high", "min_low", "min_gap", "raw", "raw_since", "stable", "last_count", "ghosts", "glitches")

    def __init__(self, cfg):
        self.min_high = cfg["min_high_ms"]
        self.min_low = cfg["min_low_ms"]
        self.min_gap = cfg["min_gap_ms"]
        self.raw = 0
        self.raw_since = None
        self.stable = 0
        self.last_count = None
        self.ghosts = 0
        self.glitches = 0

    def settle(self, mono):
        """Accept the current raw level if it has held long enough by ``mono``."""
        if self.raw == self.stable or self.raw_since is None:
            return 0
        need = self.min_high if self.raw else self.min_low
        if mono - self.raw_since < need:
            return 0
        self.stable = self.raw
        if not self.stable:
            return 0
        start = self.raw_since
        if self.last_count is not None and start - self.last_count < self.min_gap:
            self.glitches += 1
            return 0
        self.last_count = start
        return 1

    def edge(self, level, mono):
        """A level change seen at ``mono``; returns pulses accepted (0 or 1)."""
        level = 1 if level else 0
        if self.raw_since is not None and mono < self.raw_since:
            # A timestamp going backwards means the tick counter restarted:
            # start afresh rather than measure a negative width.
            self.raw_since = mono
        counted = self.settle(mono)
        if level == self.raw:
            self.ghosts += 1
            return counted
        if self.raw != self.stable:
            self.glitches += 1
        self.raw = level
        self.raw_since = mono
        return counted

    def snapshot(self):
        """Counters worth keeping across restarts (diagnostics only)."""
        return [self.ghosts, self.glitches]

    def restore(self, snap):
        """Load ``snapshot`` output; the level state restarts at boot."""
        self.ghosts, self.glitches = snap[0], snap[1]
