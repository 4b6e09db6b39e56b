"""A fake ``machine`` module for the MicroPython unix port (tests and the virtual board, sim/board.py).

Put sim/mpy_board first on MICROPYPATH; it then shadows the unix port's
minimal built-in ``machine``.  It behaves like a board's for what the
agent uses:

- ``Pin(id, mode=-1, pull=-1, *, value=None)``: ``Pin.IN``/``Pin.OUT``,
  ``PULL_UP``/``PULL_DOWN`` (None: no pull); ``value=`` sets an output's
  level before it becomes an output; ``value()`` reads (an output reads
  back what it drives, an input the outside level or its pull);
  ``value(x)``, ``on()``, ``off()`` drive; ``irq(handler, trigger)`` with
  ``IRQ_RISING | IRQ_FALLING``, the handler called with the Pin object;
  ``irq(handler=None)`` disables it; a pin id outside the board's range
  raises ValueError("invalid pin");
- ``WDT(id=0, timeout=5000)`` with ``feed()``; the board resets when it
  is not fed in time (here: ``WDT.expired()`` tells, using ticks_ms);
- ``RTC().datetime()`` get/set (y, m, d, wd, h, mi, s, sub), starting
  from the host's UTC time;
- ``Counter`` only after ``enable_counter()`` (ESP32 only on real ports);
- ``UART(id, baudrate=9600, timeout=0)`` with ``read()`` (the bytes
  waiting, None when there are none), ``any()`` and ``write()``.

Test hooks: ``drive(id, level)`` changes an input's outside level and
runs the IRQ handler for a matching edge; ``writes`` logs
``(ticks_ms, id, level)`` for every output change; ``uart_feed(id, data)``
puts bytes on a UART's receive line; ``reset()`` forgets all pins.
"""

import time

PIN_COUNT = 40  # ESP32 GPIO 0-39; RP2040 uses 0-29

_pins = {}
writes = []
_wdts = []


def reset():
    """Forget every pin, log entry and watchdog."""
    _pins.clear()
    del writes[:]
    del _wdts[:]


