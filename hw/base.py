"""The one hardware interface every backend implements, and the logic they share.

A backend turns pins into core events and core actions into pin changes:

- inputs: pulse edges (``Edge``) or hardware-counter counts (``Pulses``),
  relay feedback contact (``RelayFeedback``), push button held for
  ``button_hold_ms`` (``Button``), supply-voltage detector (``PowerFail``),
  cover switch (``Tamper``);
- outputs: the two coils of a latching relay (``PulseCoil``), alarm LED and
  buzzer (``Alarm``);
- time: ``mono()`` (ms, never wraps), ``wall()`` (Unix s), ``set_wall()``;
- ``feed_watchdog()``, called by the main loop once per pass, so a hung
  loop resets the device.

Interrupt handlers only put ``(kind, level, raw_ticks)`` into a bounded,
preallocated ring (no allocation, so it is safe in a MicroPython IRQ); the
main loop calls ``poll()``, which drains the ring, debounces and returns
core events.  The core is not re-entrant, so it is only ever called from
the main loop (``pump``).

Coil safety lives here, shared by every backend (``CoilDriver``): one coil
at a time, the other forced off first, widths bounded, a minimum gap
between pulses, and a gap after boot in case a reset cut a pulse short.

This file runs on CPython and MicroPython alike.
"""

from agent.events import Button, Edge, PowerFail, Pulses, RelayFeedback, Tamper

try:
    from time import ticks_diff as _mp_ticks_diff
except ImportError:
    _mp_ticks_diff = None

# Kinds of queued input events (small ints: no allocation in an IRQ).
EV_PULSE = 0
EV_FEEDBACK = 1
EV_BUTTON = 2
EV_POWER = 3
EV_TAMPER = 4

COILS = ("set", "reset")


def plain_diff(a, b):
    """``a - b`` for tick sources that never wrap (CPython clocks)."""
    return a - b


class EventQueue:
    """Bounded single-consumer ring of ``(kind, level, ticks)`` triples.

    Slots are preallocated lists of ints so ``put`` never allocates (a
    MicroPython hard IRQ may not).  When full, the newest event is dropped
    and counted in ``dropped``: the main loop reports it, since a lost
    pulse edge is lost energy.  The producer writes the slot before it
    moves ``_head`` and the consumer reads it before it moves ``_tail``,
    so one producer and one consumer need no lock; backends with several
    producer threads pass ``lock`` (a context manager).
    """

    __slots__ = ("_kind", "_level", "_ticks", "_size", "_head", "_tail", "dropped", "_lock")

    def __init__(self, size, lock=None):
        self._size = size + 1  # one slot stays empty to tell full from empty
        self._kind = [0] * self._size
        self._level = [0] * self._size
        self._ticks = [0] * self._size
        self._head = 0
        self._tail = 0
        self.dropped = 0
        self._lock = lock

    def put(self, kind, level, ticks):
        """Add one event; return False (and count it) when the ring is full."""
        if self._lock is not None:
            with self._lock:
                return self._put(kind, level, ticks)
        return self._put(kind, level, ticks)

    def _put(self, kind, level, ticks):
        head = self._head
        nxt = head + 1
        if nxt == self._size:
            nxt = 0
        if nxt == self._tail:
            self.dropped += 1
            return False
        self._kind[head] = kind
        self._level[head] = level
        self._ticks[head] = ticks
        self._head = nxt
        return True

    def get(self):
        """Remove and return the oldest ``(kind, level, ticks)``, or None."""
        tail = self._tail
        if tail == self._head:
            return None
        item = (self._kind[tail], self._level[tail], self._ticks[tail])
        tail += 1
        if tail == self._size:
            tail = 0
        self._tail = tail
        return item

    def __len__(self):
        return (self._head - self._tail) % self._size

    @property
    def capacity(self):
        """How many events the ring holds when full."""
        return self._size - 1


class Debounced:
    """A level input that must hold a new level ``debounce_ms`` to count.

    ``sample(level, mono)`` takes raw readings (from edges or polling);
    ``update(mono)`` returns the new stable level once it has held long
    enough, else None.
    """

    __slots__ = ("stable", "_candidate", "_since", "_debounce")

    def __init__(self, level, debounce_ms):
        self.stable = level
        self._candidate = level
        self._since = 0
        self._debounce = debounce_ms

    def sample(self, level, mono):
        """Record a raw reading taken at ``mono``."""
        if level != self._candidate:
            self._candidate = level
            self._since = mono

    def update(self, mono):
        """Return the new stable level if it changed, else None."""
        if self._candidate != self.stable and mono - self._since >= self._debounce:
            self.stable = self._candidate
            return self.stable
        return None


