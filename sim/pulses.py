"""Virtual meter pulse output: energy in, pulses (or raw input edges) out.

A meter with constant ``C`` imp/kWh emits one pulse per ``1/C`` kWh.  The
pulse source keeps the not-yet-pulsed energy as an exact integer
(``mWh * C``), so however the energy arrives in batches the total pulse
count is ``floor(total_mWh * C / 1,000,000)``.

``edges`` turns a pulse count into the raw level changes an input pin
would see (slow, faithful mode), optionally with contact bounce and ghost
edges, to exercise the core's pulse filter.
"""

MWH_PER_KWH = 1000000


def _check_int(name, value, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError("%s must be an integer >= %d, got %r" % (name, low, value))


class PulseSource:
    """Counts energy into meter pulses with the remainder carried exactly.

    ``constant`` is the meter constant in imp/kWh (e.g. 800, 1600, 3200,
    10000).  ``total`` is the number of pulses emitted so far and
    ``remainder`` the carried energy in mWh*C (always < 1,000,000).
    """

    __slots__ = ("constant", "total", "remainder")

    def __init__(self, constant):
        _check_int("meter constant (imp/kWh)", constant, 1)
        self.constant = constant
        self.total = 0
        self.remainder = 0

    def advance(self, energy_mwh):
        """Add ``energy_mwh`` (int milli-Wh); return the pulses it completes."""
        if type(energy_mwh) is not int or energy_mwh < 0:  # hot path: inline check
            raise ValueError("energy_mwh must be an integer >= 0, got %r" % (energy_mwh,))
        acc = self.remainder + energy_mwh * self.constant
        count = acc // MWH_PER_KWH
        self.remainder = acc - count * MWH_PER_KWH
        self.total += count
        return count


class Bounce:
    """How a contact misbehaves around each real edge.

    With probability ``prob`` an edge is followed by 1..``max_glitches``
    short glitches (the level flips back and forth), each level lasting
    1..``max_glitch_ms``; with probability ``ghost_prob`` the edge's level
    is reported a second time (a ghost edge: the same level twice).
    Glitches never outlast a third of the high or low time around them.
    """

    __slots__ = ("prob", "max_glitches", "max_glitch_ms", "ghost_prob")

    def __init__(self, prob=0.3, max_glitches=3, max_glitch_ms=3, ghost_prob=0.0):
        for name, p in (("prob", prob), ("ghost_prob", ghost_prob)):
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
                raise ValueError("Bounce %s must be a probability in 0..1, got %r" % (name, p))
        _check_int("Bounce max_glitches", max_glitches, 1)
        _check_int("Bounce max_glitch_ms", max_glitch_ms, 1)
        self.prob = prob
        self.max_glitches = max_glitches
        self.max_glitch_ms = max_glitch_ms
        self.ghost_prob = ghost_prob


def edges(count, t0_ms, t1_ms, width_ms, bounce=None, rng=None):
    """Raw input edges for ``count`` pulses spread evenly over [t0_ms, t1_ms).

    Returns a list of ``(level, mono_ms)`` in time order (1 = pulse active):
    pulse ``k`` rises at ``t0 + k * span // count`` and falls ``width_ms``
    later.  The input rests at 0 before and after.  ``bounce`` (a
    ``Bounce``) adds glitches and ghost edges drawn from ``rng`` (a
    ``random.Random``, required with ``bounce``).  Raises ValueError if the
    pulses cannot fit: each needs ``width_ms`` high and at least 1 ms low.
    """
    _check_int("count", count, 0)
    _check_int("t0_ms", t0_ms, 0)
    _check_int("t1_ms", t1_ms, t0_ms)
    _check_int("width_ms", width_ms, 1)
    if bounce is not None and rng is None:
        raise ValueError("edges with bounce needs rng, a random.Random")
    if count == 0:
        return []
    span = t1_ms - t0_ms
    if width_ms + 1 > span // count:
        raise ValueError(
            "%d pulses of %d ms do not fit in %d ms: the period would be %d ms"
            % (count, width_ms, span, span // count)
        )
    out = []
    for k in range(count):
        rise = t0_ms + k * span // count
        fall = rise + width_ms
        nxt = t0_ms + (k + 1) * span // count  # next rise (or t1 for the last pulse)
        _edge(out, 1, rise, width_ms, bounce, rng)
        _edge(out, 0, fall, nxt - fall, bounce, rng)
    return out


def _edge(out, level, t, hold_ms, bounce, rng):
    """Append a real edge to ``level`` at ``t`` that then holds ``hold_ms``."""
    out.append((level, t))
    if bounce is None:
        return
    last = t
    room = hold_ms // 3  # glitches settle well before the next real edge
    if rng.random() < bounce.prob:
        for _ in range(rng.randint(1, bounce.max_glitches)):
            away = last + rng.randint(1, bounce.max_glitch_ms)
            back = away + rng.randint(1, bounce.max_glitch_ms)
            if back > t + room:
                break
            out.append((1 - level, away))
            out.append((level, back))
            last = back
    if rng.random() < bounce.ghost_prob and last + 1 < t + hold_ms:
        # The same level reported again a millisecond after it settled.
        out.append((level, last + 1))
