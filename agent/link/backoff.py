"""Reconnect backoff: exponential, with jitter and a cap (sans-I/O).

paho's own backoff doubles 1 s -> 120 s with no jitter, so a fleet that
lost its broker reconnects in lock-step.  Here every delay is drawn from
the upper half of the current step ("equal jitter"): never shorter than
half the step, so a flapping broker is not hammered, and spread enough
that a thousand meters do not arrive together.  The randomness is an
input (``rand``, any non-negative int from the shell's RNG) so tests are
deterministic.
"""


class Backoff:
    """Delays (ms) between connection attempts.

    ``base_ms`` first step, doubled after each failure up to ``cap_ms``.
    ``stable_ms``: a connection must last this long before the step falls
    back to ``base_ms`` (a broker that accepts then drops at once must not
    reset the backoff every time).
    """

    __slots__ = ("base_ms", "cap_ms", "stable_ms", "step_ms", "attempts", "_up_since")

    def __init__(self, base_ms=1000, cap_ms=120000, stable_ms=30000):
        if base_ms < 1 or cap_ms < base_ms:
            raise ValueError("backoff: need 1 <= base_ms <= cap_ms, got %r, %r" % (base_ms, cap_ms))
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.stable_ms = stable_ms
        self.step_ms = base_ms
        self.attempts = 0
        self._up_since = None

    def next_delay(self, rand):
        """Delay before the next attempt, then widen the step (up to the cap)."""
        step = self.step_ms
        half = step // 2
        delay = step - half + (rand % (half + 1))
        self.attempts += 1
        self.step_ms = min(self.cap_ms, step * 2)
        return delay

    def connected(self, mono):
        """The transport connected at ``mono`` ms."""
        self._up_since = mono

    def disconnected(self, mono):
        """The connection dropped at ``mono``: reset the step if it was stable."""
        if self._up_since is not None and mono - self._up_since >= self.stable_ms:
            self.step_ms = self.base_ms
            self.attempts = 0
        self._up_since = None
