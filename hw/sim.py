"""Simulated backend: the hardware interface over a virtual relay and load.

``pmeter agent --hw sim`` runs a complete agent on a desktop with it.  It
goes through the same shared code as the real backends (``hw.base``): the
coil driver's safety rules, the bounded input queue, debouncing, button
hold time, buzzer cadence.  What differs is below the pins:

- the relay is a latching relay model with the simulator's API
  (``apply(coil, width_ms, mono_ms)``, ``closed``, ``feedback()``), from
  ``sim.relay_model`` when present, else the ideal ``IdealRelay`` here;
- the meter's pulses come from a load (a constant ``load_w``, or any
  object with ``energy_mwh(t0, t1)`` such as ``sim.household.Household``)
  and are delivered as a hardware counter would (``Pulses``), but only
  while the relay is closed: an open relay means no energy;
- inputs (button, cover, power-fail, feedback) are levels the caller sets
  with ``set_input``/``press_button``;
- time is the system clock (``RealClock``) or a ``VirtualClock`` that
  only moves when slept on or advanced, for fast, deterministic runs.
"""

import time

from hw.base import EV_BUTTON, EV_POWER, EV_TAMPER, Backend

_MWH_PER_PULSE_KWH = 1000000  # mWh in a kWh: pulses = mWh * constant / 1e6
_WMS_PER_PULSE_KWH = 3600000000  # W*ms in a kWh


class RealClock:
    """The system clocks."""

    def mono_ms(self):
        """Monotonic ms."""
        return time.monotonic_ns() // 1000000

    def wall_s(self):
        """Unix seconds."""
        return int(time.time())

    def sleep_ms(self, ms):
        """Really sleep."""
        time.sleep(ms / 1000)


class VirtualClock:
    """A clock that only moves when slept on or advanced (deterministic runs)."""

    def __init__(self, wall=1767225600, mono=0):
        self.wall0 = wall
        self.mono = mono
        self._start = mono

    def mono_ms(self):
        """Virtual monotonic ms."""
        return self.mono

    def wall_s(self):
        """Virtual Unix seconds, moving with ``mono``."""
        return self.wall0 + (self.mono - self._start) // 1000

    def sleep_ms(self, ms):
        """Advance time by ``ms`` at once."""
        self.mono += ms

    advance = sleep_ms


class IdealRelay:
    """A latching relay that always does what it is told (no faults).

    Same API as the simulator's model: ``apply(coil, width_ms, mono_ms)``
    after a coil pulse, ``closed`` (main contacts), ``feedback()`` (what
    the auxiliary contact reads).  Used when ``sim.relay_model`` is absent.
    """

    def __init__(self, closed=False, min_width_ms=10):
        self.closed = closed
        self.min_width_ms = min_width_ms
        self.operations = 0

    def apply(self, coil, width_ms, mono_ms):
        """A coil was energised for ``width_ms``: latch if long enough."""
        self.operations += 1
        if width_ms >= self.min_width_ms:
            self.closed = coil == "set"

    def feedback(self):
        """The auxiliary contact follows the main contacts."""
        return self.closed


def default_relay():
    """The simulator's relay model if it is installed, else ``IdealRelay``."""
    try:
        from sim import relay_model
    except ImportError:
        return IdealRelay()
    for name in ("RelayModel", "LatchingRelay", "Relay"):
        cls = getattr(relay_model, name, None)
        if cls is not None:
            return cls()
    return IdealRelay()


