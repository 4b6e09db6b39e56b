"""Plausibility checks on the pulse stream: too fast, or flowing while cut.

A pulse rate above what the supply can physically deliver means a faulty
input or tampering; pulses while the relay is known to be open mean a
bypass (or a welded contact).  Both are reported, at most once per window,
so a fault cannot flood the event log.
"""

WINDOW_MS = 60000


class Plausibility:
    """Windowed rate check and bypass detection."""

    __slots__ = ("max_w", "constant", "window_start", "window_pulses", "bypass_reported")

    def __init__(self, supply_max_w, constant):
        self.max_w = supply_max_w
        self.constant = constant
        self.window_start = None
        self.window_pulses = 0
        self.bypass_reported = False

    def pulses(self, count, mono, relay_open):
        """Account ``count`` pulses at ``mono``; returns a list of (reason, data) findings."""
        found = []
        if relay_open and count and not self.bypass_reported:
            self.bypass_reported = True
            found.append(("pulses_while_open", {"pulses": count}))
        if self.window_start is None or mono < self.window_start:
            self.window_start = mono
            self.window_pulses = 0
        self.window_pulses += count
        span = mono - self.window_start
        if span >= WINDOW_MS:
            # pulses * 1000/C Wh over span ms, against max_w W: compare in integers,
            # allowing one pulse of slack for the window edges.
            if (self.window_pulses - 1) * 1000 * 3600000 > self.max_w * span * self.constant:
                watts = self.window_pulses * 1000 * 3600000 // (span * self.constant)
                found.append(("rate_too_high", {"watts": watts, "limit_w": self.max_w}))
            self.window_start = mono
            self.window_pulses = 0
        return found

    def relay_closed(self):
        """The relay closed again: a later bypass is a new finding."""
        self.bypass_reported = False