class Pin:
    """A GPIO pin."""

    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __new__(cls, id, *args, **kwargs):
        if not isinstance(id, int) or id < 0 or id >= PIN_COUNT:
            raise ValueError("invalid pin")
        pin = _pins.get(id)
        if pin is None:
            pin = object.__new__(cls)
            pin._id = id
            pin._mode = Pin.IN
            pin._pull = None
            pin._out = 0
            pin._ext = None
            pin._handler = None
            pin._trigger = 0
            _pins[id] = pin
        return pin

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, value=None):
        """Re-configure the pin; omitted arguments keep their setting."""
        if value is not None:
            self._set_out(1 if value else 0)
        if pull != -1:
            if pull not in (None, Pin.PULL_UP, Pin.PULL_DOWN):
                raise ValueError("invalid pull")
            self._pull = pull
        if mode != -1:
            if mode not in (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            self._mode = mode
            if mode == Pin.OUT:
                writes.append((time.ticks_ms(), self._id, self._out))

    def _set_out(self, level):
        changed = level != self._out
        self._out = level
        if self._mode == Pin.OUT and changed:
            writes.append((time.ticks_ms(), self._id, level))

    def _level(self):
        if self._mode == Pin.OUT:
            return self._out
        if self._ext is not None:
            return self._ext
        return 1 if self._pull == Pin.PULL_UP else 0

    def value(self, *args):
        """Read the level, or drive it with value(x)."""
        if not args:
            return self._level()
        self._set_out(1 if args[0] else 0)
        return None

    def on(self):
        """Drive high."""
        self._set_out(1)

    def off(self):
        """Drive low."""
        self._set_out(0)

    def __call__(self, *args):
        return self.value(*args)

    def irq(self, handler=None, trigger=3, hard=False):
        """Set (or with handler=None clear) the edge interrupt handler."""
        if trigger & ~(Pin.IRQ_RISING | Pin.IRQ_FALLING):
            raise ValueError("invalid trigger")
        self._handler = handler
        self._trigger = trigger if handler is not None else 0
        return None

    def __repr__(self):
        return "Pin(%d)" % self._id


def drive(id, level):
    """Change the outside level on input ``id``; fire its IRQ on a matching edge."""
    pin = _pins.get(id)
    if pin is None:
        raise ValueError("pin %d was never created" % id)
    old = pin._level()
    pin._ext = 1 if level else 0
    if pin._mode != Pin.IN or old == pin._ext or pin._handler is None:
        return
    trig = Pin.IRQ_RISING if pin._ext else Pin.IRQ_FALLING
    if pin._trigger & trig:
        pin._handler(pin)


def output_level(id):
    """The level output ``id`` drives now."""
    return _pins[id]._out


class WDT:
    """The watchdog: once started it cannot be stopped."""

    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self.fed = 0
        self._last = time.ticks_ms()
        _wdts.append(self)

    def feed(self):
        """Restart the timeout."""
        self.fed += 1
        self._last = time.ticks_ms()

    def expired(self):
        """True when a real board would have reset (test hook)."""
        return time.ticks_diff(time.ticks_ms(), self._last) > self.timeout


def watchdogs():
    """Every WDT started (test hook)."""
    return list(_wdts)


_rtc_offset_s = [0]


class RTC:
    """Real-time clock: datetime() read or set."""

    def datetime(self, dt=None):
        """Get or set (year, month, day, weekday, hours, minutes, seconds, subseconds)."""
        if dt is None:
            t = time.gmtime(time.time() + _rtc_offset_s[0])
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        if len(dt) != 8:
            raise ValueError("requested length 8 but object has length %d" % len(dt))
        target = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        _rtc_offset_s[0] = target - time.mktime(time.gmtime(time.time()))
        return None


class _Counter:
    """ESP32-style pulse counter: counts one edge direction on a Pin."""

    RISING = 1
    FALLING = 2

    def __init__(self, id, src=None, edge=1, filter_ns=0):
        self.src = src
        self.edge = edge
        self.filter_ns = filter_ns
        self._count = 0
        src.irq(handler=self._edge, trigger=Pin.IRQ_RISING if edge == _Counter.RISING else Pin.IRQ_FALLING)

    def _edge(self, pin):
        self._count += 1

    def value(self, value=None):
        """The count (and optionally set it)."""
        old = self._count
        if value is not None:
            self._count = value
        return old


def enable_counter(on=True):
    """Make ``machine.Counter`` exist (as on an ESP32) or not (as on an RP2040)."""
    g = globals()
    if on:
        g["Counter"] = _Counter
    elif "Counter" in g:
        del g["Counter"]


def unique_id():
    """A fixed board id."""
    return b"\x01\x02\x03\x04\x05\x06"


def reset_cause():
    """Power-on reset."""
    return 1


PWRON_RESET = 1
WDT_RESET = 3


_uart_rx = {}


class UART:
    """A UART whose receive line the test feeds (``uart_feed``)."""

    def __init__(self, id, baudrate=9600, timeout=0, **kwargs):
        self.id = id
        self.baudrate = baudrate
        _uart_rx.setdefault(id, bytearray())

    def any(self):
        """Bytes waiting."""
        return len(_uart_rx[self.id])

    def read(self, n=-1):
        """The bytes waiting (at most ``n``), or None when there are none."""
        rx = _uart_rx[self.id]
        if not rx:
            return None
        if n < 0 or n > len(rx):
            n = len(rx)
        out = bytes(rx[:n])
        _uart_rx[self.id] = rx[n:]
        return out

    def write(self, data):
        """Transmit (discarded)."""
        return len(data)


def uart_feed(id, data):
    """Bytes arriving on UART ``id``."""
    _uart_rx.setdefault(id, bytearray()).extend(data)

