"""Wrong-entry lockout for keypad tokens, with exponential backoff.

A random 9-digit guess is accepted with probability ~1e-4 (the window
holds ~100 counts, each matching one code in 10**6 for its value), so the
keypad must be slowed down.  After ``FREE`` wrong entries in a row, the
keypad locks for 1 minute, doubling with each further wrong entry up to
512 minutes (the OpenPAYGO recommendation).  A correct token resets it.

The lock is measured on the monotonic clock and counts only while the
device is powered: its remaining time is part of the durable snapshot and
starts running again at the first event after a restore.  So neither a
power cycle nor setting the wall clock shortens it (STS's lockout was
reset by a power cycle, which made it useless against brute force).
"""

FREE = 3
FIRST_MS = 60 * 1000
MAX_MS = 512 * 60 * 1000


class Lockout:
    """Consecutive wrong entries and the running lock, if any."""

    __slots__ = ("fails", "until", "pending", "last_mono")

    def __init__(self):
        self.fails = 0
        self.until = None  # mono ms the lock ends, when anchored
        self.pending = 0  # ms of lock restored from a snapshot, not yet anchored
        self.last_mono = None

    def _see(self, mono):
        # Anchor restored time and survive a monotonic clock that restarted.
        if self.pending:
            self.until = mono + self.pending
            self.pending = 0
        elif self.last_mono is not None and mono < self.last_mono and self.until is not None:
            self.until = mono + (self.until - self.last_mono)
        self.last_mono = mono

    def remaining_ms(self, mono):
        """Milliseconds of lock left at ``mono`` (0 = free)."""
        self._see(mono)
        if self.until is None or mono >= self.until:
            return 0
        return self.until - mono

    def duration_ms(self):
        """Lock the next wrong entry would start."""
        over = self.fails + 1 - FREE
        if over < 0:
            return 0
        if over >= 10:
            return MAX_MS
        return min(MAX_MS, FIRST_MS << over)

    def wrong(self, mono):
        """Record a wrong entry at ``mono``; return the lock it started (ms)."""
        self._see(mono)
        ms = self.duration_ms()
        self.fails += 1
        if ms:
            self.until = mono + ms
        return ms

    def right(self):
        """A correct token: forget the wrong entries."""
        self.fails = 0
        self.until = None
        self.pending = 0

    def snapshot(self):
        left = self.pending
        if self.until is not None and self.last_mono is not None:
            left = max(0, self.until - self.last_mono)
        return {"f": self.fails, "r": left}

    def restore(self, snap):
        try:
            fails, left = snap["f"], snap["r"]
        except (KeyError, TypeError):
            raise ValueError("lockout snapshot: missing fields")
        for v in (fails, left):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError("lockout snapshot: fields must be non-negative ints")
        self.fails = fails
        self.pending = min(left, MAX_MS)
        self.until = None
        self.last_mono = None