class CoilFault(ValueError):
    """A coil pulse request the driver refuses (names what was wrong)."""


class CoilDriver:
    """Drives the two coils of a latching relay, one short pulse at a time.

    ``write(coil, on)`` sets one coil's driver pin; the driver is the only
    caller.  ``clock()`` returns monotonic ms.  ``request`` queues a pulse;
    ``service()`` switches coils and returns how many ms until it needs to
    run again (None when idle).  Guarantees, whatever the caller does and
    however late it runs: never both coils on (the other coil is written
    off before one is energised, and only one pulse is active at a time),
    every pulse between ``min_ms`` and ``max_ms`` wide, at least ``gap_ms``
    from the end of one pulse to the start of the next, and from start-up
    to the first pulse.  Width and gap hold by construction: the clock is
    read *after* each write that starts or ends a pulse, so a thread or task
    pre-empted between reading the time and writing the pin only makes a
    pulse or gap longer, never shorter.
    """

    __slots__ = (
        "_write", "_clock", "_min", "_max", "_gap", "_pending", "_active", "_until",
        "_started", "_last_off", "history", "refused", "_max_pending",
    )

    def __init__(self, write, min_ms, max_ms, gap_ms, clock, max_pending=4):
        self._write = write
        self._clock = clock
        self._min = min_ms
        self._max = max_ms
        self._gap = gap_ms
        self._pending = []
        self._active = None
        self._until = 0
        self._started = 0
        self._max_pending = max_pending
        self.history = []  # last pulses: [coil, start_mono, end_mono]
        self.refused = 0
        self.all_off()
        # A reset may have cut a pulse short: wait a full gap from boot.
        self._last_off = clock()

    def all_off(self):
        """De-energise both coils now (start-up, shutdown, fault)."""
        self._write("set", False)
        self._write("reset", False)

    @property
    def busy(self):
        """True while a pulse is running or waiting."""
        return self._active is not None or bool(self._pending)

    @property
    def active(self):
        """The coil energised now, or None."""
        return self._active

    def request(self, coil, width_ms):
        """Queue a pulse; raise CoilFault (and change nothing) if refused."""
        if coil not in COILS:
            self.refused += 1
            raise CoilFault("coil must be 'set' or 'reset', got %r" % (coil,))
        if not isinstance(width_ms, int) or isinstance(width_ms, bool):
            self.refused += 1
            raise CoilFault("coil pulse width must be an integer of ms, got %r" % (width_ms,))
        if width_ms < self._min or width_ms > self._max:
            self.refused += 1
            raise CoilFault(
                "coil pulse width %d ms is outside hw.coil_min_ms..hw.coil_max_ms (%d..%d)"
                % (width_ms, self._min, self._max)
            )
        if len(self._pending) >= self._max_pending:
            self.refused += 1
            raise CoilFault("%d coil pulses already waiting; refusing another" % len(self._pending))
        self._pending.append((coil, width_ms))

    def service(self):
        """Advance the pulse schedule to now; return ms to the next step or None."""
        if self._active is not None:
            left = self._until - self._clock()
            if left > 0:
                return left
            self._write(self._active, False)
            off = self._clock()
            self._record(self._active, self._started, off)
            self._active = None
            self._last_off = off
        if not self._pending:
            return None
        wait = self._gap - (self._clock() - self._last_off)
        if wait > 0:
            return wait
        coil, width = self._pending.pop(0)
        other = "reset" if coil == "set" else "set"
        self._write(other, False)
        self._write(coil, True)
        self._active = coil
        self._started = self._clock()
        self._until = self._started + width
        return width

    def _record(self, coil, start, end):
        self.history.append([coil, start, end])
        if len(self.history) > 10:
            self.history.pop(0)


