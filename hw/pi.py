"""Raspberry Pi backend: the RPi.GPIO API with edge-detect callbacks.

Works with the classic ``RPi.GPIO`` (Pi 1-4 on kernels before 6.6) and
with ``rpi-lgpio``, the drop-in that provides the same ``RPi.GPIO`` module
over lgpio: on a Pi 5, or any Pi on kernel 6.6 or later, ``RPi.GPIO``
itself fails with "Failed to add edge detection", so install
``rpi-lgpio`` there (docs/hardware.md).

RPi.GPIO runs edge callbacks on its own thread; they only timestamp the
edge and put it in the bounded queue (``hw.base.EventQueue``) under a
lock.  The main loop drains it and feeds the core, which is not
re-entrant.  Pin numbers are BCM.
"""

import os
import socket
import threading
import time

from hw.base import EV_BUTTON, EV_FEEDBACK, EV_POWER, EV_PULSE, EV_TAMPER, Backend
from hw.config import ConfigError, require

# GPIO 0-8 have a pull-up at power-on: a coil driver on one of them would
# switch on before the agent runs.  GPIO 9-27 are pulled down.
_BOOT_PULLED_UP = range(0, 9)
_USABLE = range(2, 28)  # 0/1 are the HAT ID EEPROM bus

_INPUTS = (
    ("pulse_pin", "pulse"),
    ("feedback_pin", "feedback"),
    ("button_pin", "button"),
    ("power_fail_pin", "power_fail"),
    ("tamper_pin", "tamper"),
)
_OUTPUTS = (
    ("relay_set_pin", "set"),
    ("relay_reset_pin", "reset"),
    ("led_pin", "led"),
    ("buzzer_pin", "buzzer"),
    ("rs485_de_pin", "rs485_de"),
)


def import_gpio():
    """Import the RPi.GPIO module, or explain which package to install."""
    try:
        import RPi.GPIO as gpio
    except ImportError as exc:
        raise RuntimeError(
            "cannot import RPi.GPIO (%s): install rpi-lgpio on a Pi 5 or on kernel 6.6+ "
            "(pip install rpi-lgpio), RPi.GPIO on older systems" % exc
        )
    return gpio


def _monotonic_ms():
    return time.monotonic_ns() // 1000000


