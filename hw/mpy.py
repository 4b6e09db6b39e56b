"""MicroPython backend (ESP32, RP2040) and the board's asyncio main loop.

Pins are ``machine.Pin`` objects; inputs use pin interrupts (soft IRQs,
the port default: the handler runs in the VM scheduler shortly after the
edge, and only timestamps it into the preallocated ring of
``hw.base.EventQueue``).  On an ESP32 the pulse input can instead use
``machine.Counter`` (the PCNT peripheral, ``hw.pulse_counter = true``);
its glitch filter tops out near 12.8 us, so it suits clean opto-coupled
S0 outputs, while contact bounce needs the IRQ path and the core's pulse
filter.  ``machine.WDT`` resets a hung board; ``machine.RTC`` keeps wall
time.  ``time.ticks_ms`` wraps (2**30 ms on boards): every difference
goes through ``time.ticks_diff`` and ``Backend.mono`` extends it.

``main()`` is what the board's main.py calls: load config.json, restore
the meter from the store, and run ``main_loop`` under asyncio.
"""

import time

import machine
from machine import Pin

from agent.calendar import civil_from_days, days_from_civil
from hw.base import EV_BUTTON, EV_FEEDBACK, EV_POWER, EV_PULSE, EV_TAMPER, Backend, Loop
from hw.config import ConfigError, require

try:
    import asyncio
except ImportError:  # very old firmware
    import uasyncio as asyncio  # type: ignore[no-redef]

# ESP32 strapping pins: their level at reset selects the boot mode, and
# some output a signal while booting: never drive a coil from them.
_ESP32_STRAPPING = (0, 2, 5, 12, 15)

_INPUTS = (
    ("pulse_pin", "pulse", EV_PULSE),
    ("feedback_pin", "feedback", EV_FEEDBACK),
    ("button_pin", "button", EV_BUTTON),
    ("power_fail_pin", "power_fail", EV_POWER),
    ("tamper_pin", "tamper", EV_TAMPER),
)
_OUTPUTS = (
    ("relay_set_pin", "set"),
    ("relay_reset_pin", "reset"),
    ("led_pin", "led"),
    ("buzzer_pin", "buzzer"),
)

DAY_S = 86400


def epoch_offset():
    """Seconds to add to ``time.time()`` for Unix time (2000-epoch ports)."""
    return 946684800 if time.gmtime(0)[0] == 2000 else 0


def wall_from_datetime(dt):
    """Unix seconds from an ``RTC.datetime()`` tuple (y, m, d, wd, h, mi, s, sub)."""
    return days_from_civil(dt[0], dt[1], dt[2]) * DAY_S + dt[4] * 3600 + dt[5] * 60 + dt[6]