class Backend:
    """Base of the hardware backends; subclasses supply pins and clocks.

    A subclass implements ``_raw_ticks()`` (the tick source its interrupt
    handlers timestamp with), ``_read(name)`` (raw level of an input pin,
    None if not fitted), ``_write(name, on)`` for outputs ("set", "reset",
    "led", "buzzer"), ``wall()``, ``set_wall()``, ``feed_watchdog()`` and
    ``sleep_ms()``; then calls ``_setup()`` once its pins exist.  Handlers
    call ``irq(kind, raw_level)``.
    """

    name = "base"

    def __init__(self, cfg, ticks_diff=None, lock=None, log=None):
        self.cfg = cfg
        if ticks_diff is None:
            ticks_diff = _mp_ticks_diff if _mp_ticks_diff is not None else plain_diff
        self._ticks_diff = ticks_diff
        self.queue = EventQueue(cfg["queue_len"], lock)
        self._log = log if log is not None else _print_log
        self._last_raw = None
        self._mono = 0
        self.coils = None
        self._feedback = None
        self._button = None
        self._tamper = None
        self._power = None
        self._button_since = None
        self._button_sent = False
        self._power_sent = False
        self._counter_last = None
        self._alarm = [False, False, False]  # index = level
        self._buzz_next = None
        self._buzz_on = False
        self._dropped_seen = 0
        self.faults = []

    # ------------------------------------------------------------ time

    def mono(self):
        """Monotonic milliseconds; extends wrapping board ticks so it never wraps."""
        raw = self._raw_ticks()
        if self._last_raw is None:
            self._mono = raw  # continue the platform's clock (steady across agent restarts)
        else:
            self._mono += self._ticks_diff(raw, self._last_raw)
        self._last_raw = raw
        return self._mono

    def _mono_of(self, raw):
        """Convert a raw tick taken by an interrupt handler to ``mono``."""
        now = self.mono()
        return now - self._ticks_diff(self._last_raw, raw)

    # ------------------------------------------------------------ set-up

    def _setup(self):
        """Initialise shared state once the subclass's pins exist."""
        cfg = self.cfg
        self.coils = CoilDriver(
            self._write, cfg["coil_min_ms"], cfg["coil_max_ms"], cfg["coil_gap_ms"], self.mono
        )
        self._write("led", False)
        self._write("buzzer", False)
        deb = cfg["debounce_ms"]
        level = self._read("feedback")
        if level is not None:
            self._feedback = Debounced(level, deb)
        level = self._read("button")
        if level is not None:
            self._button = Debounced(level, deb)
        level = self._read("tamper")
        if level is not None:
            self._tamper = Debounced(level, deb)
        level = self._read("power_fail")
        if level is not None:
            self._power = Debounced(level, deb)
        # Pulses counted from here on are delivered; earlier ones predate us.
        self._counter_last = self._read_counter()

    def start(self):
        """Events describing the inputs now (relay position, open cover, failing supply).

        Reads the pins afresh: a boot-time coil pulse may have moved the relay
        since ``_setup``.
        """
        events: list = []
        mono = self.mono()
        deb = self.cfg["debounce_ms"]
        if self._feedback is not None:
            self._feedback = Debounced(self._read("feedback"), deb)
            events.append(RelayFeedback(self._feedback.stable == self.cfg["feedback_closed_level"], mono))
        if self._tamper is not None:
            self._tamper = Debounced(self._read("tamper"), deb)
            if self._tamper.stable == self.cfg["tamper_open_level"]:
                events.append(Tamper(True, self.wall(), mono))
        if self._power is not None:
            self._power = Debounced(self._read("power_fail"), deb)
            if self._power.stable == self.cfg["power_fail_level"]:
                self._power_sent = True
                events.append(PowerFail(self.wall(), mono))
        return events

    # ------------------------------------------------------------ inputs

    def irq(self, kind, level):
        """Queue one input event (called from interrupt handlers)."""
        self.queue.put(kind, level, self._raw_ticks())

    def poll(self):
        """Drain queued input events and return core events, oldest first."""
        events: list = []
        cfg = self.cfg
        active_low = cfg["pulse_active_low"]
        while True:
            item = self.queue.get()
            if item is None:
                break
            kind, level, raw = item
            mono = self._mono_of(raw)
            if kind == EV_PULSE:
                events.append(Edge((1 - level) if active_low else level, mono))
            elif kind == EV_FEEDBACK and self._feedback is not None:
                self._feedback.sample(level, mono)
            elif kind == EV_BUTTON and self._button is not None:
                self._button.sample(level, mono)
            elif kind == EV_TAMPER and self._tamper is not None:
                self._tamper.sample(level, mono)
            elif kind == EV_POWER and self._power is not None:
                self._power.sample(level, mono)
                if level == cfg["power_fail_level"] and not self._power_sent:
                    # No debounce on the way down: every ms counts for the commit.
                    self._power_sent = True
                    events.append(PowerFail(self.wall(), mono))
        mono = self.mono()
        self._poll_levels(events, mono)
        self._poll_counter(events, mono)
        self._poll_buzzer(mono)
        if self.queue.dropped != self._dropped_seen:
            lost = self.queue.dropped - self._dropped_seen
            self._dropped_seen = self.queue.dropped
            self._fault("input queue full: %d events dropped; raise hw.queue_len or lower hw.poll_ms" % lost)
        return events

    def _poll_levels(self, events, mono):
        # Sampling the pins as well as the edges means a missed last edge
        # (ghost interrupts, bouncetime) cannot leave a stale level.
        cfg = self.cfg
        wall = None
        if self._feedback is not None:
            self._feedback.sample(self._read("feedback"), mono)
            new = self._feedback.update(mono)
            if new is not None:
                events.append(RelayFeedback(new == cfg["feedback_closed_level"], mono))
        if self._tamper is not None:
            self._tamper.sample(self._read("tamper"), mono)
            new = self._tamper.update(mono)
            if new is not None:
                wall = self.wall()
                events.append(Tamper(new == cfg["tamper_open_level"], wall, mono))
        if self._power is not None:
            self._power.sample(self._read("power_fail"), mono)
            new = self._power.update(mono)
            if new is not None:
                if new == cfg["power_fail_level"]:
                    if not self._power_sent:
                        self._power_sent = True
                        events.append(PowerFail(self.wall(), mono))
                else:
                    self._power_sent = False
        if self._button is not None:
            self._button.sample(self._read("button"), mono)
            self._button.update(mono)
            pressed = self._button.stable == 0  # to ground, pulled up
            if pressed:
                if self._button_since is None:
                    self._button_since = mono
                if not self._button_sent and mono - self._button_since >= cfg["button_hold_ms"]:
                    self._button_sent = True
                    events.append(Button(self.wall() if wall is None else wall, mono))
            else:
                self._button_since = None
                self._button_sent = False

    def _poll_counter(self, events, mono):
        count = self._read_counter()
        if count is None:
            return
        if self._counter_last is None:
            self._counter_last = count
        delta = count - self._counter_last
        self._counter_last = count
        if delta < 0:
            self._fault("pulse counter went backwards by %d; counting from the new value" % -delta)
        elif delta:
            events.append(Pulses(delta, self.wall(), mono))

    def _read_counter(self):
        """Cumulative hardware pulse count, or None without a counter."""
        return None

    # ------------------------------------------------------------ outputs

    def execute(self, action, wait=True):
        """Carry out a hardware action; return False for actions that are not ours.

        A ``PulseCoil`` runs to completion when ``wait`` is true (the
        default: a pulse is 20-250 ms); an async loop passes False and
        awaits ``coil_steps``.  A refused pulse is logged as a fault and
        leaves both coils off.
        """
        kind = action.kind
        if kind == "pulse_coil":
            try:
                self.coils.request(action.coil, action.width_ms)
            except CoilFault as exc:
                self._fault("relay pulse refused: %s" % exc)
                return True
            if wait:
                self.run_coils()
            return True
        if kind == "alarm":
            self._set_alarm(action.level, action.on)
            return True
        return False

    def run_coils(self):
        """Block until every queued coil pulse has run."""
        while True:
            delay = self.coils.service()
            if delay is None:
                return
            self.sleep_ms(delay)

    def _set_alarm(self, level, on):
        if level not in (1, 2):
            self._fault("alarm level must be 1 or 2, got %r" % (level,))
            return
        self._alarm[level] = bool(on)
        if level == 1:
            self._write("led", bool(on))
        elif on:
            self._buzz_next = self.mono()
            self._poll_buzzer(self._buzz_next)
        else:
            self._buzz_next = None
            self._buzz_on = False
            self._write("buzzer", False)

    def _poll_buzzer(self, mono):
        # A steady tone in a home is intolerable: beep buzzer_on_ms every period.
        if self._buzz_next is None:
            return
        cfg = self.cfg
        if self._buzz_on and mono - self._buzz_next >= cfg["buzzer_on_ms"]:
            self._buzz_on = False
            self._write("buzzer", False)
            self._buzz_next += cfg["buzzer_period_ms"]
        elif not self._buzz_on and mono >= self._buzz_next:
            if mono - self._buzz_next >= cfg["buzzer_period_ms"]:
                self._buzz_next = mono  # the loop stalled: do not beep to catch up
            self._buzz_on = True
            self._write("buzzer", True)

    # ------------------------------------------------------------ health

    def _fault(self, message):
        self._log("hw: " + message)
        self.faults.append(message)
        if len(self.faults) > 10:
            self.faults.pop(0)

    def status(self):
        """A dict for diagnostics: queue, coil history, faults, input levels."""
        coils = self.coils
        return {
            "backend": self.name,
            "queue_len": len(self.queue),
            "queue_capacity": self.queue.capacity,
            "dropped": self.queue.dropped,
            "coil_active": coils.active if coils else None,
            "coil_pulses": [list(p) for p in coils.history] if coils else [],
            "coil_refused": coils.refused if coils else 0,
            "feedback_level": None if self._feedback is None else self._feedback.stable,
            "power_fail_level": None if self._power is None else self._power.stable,
            "tamper_level": None if self._tamper is None else self._tamper.stable,
            "alarm": [self._alarm[1], self._alarm[2]],
            "faults": list(self.faults),
        }

    def close(self):
        """Leave the hardware safe: both coils and outputs off."""
        if self.coils is not None:
            self.coils.all_off()
        self._write("led", False)
        self._write("buzzer", False)

    # ------------------------------------------------------------ to implement

    def _raw_ticks(self):
        raise NotImplementedError

    def _read(self, name):
        raise NotImplementedError

    def _write(self, name, on):
        raise NotImplementedError

    def wall(self):
        """Wall-clock time, Unix seconds UTC."""
        raise NotImplementedError

    def set_wall(self, wall):
        """Set the wall clock (RTC) to ``wall`` Unix seconds UTC."""
        raise NotImplementedError

    def feed_watchdog(self):
        """Tell the watchdog the main loop is alive."""
        raise NotImplementedError

    def sleep_ms(self, ms):
        """Block for ``ms`` milliseconds."""
        raise NotImplementedError