class SimBackend(Backend):
    """Virtual hardware behind the common backend interface.

    ``cfg`` is the validated ``[hw]`` section (pins are ignored);
    ``relay`` a relay model; ``load_w`` a constant load or ``load`` an
    object with ``energy_mwh(t0, t1)`` (wall seconds); ``constant`` the
    meter constant in imp/kWh; ``clock`` a ``RealClock`` or
    ``VirtualClock``; ``feedback`` whether the auxiliary contact is wired.
    """

    name = "sim"

    def __init__(self, cfg, relay=None, load_w=0, load=None, constant=3200, clock=None, feedback=True, log=None):
        Backend.__init__(self, cfg, log=log)
        self.clock = clock if clock is not None else RealClock()
        self.relay = relay if relay is not None else default_relay()
        self.load_w = load_w
        self.load = load
        self.constant = constant
        self._levels = {
            "button": 1,
            "tamper": 1 - cfg["tamper_open_level"],
            "power_fail": 1 - cfg["power_fail_level"],
        }
        self._has_feedback = feedback
        self._coil_on = {"set": None, "reset": None}
        self._pulses = 0
        self._acc = 0
        self._last_mono = None
        self._last_wall = None
        self._wall_offset = 0
        self._release_at = None
        self.watchdog_feeds = 0
        self.coil_log = []  # (coil, start_mono, end_mono) for every pulse
        self._setup()

    # ------------------------------------------------------------ pins

    def _raw_ticks(self):
        return self.clock.mono_ms()

    def _read(self, name):
        if name == "feedback":
            if not self._has_feedback:
                return None
            closed = self.relay.feedback()
            level = self.cfg["feedback_closed_level"]
            return level if closed else 1 - level
        return self._levels.get(name)

    def _write(self, name, on):
        if name not in self._coil_on:
            return
        if on:
            other = "reset" if name == "set" else "set"
            if self._coil_on[other] is not None:
                raise AssertionError("both relay coils energised")  # the driver must make this impossible
            if self._coil_on[name] is None:
                self._coil_on[name] = self.mono()
        elif self._coil_on[name] is not None:
            start = self._coil_on[name]
            self._coil_on[name] = None
            end = self.mono()
            self._accrue()  # energy up to the switching instant flows at the old position
            self.coil_log.append((name, start, end))
            self.relay.apply(name, end - start, end)

    # ------------------------------------------------------------ virtual inputs

    def set_input(self, name, level):
        """Set a virtual input ("button", "tamper", "power_fail") to ``level``."""
        kinds = {"button": EV_BUTTON, "tamper": EV_TAMPER, "power_fail": EV_POWER}
        if name not in kinds:
            raise ValueError("unknown simulated input %r (button, tamper, power_fail)" % (name,))
        self._levels[name] = 1 if level else 0
        self.irq(kinds[name], self._levels[name])

    def press_button(self):
        """Press the button and release it once it has been held long enough."""
        self.set_input("button", 0)
        self._release_at = self.mono() + self.cfg["button_hold_ms"] + self.cfg["debounce_ms"] + 1

    def open_cover(self, opened=True):
        """Open (or close) the meter cover."""
        level = self.cfg["tamper_open_level"]
        self.set_input("tamper", level if opened else 1 - level)

    def power_fail(self, failing=True):
        """The supply-voltage detector reports a failing (or restored) supply."""
        level = self.cfg["power_fail_level"]
        self.set_input("power_fail", level if failing else 1 - level)

    # ------------------------------------------------------------ pulse source

    def _accrue(self, upto_mono=None):
        mono = self.mono() if upto_mono is None else upto_mono
        wall = self.wall()
        if self._last_mono is None:
            self._last_mono, self._last_wall = mono, wall
            return
        if self.relay.closed:
            if self.load is not None:
                if wall > self._last_wall:
                    self._acc += self.load.energy_mwh(self._last_wall, wall) * self.constant * 3600
            elif mono > self._last_mono:
                self._acc += self.load_w * (mono - self._last_mono) * self.constant
        if mono > self._last_mono:
            self._last_mono = mono
        self._last_wall = wall
        # Both sources accumulate W*ms x constant (mWh x 3600 = W*ms).
        self._pulses += self._acc // _WMS_PER_PULSE_KWH
        self._acc %= _WMS_PER_PULSE_KWH

    def _read_counter(self):
        self._accrue()
        return self._pulses

    def poll(self):
        """Release a held button when due, then the common poll (which samples the feedback contact)."""
        if self._release_at is not None and self.mono() >= self._release_at:
            self._release_at = None
            self.set_input("button", 1)
        return Backend.poll(self)

    # ------------------------------------------------------------ time

    def wall(self):
        """The clock's wall time plus any offset from set_wall."""
        return self.clock.wall_s() + self._wall_offset

    def set_wall(self, wall):
        """Set the virtual RTC."""
        self._wall_offset = int(wall) - self.clock.wall_s()

    def feed_watchdog(self):
        """Count the feeds (the simulated watchdog never bites)."""
        self.watchdog_feeds += 1

    def sleep_ms(self, ms):
        """Sleep on the clock (a virtual clock just advances)."""
        self.clock.sleep_ms(ms)
