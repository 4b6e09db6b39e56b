"""Checks of hw/mpy.py that run on the MicroPython unix port (tests/test_hw_mpy.py).

Plain-assert ``test_*`` functions for tests/mpy_runner.py, with the fake
``machine`` (sim/mpy_board/machine.py) standing in for a board:

    MICROPYPATH=.frozen:sim/mpy_board:tests/fakes:.:tests micropython -X heapsize=256K \\
        tests/mpy_runner.py hw_mpy_checks
"""

import time

import machine
from agent.config import ConfigError
from agent.events import Alarm, Pulses, PulseCoil
from hw.config import validate_hw
from hw.mpy import BoardAgent, MpyBackend, datetime_from_wall, wall_from_datetime

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

PINS = {
    "pulse_pin": 4,
    "relay_set_pin": 16,
    "relay_reset_pin": 17,
    "feedback_pin": 18,
    "button_pin": 19,
    "led_pin": 21,
    "buzzer_pin": 22,
    "power_fail_pin": 23,
    "tamper_pin": 25,
}
SET = PINS["relay_set_pin"]
RESET = PINS["relay_reset_pin"]


def _cfg(**over):
    raw = {}
    for k in PINS:
        raw[k] = PINS[k]
    for k in over:
        raw[k] = over[k]
    return validate_hw(raw)


def _backend(platform="esp32", **over):
    machine.reset()
    machine.enable_counter(False)
    return MpyBackend(_cfg(**over), watchdog=False, platform=platform, log=lambda m: None)


def _periods(channel):
    out = []
    start = None
    for t, ch, lv in machine.writes:
        if ch != channel:
            continue
        if lv and start is None:
            start = t
        elif not lv and start is not None:
            out.append((start, t))
            start = None
    assert start is None, "coil left energised"
    return out


def _check_coils(gap_ms, widths):
    # Start-up counts from when the coil pins were set up off (the first
    # entries of the log), not from a clock read after it.
    t0 = None
    on = {SET: 0, RESET: 0}
    for t, ch, _lv in machine.writes:
        if ch in on:
            t0 = t
            break
    for _t, ch, lv in machine.writes:
        if ch in on:
            on[ch] = lv
            assert not (on[SET] and on[RESET]), "both coils energised"
    pulses = [(s, e, SET) for s, e in _periods(SET)] + [(s, e, RESET) for s, e in _periods(RESET)]
    pulses.sort()
    assert len(pulses) == len(widths), pulses
    last = t0
    for (s, e, ch), (coil, w) in zip(pulses, widths):
        assert ch == (SET if coil == "set" else RESET)
        assert e - s >= w, "pulse of %d ms asked, %d ms given" % (w, e - s)
        assert time.ticks_diff(s, last) >= gap_ms, "only %d ms after the previous pulse" % (s - last)
        last = e
    return pulses


def test_outputs_are_off_first_and_inputs_have_irqs():
    _backend()
    first = {}
    for _t, ch, lv in machine.writes:
        if ch not in first:
            first[ch] = lv
    for key in ("relay_set_pin", "relay_reset_pin", "led_pin", "buzzer_pin"):
        assert first[PINS[key]] == 0, key
    for key in ("pulse_pin", "feedback_pin", "button_pin", "power_fail_pin", "tamper_pin"):
        pin = machine.Pin(PINS[key])
        assert pin._mode == machine.Pin.IN
        assert pin._handler is not None
        assert pin._trigger == machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING


def test_edges_from_irqs_become_core_edges():
    b = _backend()
    pin = PINS["pulse_pin"]
    for _ in range(5):
        machine.drive(pin, 0)
        machine.drive(pin, 1)
    events = b.poll()
    assert [e.level for e in events] == [1, 0] * 5
    monos = [e.mono for e in events]
    assert monos == sorted(monos)


def test_coil_pulses_run_in_asyncio_never_overlap_and_keep_the_gap():
    b = _backend(coil_gap_ms=40)
    widths = [("set", 30), ("reset", 20), ("set", 25)]
    ran = []

    async def other_task():
        # Runs while coils are energised: the loop is not blocked.
        for _ in range(5):
            ran.append(1)
            await asyncio.sleep_ms(5)

    async def pulses():
        task = asyncio.create_task(other_task())
        for coil, width in widths:
            b.execute(PulseCoil(coil, width), wait=False)
        await b.coil_steps()
        await task

    asyncio.run(pulses())
    _check_coils(40, widths)
    assert len(ran) == 5
    assert b.coils.active is None


def test_refused_pulses_drive_nothing():
    b = _backend()
    del machine.writes[:]
    for action in (PulseCoil("set", 1), PulseCoil("reset", 5000), PulseCoil("open", 50)):
        assert b.execute(action)
    assert [w for w in machine.writes if w[2]] == []
    assert b.status()["coil_refused"] == 3