def _print_log(message):
    print(message)


def pump(backend, handle, other):
    """One pass of a main loop: hardware events into the core, actions out.

    ``handle(event)`` is the core's ``Meter.handle``; ``other(action)``
    carries out the actions that are not the hardware's (Persist, Publish,
    Ack), synchronously and in order, so a Persist is durable before the
    PulseCoil or Ack after it.  Returns the number of events fed.
    """
    events = backend.poll()
    for event in events:
        feed(backend, handle(event), other)
    return len(events)


def feed(backend, actions, other):
    """Carry out ``actions`` (from the core) in order."""
    for action in actions:
        if not backend.execute(action):
            other(action)


class Loop:
    """The body of an agent's main loop, for any backend.

    ``boot()`` feeds Boot and the start-up input events; each ``step()``
    drains the inputs into the core, sends a Tick every ``tick_ms`` or
    when the core's next deadline (wall second) has come, and feeds the
    watchdog.  ``run(stop)`` repeats ``step`` every ``poll_ms`` until
    ``stop()`` is true.  ``other(action)`` gets Persist, Publish and Ack.
    """

    def __init__(self, backend, meter, other, tick_ms=1000):
        self.backend = backend
        self.meter = meter
        self.other = other
        self.tick_ms = tick_ms
        self.last_tick = None
        self.steps = 0

    def boot(self):
        """Feed Boot, then the inputs' start-up state."""
        from agent.events import Boot

        b = self.backend
        feed(b, self.meter.handle(Boot(b.wall(), b.mono())), self.other)
        for event in b.start():
            feed(b, self.meter.handle(event), self.other)
        self.last_tick = b.mono()

    def tick_due(self):
        """A Tick event if one is due now, else None."""
        from agent.events import Tick

        b = self.backend
        mono = b.mono()
        wall = b.wall()
        deadline = self.meter.next_deadline()
        if self.last_tick is None or mono - self.last_tick >= self.tick_ms or (deadline is not None and wall >= deadline):
            self.last_tick = mono
            return Tick(wall, mono)
        return None

    def step(self):
        """One pass: inputs, timers, watchdog."""
        self.steps += 1
        pump(self.backend, self.meter.handle, self.other)
        tick = self.tick_due()
        if tick is not None:
            feed(self.backend, self.meter.handle(tick), self.other)
        self.backend.feed_watchdog()

    def run(self, stop=None):
        """Step every ``poll_ms`` until ``stop()`` returns true (never, if None)."""
        poll = self.backend.cfg["poll_ms"]
        while stop is None or not stop():
            self.step()
            self.backend.sleep_ms(poll)
