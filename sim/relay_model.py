"""A latching relay with set and reset coils, its faults, and a safety referee.

The contact moves when a coil pulse lasts at least ``min_operate_ms``: the
set coil closes it (supply on), the reset coil opens it.  Without power it
stays where it was, so after a power cycle the position is unchanged.

Every pulse is recorded and checked against the rules a driver must keep:

- ``overlap``: both coils energised at once (a pulse starting before the
  other coil's pulse ended);
- ``retrigger``: a coil pulsed again while its previous pulse still ran;
- ``too_short`` / ``too_long``: width outside ``[min_width_ms, max_width_ms]``
  (a long pulse overheats the coil);
- ``too_soon``: less than ``min_interval_ms`` from the end of the previous
  pulse to the start of this one (the core's driver keeps the same spacing);
- ``time_backwards``: a pulse earlier than the previous one without
  ``power_cycle()`` in between (a bug in whoever drives the model).

Violations are appended to ``violations`` as ``(rule, mono_ms, detail)``;
tests and the runner assert the list stays empty.

Faults (settable at construction or with ``set_fault``):

- ``stuck``: the armature does not move, whatever the coils do;
- ``welded``: the main contacts are welded closed: they and their mirror
  (feedback) contact read closed and nothing moves, whatever the coils do
  (clearing the fault, a repair, restores the armature's position);
- ``open_set`` / ``open_reset``: that coil is broken (open circuit) and
  its pulses do nothing.

``miss_rate`` (with ``rng``) makes an otherwise good operation fail now and
then, for fleet statistics of remote cut/reconnect success.
"""

COILS = ("set", "reset")
FAULTS = ("stuck", "welded", "open_set", "open_reset")


class LatchingRelay:
    """The physical relay: ``apply`` coil pulses, read ``closed`` and ``feedback()``."""

    __slots__ = (
        "_closed",
        "faults",
        "min_operate_ms",
        "min_width_ms",
        "max_width_ms",
        "min_interval_ms",
        "feedback_wired",
        "miss_rate",
        "rng",
        "pulses",
        "violations",
        "operations",
        "_last",
    )

    def __init__(
        self,
        closed=False,
        faults=(),
        min_operate_ms=20,
        min_width_ms=20,
        max_width_ms=250,
        min_interval_ms=100,
        feedback_wired=True,
        miss_rate=0.0,
        rng=None,
    ):
        for name, value in (
            ("min_operate_ms", min_operate_ms),
            ("min_width_ms", min_width_ms),
            ("max_width_ms", max_width_ms),
            ("min_interval_ms", min_interval_ms),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("relay %s must be an integer >= 0, got %r" % (name, value))
        if max_width_ms < min_width_ms:
            raise ValueError("relay max_width_ms (%d) is below min_width_ms (%d)" % (max_width_ms, min_width_ms))
        if not isinstance(miss_rate, (int, float)) or isinstance(miss_rate, bool) or not 0 <= miss_rate <= 1:
            raise ValueError("relay miss_rate must be a probability in 0..1, got %r" % (miss_rate,))
        if miss_rate and rng is None:
            raise ValueError("relay miss_rate needs rng, a random.Random")
        self._closed = bool(closed)
        self.faults = set()
        for fault in faults:
            self.set_fault(fault)
        self.min_operate_ms = min_operate_ms
        self.min_width_ms = min_width_ms
        self.max_width_ms = max_width_ms
        self.min_interval_ms = min_interval_ms
        self.feedback_wired = bool(feedback_wired)
        self.miss_rate = miss_rate
        self.rng = rng
        self.pulses = []  # (coil, width_ms, mono_ms, moved)
        self.violations = []  # (rule, mono_ms, detail)
        self.operations = 0  # times the contact actually changed position
        self._last = {}  # coil -> (start, end) of its last pulse

    def set_fault(self, fault, on=True):
        """Switch fault ``fault`` (one of ``FAULTS``) on or off."""
        if fault not in FAULTS:
            raise ValueError("relay fault %r is unknown (known: %s)" % (fault, ", ".join(FAULTS)))
        if on:
            self.faults.add(fault)
        else:
            self.faults.discard(fault)

    @property
    def closed(self):
        """Actual position of the main contacts (True = closed, supply on)."""
        return True if "welded" in self.faults else self._closed

    def feedback(self):
        """What the auxiliary (mirror) contact reads: ``closed``, or None if not wired."""
        return self.closed if self.feedback_wired else None

    def power_cycle(self):
        """The driving electronics restarted: the monotonic clock may restart.

        The contacts keep their position (latching); only the timing rules
        start afresh.
        """
        self._last = {}

    def apply(self, coil, width_ms, mono_ms):
        """Energise ``coil`` ("set" or "reset") for ``width_ms`` from ``mono_ms``.

        Records the pulse and any rule it breaks; returns True if the
        contact position changed.
        """
        if coil not in COILS:
            raise ValueError("relay coil must be 'set' or 'reset', got %r" % (coil,))
        for name, value in (("width_ms", width_ms), ("mono_ms", mono_ms)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("relay pulse %s must be an integer >= 0, got %r" % (name, value))
        end = mono_ms + width_ms
        self._check(coil, width_ms, mono_ms)
        self._last[coil] = (mono_ms, end)

        want = coil == "set"
        moved = False
        if (
            width_ms >= self.min_operate_ms
            and "stuck" not in self.faults
            and "welded" not in self.faults
            and ("open_" + coil) not in self.faults
            and self._closed != want
        ):
            if not (self.miss_rate and self.rng.random() < self.miss_rate):
                self._closed = want
                moved = True
                self.operations += 1
        self.pulses.append((coil, width_ms, mono_ms, moved))
        return moved

    def _check(self, coil, width_ms, mono_ms):
        bad = self.violations
        if width_ms < self.min_width_ms:
            bad.append(("too_short", mono_ms, "%s pulse %d ms < %d ms" % (coil, width_ms, self.min_width_ms)))
        if width_ms > self.max_width_ms:
            bad.append(("too_long", mono_ms, "%s pulse %d ms > %d ms" % (coil, width_ms, self.max_width_ms)))
        latest = None
        for other in COILS:
            last = self._last.get(other)
            if last is None:
                continue
            start, end = last
            if mono_ms < start:
                bad.append(("time_backwards", mono_ms, "%s pulse at %d ms, before one at %d ms" % (coil, mono_ms, start)))
                continue
            if mono_ms < end:
                rule = "retrigger" if other == coil else "overlap"
                bad.append((rule, mono_ms, "%s pulse at %d ms while %s ran until %d ms" % (coil, mono_ms, other, end)))
            if latest is None or end > latest:
                latest = end
        if latest is not None and latest <= mono_ms < latest + self.min_interval_ms:
            bad.append(
                ("too_soon", mono_ms, "%s pulse %d ms after the previous one ended (< %d ms)"
                 % (coil, mono_ms - latest, self.min_interval_ms))
            )
