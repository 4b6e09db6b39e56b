"""A fake ``RPi.GPIO`` for tests: same API, constants and error messages.

Behaves like RPi.GPIO 0.7 / rpi-lgpio for what the agent uses: a
numbering mode must be set before ``setup``; ``input`` needs a set-up
channel (an output reads back its last level); ``output`` needs an
output; ``add_event_detect`` needs an input, refuses a second detection on
the same channel, rejects a bad edge or a bouncetime <= 0, and calls each
callback with the channel number; a bouncetime drops edges closer than
that to the last reported one (RPi.GPIO semantics).

Test hooks (underscore names, not in the real module):

- ``_reset()`` forgets everything; ``_clock`` is the ms time source used
  for bouncetime and the write log (tests install a virtual clock);
- ``_drive(channel, level)`` changes the level outside the Pi drives on
  an input and fires edge detection as the hardware would;
- ``_writes`` logs every level an output takes: ``(ms, channel, level)``;
- ``_threaded = True`` runs callbacks on a separate thread, as the real
  module does; ``_flush()`` waits until that thread has run them all.
"""

import queue as _queue
import threading as _threading
import time as _time

VERSION = "0.7.1"
RPI_INFO = {"P1_REVISION": 3, "REVISION": "c03111", "TYPE": "Pi 4 Model B", "MANUFACTURER": "Sony UK", "PROCESSOR": "BCM2711", "RAM": "4GB"}
RPI_REVISION = 3

UNKNOWN = -1
BOARD = 10
BCM = 11
PUD_OFF = 20
PUD_DOWN = 21
PUD_UP = 22
OUT = 0
IN = 1
LOW = 0
HIGH = 1
RISING = 31
FALLING = 32
BOTH = 33
SERIAL = 40
SPI = 41
I2C = 42
HARD_PWM = 43

_BOARD_MAP = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
    18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 29: 5, 31: 6, 32: 12,
    33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}
_BCM_MAP = {gpio: pin for pin, gpio in _BOARD_MAP.items()}


def _default_clock():
    return _time.monotonic_ns() // 1000000


_clock = _default_clock
_threaded = False
_lock = _threading.RLock()


def _reset():
    """Forget all state (between tests)."""
    global _mode, _warnings, _clock, _threaded
    _stop_worker()
    with _lock:
        _mode = UNKNOWN
        _warnings = True
        _clock = _default_clock
        _threaded = False
        _direction.clear()
        _pull.clear()
        _out_level.clear()
        _ext_level.clear()
        _edges.clear()
        _bounce.clear()
        _last_event.clear()
        _callbacks.clear()
        _detected.clear()
        del _writes[:]


_mode = UNKNOWN
_warnings = True
_direction = {}   # gpio -> IN / OUT
_pull = {}        # gpio -> PUD_*
_out_level = {}   # gpio -> level written
_ext_level = {}   # gpio -> level driven from outside (inputs)
_edges = {}       # gpio -> RISING / FALLING / BOTH
_bounce = {}      # gpio -> bouncetime ms or None
_last_event = {}  # gpio -> ms of the last reported edge
_callbacks = {}   # gpio -> [callable]
_detected = {}    # gpio -> bool
_writes = []      # (ms, channel, level)
_worker = None
_work = None


def _to_gpio(channel):
    if _mode == UNKNOWN:
        raise RuntimeError(
            "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
        )
    if not isinstance(channel, int) or isinstance(channel, bool):
        raise ValueError("Channel must be an integer or list/tuple of integers")
    if _mode == BCM:
        if not 0 <= channel < 54:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return channel
    try:
        return _BOARD_MAP[channel]
    except KeyError:
        raise ValueError("The channel sent is invalid on a Raspberry Pi") from None


def _from_gpio(gpio):
    return gpio if _mode == BCM else _BCM_MAP[gpio]


def _gpio_list(chanlist):
    if isinstance(chanlist, (list, tuple)):
        return [_to_gpio(c) for c in chanlist]
    return [_to_gpio(chanlist)]


def _pin_level(gpio):
    if _direction.get(gpio) == OUT:
        return _out_level.get(gpio, LOW)
    if gpio in _ext_level:
        return _ext_level[gpio]
    return HIGH if _pull.get(gpio) == PUD_UP else LOW


def getmode():
    """The numbering mode, or None before setmode."""
    return None if _mode == UNKNOWN else _mode


def setmode(new_mode):
    """Choose BOARD or BCM numbering (once)."""
    global _mode
    if _mode != UNKNOWN and new_mode != _mode:
        raise ValueError("A different mode has already been set!")
    if new_mode not in (BOARD, BCM):
        raise ValueError("An invalid mode was passed to setmode()")
    _mode = new_mode


def setwarnings(value):
    """Enable or disable warnings."""
    global _warnings
    _warnings = bool(value)


def setup(chanlist, direction, pull_up_down=PUD_OFF, initial=None):
    """Make channels inputs (with a pull) or outputs (with an initial level)."""
    if direction == OUT:
        if pull_up_down != PUD_OFF:
            raise ValueError("pull_up_down parameter is not valid for outputs")
    elif direction == IN:
        if initial is not None:
            raise ValueError("initial parameter is not valid for inputs")
        if pull_up_down not in (PUD_UP, PUD_DOWN, PUD_OFF):
            raise ValueError("Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN")
    else:
        raise ValueError("An invalid direction was passed to setup()")
    with _lock:
        for gpio in _gpio_list(chanlist):
            if direction == OUT:
                _remove_detect(gpio)
                level = _pin_level(gpio) if initial is None else (HIGH if initial else LOW)
                _direction[gpio] = OUT
                _pull[gpio] = PUD_OFF
                _out_level[gpio] = level
                _writes.append((_clock(), _from_gpio(gpio), level))
            else:
                _direction[gpio] = IN
                _pull[gpio] = pull_up_down