def datetime_from_wall(wall):
    """An ``RTC.datetime()`` tuple for Unix seconds ``wall`` (weekday 0 = Monday)."""
    days = wall // DAY_S
    sec = wall - days * DAY_S
    y, m, d = civil_from_days(days)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    return (y, m, d, weekday, sec // 3600, (sec // 60) % 60, sec % 60, 0)


def _port():
    import sys

    return sys.platform


class MpyBackend(Backend):
    """Hardware on a MicroPython board.

    ``watchdog``: start ``machine.WDT`` (cannot be stopped once started,
    so tests and the REPL may pass False); ``platform`` overrides
    ``sys.platform`` for the pin checks.
    """

    name = "mpy"

    def __init__(self, cfg, watchdog=True, platform=None, log=None):
        Backend.__init__(self, cfg, ticks_diff=time.ticks_diff, log=log)
        self.platform = platform or _port()
        _check_pins(cfg, self.platform)
        self._pins = {}
        self._counter = None
        self._counter_base = 0
        for key, name in _OUTPUTS:
            pin = cfg[key]
            if pin is None:
                continue
            # value= is applied before the pin becomes an output: no glitch.
            self._pins[name] = Pin(pin, Pin.OUT, value=self._level(name, False))
        for key, name, kind in _INPUTS:
            pin = cfg[key]
            if pin is None:
                continue
            pull = Pin.PULL_UP
            if name == "pulse":
                pull = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN, "off": None}[cfg["pulse_pull"]]
            p = Pin(pin, Pin.IN, pull)
            self._pins[name] = p
            if name == "pulse" and cfg["pulse_counter"]:
                self._counter = _make_counter(p, cfg)
                continue
            p.irq(handler=_handler(self.queue, kind), trigger=Pin.IRQ_RISING | Pin.IRQ_FALLING)
        self._rtc = machine.RTC()
        self._wdt = machine.WDT(timeout=cfg["watchdog_ms"]) if watchdog else None
        self._setup()

    def _level(self, name, on):
        if name in ("set", "reset") and self.cfg["coil_active_low"]:
            on = not on
        return 1 if on else 0

    # ------------------------------------------------------------ Backend

    def _raw_ticks(self):
        return time.ticks_ms()

    def _read(self, name):
        pin = self._pins.get(name)
        if pin is None:
            return None
        return pin.value()

    def _write(self, name, on):
        pin = self._pins.get(name)
        if pin is not None:
            pin.value(self._level(name, on))

    def _read_counter(self):
        if self._counter is None:
            return None
        return self._counter.value()

    def wall(self):
        """Unix seconds from the RTC."""
        return wall_from_datetime(self._rtc.datetime())

    def set_wall(self, wall):
        """Set the RTC to Unix seconds ``wall``."""
        self._rtc.datetime(datetime_from_wall(int(wall)))

    def feed_watchdog(self):
        """Feed machine.WDT."""
        if self._wdt is not None:
            self._wdt.feed()

    def sleep_ms(self, ms):
        """Block (used only outside the asyncio loop)."""
        time.sleep_ms(ms)

    async def coil_steps(self):
        """Run queued coil pulses, yielding to other tasks while a coil is on."""
        while True:
            delay = self.coils.service()
            if delay is None:
                return
            await asyncio.sleep_ms(delay)

    def close(self):
        """Coils and outputs off; interrupts off."""
        Backend.close(self)
        for name in ("pulse", "feedback", "button", "power_fail", "tamper"):
            pin = self._pins.get(name)
            if pin is not None and not (name == "pulse" and self._counter is not None):
                pin.irq(handler=None)


def _handler(queue, kind):
    # A closure over the ring's put: no attribute lookups on the backend
    # and no allocation when it runs.
    put = queue.put
    ticks = time.ticks_ms

    def handler(pin):
        put(kind, pin.value(), ticks())

    return handler


def _make_counter(pin, cfg):
    counter_cls = getattr(machine, "Counter", None)
    if counter_cls is None:
        raise ConfigError("hw.pulse_counter", "this port has no machine.Counter (ESP32 only); set it to false to use pin interrupts")
    edge = counter_cls.FALLING if cfg["pulse_active_low"] else counter_cls.RISING
    return counter_cls(0, pin, edge=edge, filter_ns=cfg["pulse_counter_filter_ns"])


def _check_pins(cfg, platform):
    require(cfg, ("pulse_pin", "relay_set_pin", "relay_reset_pin"), "mpy")
    if platform == "esp32":
        for key in ("relay_set_pin", "relay_reset_pin"):
            if cfg[key] in _ESP32_STRAPPING:
                raise ConfigError(
                    "hw." + key,
                    "GPIO %d is an ESP32 strapping pin and may be driven during boot; choose another" % cfg[key],
                )
    if platform == "rp2":
        for key, _n in _OUTPUTS:
            pin = cfg[key]
            if pin is not None and pin > 29:
                raise ConfigError("hw." + key, "the RP2040 has GPIO 0-29, got %d" % pin)


# ---------------------------------------------------------------- main loop


