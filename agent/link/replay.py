"""Replay protection for commands arriving over MQTT (sans-I/O).

Every command the head-end seals carries a 64-bit sequence number ``n``
that only grows (per meter) and an expiry wall time.  The guard accepts a
number above the highest seen, or one of the ``WINDOW`` numbers below it
not seen yet (QoS 1 may deliver out of order after a reconnect); it
refuses a number already used (ALREADY_USED), older than the window
(TOO_OLD) or more than MAX_JUMP above the highest (REFUSED).  No field
can overflow in the product's life (the STS TID lesson): 2**64 commands.

``check`` changes nothing; ``commit`` records ``n`` and must be in the same
durable commit as the command's effect, so a redelivered command is
harmless.  ``snapshot``/``restore`` carry the state through the store.
"""

from agent import results

WINDOW = 64
N_MAX = (1 << 64) - 1
# Largest step above the highest number seen (as agent/tokens/mqtt.py's
# MAX_JUMP): an authentic n of 2**64-1 must not become the highest and
# refuse every later command.
MAX_JUMP = 1 << 20


def merge_window(high, mask, high2, mask2, width):
    """The union of two used-sets, each ``(high, mask)`` with bit i = ``high - i`` used.

    Keeps ``width`` bits; the result's high is the larger one.  Used to raise
    replay state to a high-water record and never to lower it.
    """
    if high2 > high:
        high, mask, high2, mask2 = high2, mask2, high, mask
    d = high - high2
    if d < width:
        mask |= mask2 << d
    return high, mask & ((1 << width) - 1)


def check_pair(value, what):
    """``value`` as ``(high, mask)`` of non-negative ints; ValueError naming ``what``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("%s: must be [high, mask]" % what)
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("%s: must be [high, mask] of non-negative ints" % what)
    return value[0], value[1]


class ReplayGuard:
    """Highest accepted sequence number plus a bitmask of the window below it."""

    __slots__ = ("high", "mask")

    def __init__(self):
        self.high = 0
        self.mask = 0  # bit i set: high - 1 - i was accepted

    def check(self, n, wall=None, expires=None):
        """None if ``n`` may be accepted, else the result code."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > N_MAX:
            return results.MALFORMED
        if expires is not None and wall is not None and wall > expires:
            return results.EXPIRED
        if n > self.high:
            return None if n - self.high <= MAX_JUMP else results.REFUSED
        if n == self.high:
            return results.ALREADY_USED
        back = self.high - n - 1
        if back >= WINDOW:
            return results.TOO_OLD
        if (self.mask >> back) & 1:
            return results.ALREADY_USED
        return None

    def commit(self, n):
        """Record ``n`` as used (call only after ``check(n)`` returned None)."""
        if n > self.high:
            shift = n - self.high
            if shift > WINDOW:
                self.mask = 0
            else:
                self.mask = ((self.mask << shift) | (1 << (shift - 1))) & ((1 << WINDOW) - 1)
            self.high = n
        else:
            self.mask |= 1 << (self.high - n - 1)

    def snapshot(self):
        """A msgpack-able value for the store."""
        return [self.high, self.mask]

    def raise_to(self, high, mask):
        """Add a used-set ``[high, mask]`` (as ``snapshot``) to this one; never lowers."""
        # Shift both to "bit i = high - i" (high itself is used when > 0), merge, shift back.
        a = (self.mask << 1) | (1 if self.high else 0)
        b = (mask << 1) | (1 if high else 0)
        self.high, full = merge_window(self.high, a, high, b, WINDOW + 1)
        self.mask = full >> 1

    def restore(self, snap):
        """Load a ``snapshot()``; ValueError if it does not fit."""
        if (
            not isinstance(snap, list)
            or len(snap) != 2
            or not isinstance(snap[0], int)
            or not isinstance(snap[1], int)
            or snap[0] < 0
            or snap[1] < 0
            or snap[1] >> WINDOW
        ):
            raise ValueError("replay guard snapshot: must be [high, mask] with a %d-bit mask" % WINDOW)
        self.high = snap[0]
        self.mask = snap[1]