def test_alarm_outputs():
    b = _backend()
    b.execute(Alarm(1, True))
    assert machine.output_level(PINS["led_pin"]) == 1
    b.execute(Alarm(2, True))
    assert machine.output_level(PINS["buzzer_pin"]) == 1
    b.execute(Alarm(2, False))
    b.execute(Alarm(1, False))
    assert machine.output_level(PINS["buzzer_pin"]) == 0
    assert machine.output_level(PINS["led_pin"]) == 0


def test_hardware_counter_where_the_port_has_one():
    machine.reset()
    machine.enable_counter(True)
    try:
        b = MpyBackend(_cfg(pulse_counter=True), watchdog=False, platform="esp32")
        pin = PINS["pulse_pin"]
        for _ in range(7):
            machine.drive(pin, 0)
            machine.drive(pin, 1)
        events = b.poll()
        assert len(events) == 1 and isinstance(events[0], Pulses) and events[0].count == 7
        assert b.poll() == []
    finally:
        machine.enable_counter(False)


def test_no_counter_on_rp2_is_a_config_error():
    machine.reset()
    try:
        MpyBackend(_cfg(pulse_counter=True), watchdog=False, platform="rp2")
    except ConfigError as exc:
        assert exc.key == "hw.pulse_counter"
    else:
        assert False, "accepted a counter the port does not have"


def test_strapping_pins_are_refused_for_coils_on_esp32():
    machine.reset()
    try:
        MpyBackend(_cfg(relay_set_pin=12), watchdog=False, platform="esp32")
    except ConfigError as exc:
        assert exc.key == "hw.relay_set_pin" and "strapping" in str(exc)
    else:
        assert False, "accepted a strapping pin"
    machine.reset()
    MpyBackend(_cfg(relay_set_pin=12), watchdog=False, platform="rp2").close()


def test_rtc_round_trip():
    for wall in (0, 951782400, 1767225600, 1767323045, 4102444799):
        assert wall_from_datetime(datetime_from_wall(wall)) == wall
    assert datetime_from_wall(1767323045) == (2026, 1, 2, 4, 3, 4, 5, 0)  # a Friday
    b = _backend()
    b.set_wall(1767323045)
    assert abs(b.wall() - 1767323045) <= 1


def test_ticks_wrap_is_extended():
    b = _backend()
    period = 1 << 30  # ticks_ms period on boards
    raw = [period - 30]

    def ticks_diff(a, c):
        d = (a - c) & (period - 1)
        return d - period if d >= period // 2 else d

    b._ticks_diff = ticks_diff
    b._raw_ticks = lambda: raw[0]
    b._last_raw = None
    m0 = b.mono()
    raw[0] = 20  # wrapped
    assert b.mono() - m0 == 50


def test_board_loop_with_the_app_feeds_the_watchdog_and_drives_the_relay():
    import os

    from agent import settings
    from agent.app import App
    from agent.store import OsFS

    machine.reset()
    b = MpyBackend(_cfg(poll_ms=5, coil_gap_ms=20), watchdog=True, platform="esp32", log=lambda m: None)
    cfg = settings.validate({"meter": {"id": "000000000042", "constant": 1000}, "relay": {"pulse_ms": 20},
                             "tokens": {"key": "00" * 32}, "agent": {"keypad_budget": 0}})
    data = "/tmp/pmagent-hwmpy-%s" % "".join("%02x" % c for c in os.urandom(6))  # two runs never share it
    app = App(cfg, OsFS(), data, bytes(8))
    pin = PINS["pulse_pin"]
    agent = BoardAgent(app, b, None, [], lambda m: None)

    async def pulses():
        await asyncio.sleep_ms(60)
        for _ in range(3):
            machine.drive(pin, 0)
            await asyncio.sleep_ms(30)
            machine.drive(pin, 1)
            await asyncio.sleep_ms(60)

    async def both():
        task = asyncio.create_task(pulses())
        await agent.run(passes=150)  # >= 750 ms: outlasts the pulses
        await task

    try:
        os.mkdir(data)
    except OSError:
        pass
    try:
        asyncio.run(both())
    finally:
        for name in os.listdir(data):
            os.remove(data + "/" + name)
        os.rmdir(data)
    wdt = machine.watchdogs()[0]
    assert wdt.fed >= 150 and not wdt.expired()
    assert app.device.commits >= 1  # the boot commit, before any coil pulse
    assert len(_periods(SET)) + len(_periods(RESET)) == 1  # boot re-drive
    assert app.meter.energy_wh == 3
    b.close()
    assert machine.Pin(pin)._handler is None