async def main_loop(backend, meter, other, tick_ms=1000, passes=None):
    """Run the agent under asyncio: ``hw.base.Loop`` with non-blocking coil pulses.

    ``other(action)`` carries out Persist, Publish and Ack, in order, so a
    Persist completes before the coil pulse or Ack after it.  While a coil
    is energised other tasks (the MQTT link) keep running.  ``passes``
    stops after that many passes (tests); None runs for ever.
    """
    from agent.events import Boot

    loop = Loop(backend, meter, other, tick_ms)
    await _feed(backend, meter.handle(Boot(backend.wall(), backend.mono())), other)
    for event in backend.start():
        await _feed(backend, meter.handle(event), other)
    loop.last_tick = backend.mono()
    poll_ms = backend.cfg["poll_ms"]
    while passes is None or loop.steps < passes:
        loop.steps += 1
        for event in backend.poll():
            await _feed(backend, meter.handle(event), other)
        tick = loop.tick_due()
        if tick is not None:
            await _feed(backend, meter.handle(tick), other)
        backend.feed_watchdog()
        await asyncio.sleep_ms(poll_ms)


async def _feed(backend, actions, other):
    for action in actions:
        if action.kind == "pulse_coil":
            backend.execute(action, wait=False)
            await backend.coil_steps()
        elif not backend.execute(action):
            other(action)


# ---------------------------------------------------------------- board entry


def load_config(path="config.json"):
    """Read and validate the board's JSON config: (core config, hw section, raw dict).

    The core's sections and ``hw`` are validated here; other sections
    (link, keys, ...) are left in ``raw`` for their own components.
    """
    import json

    from agent.meter import SCHEMA, load_config as core_config
    from hw.config import validate_hw

    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ConfigError("(top)", "config.json must hold a JSON object")
    core = {}
    for key in raw:
        if key in SCHEMA:
            core[key] = raw[key]
    return core_config(core), validate_hw(raw.get("hw", {})), raw


class BoardShell:
    """What the board does with Persist, Publish and Ack: store, print."""

    def __init__(self, meter, store, persist_every_s=300):
        self.meter = meter
        self.store = store
        self.persist_every_s = persist_every_s
        self.last_commit = None
        self.commits = 0

    def __call__(self, action):
        kind = action.kind
        if kind == "persist":
            now = time.ticks_ms()
            # Urgent commits are immediate; routine ones are batched to spare flash.
            if action.urgent or self.last_commit is None or time.ticks_diff(now, self.last_commit) >= self.persist_every_s * 1000:
                self.store.commit(self.meter.snapshot())
                self.last_commit = now
                self.commits += 1
        elif kind == "publish":
            rec = action.record
            print("event", rec.seq, rec.kind, rec.reason)
        elif kind == "ack":
            print("ack", action.ref, action.code, action.balance)


def restore(cfg, store):
    """The meter from the newest stored state that fits, or a new one."""
    from agent.meter import Meter

    loaded, findings, _had = store.load()
    for finding in findings:
        print("store:", finding)
    for candidate in loaded:
        try:
            meter = Meter.restore(cfg, candidate.value)
        except ValueError as exc:
            print("store: state does not fit:", exc)
            continue
        store.adopt(candidate)
        return meter
    store.adopt(None)
    return Meter(cfg)


def main(config_path="config.json", data_dir="data", watchdog=True, passes=None):
    """Board entry point (main.py): config, store, backend, asyncio loop."""
    import os

    from agent.store import OsFS, Store

    cfg, hw, _raw = load_config(config_path)
    try:
        os.mkdir(data_dir)
    except OSError:
        pass  # already there
    store = Store(OsFS(), data_dir, cfg["meter"]["id"])
    meter = restore(cfg, store)
    backend = MpyBackend(hw, watchdog=watchdog)
    shell = BoardShell(meter, store)
    try:
        asyncio.run(main_loop(backend, meter, shell, passes=passes))
    finally:
        backend.close()
    return meter, backend, shell