def input(channel):
    """Read a channel: an input's level, or an output's last written level."""
    with _lock:
        gpio = _to_gpio(channel)
        if gpio not in _direction:
            raise RuntimeError("You must setup() the GPIO channel first")
        return _pin_level(gpio)


def output(channel, value):
    """Drive output channel(s) to value(s)."""
    with _lock:
        gpios = _gpio_list(channel)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(gpios) != len(values):
            if len(gpios) > 1 and len(values) == 1:
                values = values * len(gpios)
            else:
                raise RuntimeError("Number of channels != number of values")
        for gpio, val in zip(gpios, values):
            if _direction.get(gpio) != OUT:
                raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
            level = HIGH if val else LOW
            _out_level[gpio] = level
            _writes.append((_clock(), _from_gpio(gpio), level))


def add_event_detect(channel, edge, callback=None, bouncetime=None):
    """Start background edge detection on an input."""
    if callback is not None and not callable(callback):
        raise TypeError("Parameter must be callable")
    with _lock:
        gpio = _to_gpio(channel)
        if _direction.get(gpio) != IN:
            raise RuntimeError("You must setup() the GPIO channel as an input first")
        if edge not in (RISING, FALLING, BOTH):
            raise ValueError("The edge must be set to RISING, FALLING or BOTH")
        if bouncetime is not None and bouncetime <= 0:
            raise ValueError("Bouncetime must be greater than 0")
        if gpio in _edges:
            raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
        _edges[gpio] = edge
        _bounce[gpio] = bouncetime
        _callbacks[gpio] = [callback] if callback is not None else []
        _detected[gpio] = False


def add_event_callback(channel, callback):
    """Add another callback to a channel with edge detection."""
    if not callable(callback):
        raise TypeError("Parameter must be callable")
    with _lock:
        gpio = _to_gpio(channel)
        if _direction.get(gpio) != IN:
            raise RuntimeError("You must setup() the GPIO channel as an input first")
        if gpio not in _edges:
            raise RuntimeError("Add event detection using add_event_detect first before adding a callback")
        _callbacks[gpio].append(callback)


def _remove_detect(gpio):
    for table in (_edges, _bounce, _callbacks, _detected, _last_event):
        table.pop(gpio, None)


def remove_event_detect(channel):
    """Stop edge detection on a channel."""
    with _lock:
        _remove_detect(_to_gpio(channel))


def event_detected(channel):
    """True once after an edge was detected on the channel."""
    with _lock:
        gpio = _to_gpio(channel)
        seen = _detected.get(gpio, False)
        if seen:
            _detected[gpio] = False
        return seen


def gpio_function(channel):
    """IN or OUT."""
    with _lock:
        return OUT if _direction.get(_to_gpio(channel)) == OUT else IN


def cleanup(chanlist=None):
    """Return channels (or all) to inputs without pulls and stop detection."""
    global _mode
    with _lock:
        gpios = list(_direction) if chanlist is None else _gpio_list(chanlist)
        for gpio in gpios:
            _remove_detect(gpio)
            _direction.pop(gpio, None)
            _pull.pop(gpio, None)
            _out_level.pop(gpio, None)
        if chanlist is None:
            _mode = UNKNOWN


# ------------------------------------------------------------------ test hooks


def _drive(channel, level):
    """Drive an input from outside; fire edge detection like the hardware."""
    with _lock:
        gpio = _to_gpio(channel)
        old = _pin_level(gpio)
        level = HIGH if level else LOW
        _ext_level[gpio] = level
        if _direction.get(gpio) != IN or old == level or gpio not in _edges:
            return
        edge = _edges[gpio]
        if (edge == RISING and level == LOW) or (edge == FALLING and level == HIGH):
            return
        now = _clock()
        bounce = _bounce.get(gpio)
        last = _last_event.get(gpio)
        if bounce is not None and last is not None and now - last < bounce:
            return
        _last_event[gpio] = now
        _detected[gpio] = True
        callbacks = list(_callbacks[gpio])
        chan = _from_gpio(gpio)
    if _threaded:
        _start_worker()
        for cb in callbacks:
            _work.put((cb, chan))
    else:
        for cb in callbacks:
            cb(chan)


def _start_worker():
    global _worker, _work
    if _worker is None:
        _work = _queue.Queue()
        _worker = _threading.Thread(target=_run_worker, args=(_work,), daemon=True)
        _worker.start()


def _run_worker(work):
    while True:
        item = work.get()
        if item is None:
            work.task_done()
            return
        cb, chan = item
        try:
            cb(chan)
        except Exception as exc:  # the real module prints and carries on
            print(exc)
        work.task_done()


def _flush():
    """Wait until every queued callback has run."""
    if _work is not None:
        _work.join()


def _stop_worker():
    global _worker, _work
    if _worker is not None:
        _work.put(None)
        _worker.join()
        _worker = None
        _work = None


def _level(channel):
    """The level on a channel now."""
    with _lock:
        return _pin_level(_to_gpio(channel))
