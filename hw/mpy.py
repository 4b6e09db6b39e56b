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

``main()`` is what the board's main.py calls: load config.json (the
agent's one schema), build the endpoint through ``agent.app.App`` (meter,
durable store, tokens, link session), join Wi-Fi, keep the MQTT link up
over TLS and run the one loop under asyncio.
"""

import time

import machine
from machine import Pin

from agent.calendar import civil_from_days, days_from_civil
from hw.base import EV_BUTTON, EV_FEEDBACK, EV_POWER, EV_PULSE, EV_TAMPER, Backend
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


# ---------------------------------------------------------------- the board agent


def _mem(log, step):
    # The heap in use after a collection, at each step (docs/benchmarks.md).
    import gc

    if hasattr(gc, "mem_alloc"):
        gc.collect()
        log("mem %s %d" % (step, gc.mem_alloc()))


def _der(path):
    """A certificate or key file as DER: MicroPython's mbedTLS takes DER
    (PEM would need a NUL terminator it does not add)."""
    import binascii

    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"-----BEGIN"):
        return data
    body = b"".join(line for line in data.split(b"\n") if line and not line.startswith(b"-----"))
    return binascii.a2b_base64(body)


def _rand():
    import os

    r = os.urandom(4)
    return ((r[0] << 24) | (r[1] << 16) | (r[2] << 8) | r[3]) >> 2


class BoardLink:
    """Wi-Fi join with backoff, then the MQTT transport (agent/link/umqtt.py)
    over TLS with the meter's client certificate.

    ``step()`` never raises and never reboots: a broker or Wi-Fi outage is
    a backoff and a later retry while the meter runs on.  What the broker
    sends goes through ``app``; hardware actions it returns are appended to
    ``pending`` for the main loop (which owns the coils).
    """

    def __init__(self, app, cfg, backend, pending, log):
        from agent.link.backoff import Backoff
        from agent.link.umqtt import Transport

        mq = cfg["mqtt"]
        self.wifi = cfg["wifi"]
        self.mq = mq
        self.log = log
        self.clock = lambda: (backend.wall(), backend.mono())
        self.wlan = None
        self.joined = False
        self.next_join = 0
        self.wifi_backoff = Backoff(1000, 60000)
        self.connects = 0
        self.transport = Transport(app, self._socket, mq["client_id"] or app.meter_id, Backoff(1000, 120000),
                                   self.clock, _rand, keepalive=mq["keepalive_s"], user=mq["username"],
                                   password=mq["password"], on_hw=pending.extend, log=lambda m: log("mqtt: " + m))

    def _socket(self):
        from agent.link.umqtt import open_socket

        mq = self.mq
        ctx = None
        if mq["tls"]:
            import ssl

            # Built per connection: the parsed certificates leave the heap
            # while the broker is away.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # MicroPython's default is CERT_NONE (any broker would do); the
            # board stubs lack the attribute.
            ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
            ctx.load_verify_locations(cadata=_der(mq["ca"]))
            if mq["cert"] is not None:
                ctx.load_cert_chain(_der(mq["cert"]), _der(mq["key"]))
        return open_socket(mq["host"], mq["port"], ctx, server_hostname=mq["host"])

    def _wifi_up(self, mono):
        if self.wifi["ssid"] is None:
            return True  # wired, or the unix port: no Wi-Fi to join
        w = self.wlan
        if w is None:
            import network

            w = self.wlan = network.WLAN(network.STA_IF)
            w.active(True)
        if w.isconnected():
            if not self.joined:
                self.joined = True
                self.wifi_backoff.connected(mono)
                self.log("wifi connected to %s as %s" % (self.wifi["ssid"], w.ifconfig()[0]))
            return True
        if self.joined:
            self.joined = False
            self.wifi_backoff.disconnected(mono)
            self.log("wifi lost")
        if mono >= self.next_join:
            delay = self.wifi_backoff.next_delay(_rand())
            self.next_join = mono + delay
            self.log("wifi joining %s (next try in %d ms)" % (self.wifi["ssid"], delay))
            try:
                w.connect(self.wifi["ssid"], self.wifi["password"])
            except OSError as exc:
                self.log("wifi join failed: %r" % (exc,))
        return False

    def step(self):
        """Join Wi-Fi when due, connect when due, handle what arrived."""
        if not self._wifi_up(self.clock()[1]):
            return
        t = self.transport
        t.step(0)
        if t.connects != self.connects:
            self.connects = t.connects
            self.log("mqtt connected to %s:%d (connection %d)" % (self.mq["host"], self.mq["port"], t.connects))
            _mem(self.log, "connected")

    def send(self, outs):
        """Publish ``Out``s now (the outbox keeps them while offline)."""
        self.transport.send(outs)


class BoardAgent:
    """The board's shell around ``agent.app.App``: hardware, link, one loop.

    One asyncio task runs everything in order: inputs into the App, the
    Tick, the coil pulses awaited to the end, then the link.  The link's
    connect (TLS handshake) blocks, so it never runs while a coil is
    energised: a pulse is never stretched past ``relay.pulse_ms``.
    """

    def __init__(self, app, backend, link, pending, log, keypad=None):
        self.app = app
        self.backend = backend
        self.link = link
        self.pending = pending
        self.log = log
        self.keypad = keypad  # a hw.keys.KeypadSource, or None
        self.passes = 0

    async def carry(self, result):
        """Carry out one step's (hardware actions, Outs), coil pulses to the end."""
        hw, outs = result
        b = self.backend
        for a in hw:
            if a.kind == "pulse_coil":
                b.execute(a, wait=False)
                await b.coil_steps()
            elif not b.execute(a):
                self.log("ack %s %s" % (a.ref, a.code))  # the core's answer to a command (MQTT acks also go out sealed)
        if outs and self.link is not None:
            self.link.send(outs)

    async def run(self, passes=None):
        """Boot, then loop (``passes`` times, or for ever)."""
        b = self.backend
        app = self.app
        await self.carry(app.boot(b.wall(), b.mono()))
        m = app.meter
        self.log("meter %s booted: balance %d, energy %d Wh, relay %s, store %s" % (
            app.meter_id, m.balance, m.energy_wh, m.relay_state, app.device.source or "new"))
        _mem(self.log, "booted")
        for ev in b.start():
            await self.carry(app.event(ev, b.wall()))
        poll_ms = b.cfg["poll_ms"]
        while passes is None or self.passes < passes:
            self.passes += 1
            for ev in b.poll():
                await self.carry(app.event(ev, b.wall()))
            await self.carry(app.tick(b.wall(), b.mono()))
            if self.keypad is not None:
                mono = b.mono()
                for digits in self.keypad.poll(mono):
                    code, hw, outs = app.keypad(digits, b.wall(), mono)
                    self.log("keypad code: %s" % code)
                    await self.carry((hw, outs))
            if self.pending:
                hw = self.pending[:]
                del self.pending[:]
                await self.carry((hw, []))
            if self.link is not None:
                self.link.step()
            if app.fault is not None:
                # A step failed half-way (MemoryError): restart from the
                # store; main.py resets the board.
                raise app.fault
            app.idle()
            b.feed_watchdog()
            wait = app.sleep_ms(b.wall(), b.mono())
            await asyncio.sleep_ms(wait if wait < poll_ms else poll_ms)