class SystemdNotifier:
    """sd_notify over ``$NOTIFY_SOCKET`` (no libsystemd needed).

    ``ready()`` says start-up is done (Type=notify); ``watchdog()`` pings
    WatchdogSec, rate-limited to a quarter of ``$WATCHDOG_USEC``.  Without
    the environment variables (not under systemd) both do nothing.
    """

    def __init__(self, environ=None, clock_ms=_monotonic_ms):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET")
        if path and path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace socket
        self._path = path or None
        usec = env.get("WATCHDOG_USEC", "")
        self.interval_ms = int(usec) // 4000 if usec.isdigit() and int(usec) > 0 else None
        self._clock = clock_ms
        self._last = None
        self._ready = False
        self._sock = None

    def send(self, message):
        """Send one notification; return True if sent."""
        if self._path is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.sendto(message.encode(), self._path)
        except OSError:
            return False
        return True

    def ready(self):
        """READY=1, once."""
        if not self._ready:
            self._ready = True
            self.send("READY=1")

    def watchdog(self):
        """WATCHDOG=1 unless sent less than a quarter period ago."""
        self.ready()
        if self.interval_ms is None:
            return
        now = self._clock()
        if self._last is None or now - self._last >= self.interval_ms:
            self._last = now
            self.send("WATCHDOG=1")

    def stopping(self):
        """STOPPING=1 before a clean exit."""
        self.send("STOPPING=1")

    def close(self):
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class PiBackend(Backend):
    """Hardware on a Raspberry Pi's GPIO header (BCM numbering).

    ``gpio`` is the RPi.GPIO module (tests pass a fake); ``clock_ms``,
    ``sleep_ms`` and ``wall_s`` default to the system clocks; ``notifier``
    to a ``SystemdNotifier`` from the environment.
    """

    name = "pi"

    def __init__(self, cfg, gpio=None, clock_ms=None, sleep_ms=None, wall_s=None, notifier=None, log=None):
        Backend.__init__(self, cfg, lock=threading.Lock(), log=log)
        _check_pins(cfg)
        self.gpio = import_gpio() if gpio is None else gpio
        self._clock = clock_ms or _monotonic_ms
        self._sleep = sleep_ms or (lambda ms: time.sleep(ms / 1000))
        self._wall = wall_s or time.time
        self._wall_offset = 0
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self._pins = {}
        self._channels = []
        g = self.gpio
        g.setwarnings(False)
        g.setmode(g.BCM)
        try:
            self._setup_outputs()
            self._setup_inputs()
        except Exception:
            self._release()
            raise
        self._setup()

    def _setup_outputs(self):
        g = self.gpio
        cfg = self.cfg
        for key, name in _OUTPUTS:
            pin = cfg[key]
            if pin is None:
                continue
            off = self._level(name, False)
            # initial= sets the level in the same call that makes it an
            # output, so a coil driver never sees a high glitch.
            g.setup(pin, g.OUT, initial=off)
            self._pins[name] = pin
            self._channels.append(pin)

    def _setup_inputs(self):
        g = self.gpio
        cfg = self.cfg
        pulls = {"up": g.PUD_UP, "down": g.PUD_DOWN, "off": g.PUD_OFF}
        handlers = {
            "pulse": self._on_pulse,
            "feedback": self._on_feedback,
            "button": self._on_button,
            "power_fail": self._on_power,
            "tamper": self._on_tamper,
        }
        bounce = cfg["debounce_ms"]
        for key, name in _INPUTS:
            pin = cfg[key]
            if pin is None:
                continue
            pull = pulls[cfg["pulse_pull"]] if name == "pulse" else g.PUD_UP
            g.setup(pin, g.IN, pull_up_down=pull)
            self._pins[name] = pin
            self._channels.append(pin)
            # No bouncetime on the pulse input (the core's pulse filter sees
            # every edge; RPi.GPIO and rpi-lgpio debounce differently) nor on
            # power-fail (no delay).  Contacts get it, and level polling
            # in poll() repairs an edge bouncetime swallowed.
            if name in ("pulse", "power_fail") or bounce <= 0:
                g.add_event_detect(pin, g.BOTH, callback=handlers[name])
            else:
                g.add_event_detect(pin, g.BOTH, callback=handlers[name], bouncetime=bounce)

    def _level(self, name, on):
        if name in ("set", "reset") and self.cfg["coil_active_low"]:
            on = not on
        return self.gpio.HIGH if on else self.gpio.LOW

    # ------------------------------------------------------------ callbacks (GPIO thread)

    def _on_pulse(self, channel):
        self.irq(EV_PULSE, self.gpio.input(channel))

    def _on_feedback(self, channel):
        self.irq(EV_FEEDBACK, self.gpio.input(channel))

    def _on_button(self, channel):
        self.irq(EV_BUTTON, self.gpio.input(channel))

    def _on_power(self, channel):
        self.irq(EV_POWER, self.gpio.input(channel))

    def _on_tamper(self, channel):
        self.irq(EV_TAMPER, self.gpio.input(channel))

    # ------------------------------------------------------------ Backend

    def _raw_ticks(self):
        return self._clock()

    def _read(self, name):
        pin = self._pins.get(name)
        if pin is None:
            return None
        return 1 if self.gpio.input(pin) else 0

    def _write(self, name, on):
        pin = self._pins.get(name)
        if pin is not None:
            self.gpio.output(pin, self._level(name, on))

    def rs485_transmit(self, on):
        """Drive the RS-485 transceiver's DE + /RE: True to send, False to listen.

        ``hw.serial_link.SerialSlave`` calls it around each frame it writes
        (``direction=``); without ``hw.rs485_de_pin`` it does nothing.
        """
        self._write("rs485_de", on)

    def wall(self):
        """System time (kept by NTP or an RTC HAT) plus any offset from set_wall."""
        return int(self._wall()) + self._wall_offset

    def set_wall(self, wall):
        """Follow a clock set from the head-end without touching the system clock.

        Setting the system clock needs CAP_SYS_TIME, which the agent does
        not run with; NTP remains the source of truth when it is running.
        """
        self._wall_offset = int(wall) - int(self._wall())
        self._log("hw: wall clock offset now %d s from the system clock" % self._wall_offset)

    def feed_watchdog(self):
        """Ping systemd's watchdog (READY=1 the first time)."""
        self.notifier.watchdog()

    def sleep_ms(self, ms):
        """Block for ``ms`` milliseconds."""
        self._sleep(ms)

    def close(self):
        """Coils off, then release the pins (external pull-downs hold the coils off)."""
        Backend.close(self)
        self.notifier.stopping()
        self._release()

    def _release(self):
        if self._channels:
            try:
                self.gpio.cleanup(self._channels)
            finally:
                self._channels = []


def _check_pins(cfg):
    require(cfg, ("pulse_pin", "relay_set_pin", "relay_reset_pin"), "pi")
    for key, _name in _INPUTS + _OUTPUTS:
        pin = cfg[key]
        if pin is None:
            continue
        if pin not in _USABLE:
            raise ConfigError("hw." + key, "GPIO %d is not usable on a Pi header; use BCM GPIO 2-27" % pin)
    for key in ("relay_set_pin", "relay_reset_pin"):
        pin = cfg[key]
        if cfg["coil_active_low"]:
            if pin not in _BOOT_PULLED_UP:
                raise ConfigError(
                    "hw." + key,
                    "GPIO %d is pulled down at power-on and would energise an active-low coil "
                    "driver before the agent starts; use GPIO 2-8 or an active-high driver" % pin,
                )
        elif pin in _BOOT_PULLED_UP:
            raise ConfigError(
                "hw." + key,
                "GPIO %d is pulled up at power-on and would energise the coil before the agent "
                "starts; use GPIO 9-27 (pulled down at power-on)" % pin,
            )