# ---------------------------------------------------------------- board entry


def load_config(path="config.json"):
    """The board's JSON config validated with the agent's full schema (agent/settings.py).

    The keys may sit in config.json itself (a board's flash has no file
    modes) or in the file ``agent.keys`` names.
    """
    from agent import settings

    try:
        with open(path) as f:
            raw = settings.parse(f.read(), path)
    except OSError as exc:
        raise ConfigError("(file)", "cannot read %s: %s" % (path, exc))
    if not isinstance(raw, dict):
        raise ConfigError("(file)", "%s must hold a JSON object" % path)
    if "tokens" not in raw:
        raw = settings.merge_keys(raw, path)
    return settings.validate(raw)


def open_keypad(spec, baud, log):
    """The keypad of ``agent.keypad``: "" none, "uart:N" the keys a keypad
    controller writes to UART N (a GPIO-matrix keypad needs such a scanner)."""
    if not spec:
        return None
    if not spec.startswith("uart:") or not spec[5:].isdigit():
        raise ConfigError("agent.keypad", "on a board: empty or 'uart:N' (the UART the keypad writes to), got %r" % (spec,))
    from hw.keys import KeyCollector, KeypadSource

    uart = machine.UART(int(spec[5:]), baudrate=baud, timeout=0)
    return KeypadSource(uart.read, spec, KeyCollector(log=log), log=log)


def _log_record(log):
    def on_record(rec):
        log("event %d %s %s %r" % (rec.seq, rec.kind, rec.reason, rec.data))
        if rec.kind == "topup":
            _mem(log, "topup")

    return on_record


def _log_refusal(log):
    def on_refusal(source, ref, code, why):
        log("token refused (%s, ref %s): %s%s" % (source, "-" if ref is None else ref, code,
                                                   "" if not why or why == code else " (%s)" % why))

    return on_refusal


def main(config_path="config.json", data_dir="data", watchdog=True, passes=None, extra=None, log=print):
    """Board entry point (main.py): config, App, backend, link, asyncio loop.

    ``extra(agent)``, when given, is a coroutine run beside the loop (the
    virtual board and tests drive the fake pins with it).  Returns the
    BoardAgent after ``passes`` passes.
    """
    import os

    from agent.app import App
    from agent.store import OsFS

    _mem(log, "start")
    cfg = load_config(config_path)
    keypad = open_keypad(cfg["agent"]["keypad"], cfg["agent"]["keypad_baud"], log)
    try:
        os.mkdir(data_dir)
    except OSError:
        pass  # already there
    backend = MpyBackend(cfg["hw"], watchdog=watchdog, log=lambda m: log("hw: " + m))
    app = App(cfg, OsFS(), data_dir, os.urandom(8), on_clock=backend.set_wall, on_record=_log_record(log),
              on_refusal=_log_refusal(log))
    pending = []
    link = BoardLink(app, cfg, backend, pending, log) if cfg["mqtt"]["host"] is not None else None
    if link is None:
        log("no mqtt.host: running offline")
    agent = BoardAgent(app, backend, link, pending, log, keypad)
    _mem(log, "built")

    async def run():
        if extra is not None:
            asyncio.create_task(extra(agent))
        await agent.run(passes)

    try:
        asyncio.run(run())
    finally:
        backend.close()
    return agent
