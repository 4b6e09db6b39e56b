"""The Raspberry Pi backend against a fake RPi.GPIO (tests/fakes/RPi/GPIO.py).

The fake keeps the real module's API, constants and error messages; it
timestamps everything with a virtual millisecond clock that the backend
also uses (its sleeps advance it), so coil widths and gaps are exact.
"""

import os
import socket
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError
from agent.events import Alarm, Button, Edge, PowerFail, PulseCoil, RelayFeedback, Tamper

FAKES = os.path.join(os.path.dirname(__file__), "fakes")

PINS = {
    "pulse_pin": 17,
    "relay_set_pin": 23,
    "relay_reset_pin": 24,
    "feedback_pin": 25,
    "button_pin": 5,
    "led_pin": 12,
    "buzzer_pin": 13,
    "power_fail_pin": 6,
    "tamper_pin": 26,
}
SET, RESET = PINS["relay_set_pin"], PINS["relay_reset_pin"]


class VClock:
    """Virtual ms clock: only sleeping moves it."""

    def __init__(self, start=1000000):
        self.t = start

    def now(self):
        return self.t

    def sleep(self, ms):
        assert ms > 0, "the backend asked to sleep %r ms" % ms
        self.t += ms


@pytest.fixture
def gpio(monkeypatch):
    """The fake RPi.GPIO, importable as RPi.GPIO for the test's duration."""
    monkeypatch.syspath_prepend(FAKES)
    for name in ("RPi", "RPi.GPIO"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import RPi.GPIO as fake

    fake._reset()
    yield fake
    fake._reset()
    for name in ("RPi", "RPi.GPIO"):
        sys.modules.pop(name, None)


@pytest.fixture
def clock():
    return VClock()


def hw_cfg(**over):
    from hw.config import validate_hw

    raw = dict(PINS)
    raw.update(over)
    return validate_hw(raw)


def make(gpio, clock, notifier=None, logs=None, **over):
    from hw.pi import PiBackend, SystemdNotifier

    gpio._clock = clock.now
    return PiBackend(
        hw_cfg(**over),
        gpio=gpio,
        clock_ms=clock.now,
        sleep_ms=clock.sleep,
        wall_s=lambda: 1767225600 + clock.now() // 1000,
        notifier=notifier or SystemdNotifier(environ={}),
        log=(logs.append if logs is not None else (lambda m: None)),
    )


def coil_periods(writes, channel):
    """[(start, end)] of the high periods of one output from the write log."""
    periods = []
    start = None
    level = None
    for t, ch, lv in writes:
        if ch != channel:
            continue
        if lv and not level:
            start = t
        elif not lv and level:
            periods.append((start, t))
        level = lv
    assert not level, "channel %d left energised" % channel
    return periods


def check_coil_log(writes, gap_ms, t0, lo, hi):
    """Never both coils on; widths in [lo, hi]; gap_ms between pulses and after start-up."""
    on = {SET: 0, RESET: 0}
    for _t, ch, lv in writes:
        if ch in on:
            on[ch] = lv
            assert not (on[SET] and on[RESET]), "both coils energised"
    pulses = sorted([(s, e, SET) for s, e in coil_periods(writes, SET)] + [(s, e, RESET) for s, e in coil_periods(writes, RESET)])
    last_end = t0
    for s, e, _ch in pulses:
        assert lo <= e - s <= hi
        assert s - last_end >= gap_ms, "pulse at %d only %d ms after the previous one" % (s, s - last_end)
        last_end = e
    return pulses


# ------------------------------------------------------------ the fake behaves like RPi.GPIO


def test_fake_gpio_refuses_misuse_like_the_real_module(gpio):
    with pytest.raises(RuntimeError, match="Please set pin numbering mode"):
        gpio.setup(17, gpio.IN)
    gpio.setmode(gpio.BCM)
    with pytest.raises(ValueError, match="A different mode has already been set"):
        gpio.setmode(gpio.BOARD)
    with pytest.raises(ValueError, match="The channel sent is invalid"):
        gpio.setup(60, gpio.IN)
    with pytest.raises(RuntimeError, match="You must setup\\(\\) the GPIO channel first"):
        gpio.input(17)
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    assert gpio.input(17) == 1
    with pytest.raises(RuntimeError, match="has not been set up as an OUTPUT"):
        gpio.output(17, 1)
    with pytest.raises(ValueError, match="pull_up_down parameter is not valid for outputs"):
        gpio.setup(18, gpio.OUT, pull_up_down=gpio.PUD_UP)
    with pytest.raises(ValueError, match="initial parameter is not valid for inputs"):
        gpio.setup(18, gpio.IN, initial=0)
    gpio.setup(18, gpio.OUT, initial=gpio.HIGH)
    assert gpio.input(18) == 1  # an output reads back its level
    with pytest.raises(RuntimeError, match="as an input first"):
        gpio.add_event_detect(18, gpio.BOTH)
    with pytest.raises(ValueError, match="Bouncetime must be greater than 0"):
        gpio.add_event_detect(17, gpio.BOTH, bouncetime=0)
    with pytest.raises(ValueError, match="RISING, FALLING or BOTH"):
        gpio.add_event_detect(17, 99)
    with pytest.raises(TypeError, match="Parameter must be callable"):
        gpio.add_event_detect(17, gpio.BOTH, callback=5)
    seen = []
    gpio.add_event_detect(17, gpio.FALLING, callback=seen.append)
    with pytest.raises(RuntimeError, match="Conflicting edge detection"):
        gpio.add_event_detect(17, gpio.BOTH)
    gpio._drive(17, 0)
    gpio._drive(17, 1)  # rising: not detected
    gpio._drive(17, 0)
    assert seen == [17, 17]
    assert gpio.event_detected(17) is True
    assert gpio.event_detected(17) is False


def test_fake_gpio_bouncetime_drops_edges_close_to_the_last(gpio, clock):
    gpio._clock = clock.now
    gpio.setmode(gpio.BCM)
    gpio.setup(5, gpio.IN, pull_up_down=gpio.PUD_UP)
    seen = []
    gpio.add_event_detect(5, gpio.BOTH, callback=lambda ch: seen.append(clock.now()), bouncetime=30)
    start = clock.now()
    for level in (0, 1, 0, 1, 0):  # bounces 5 ms apart
        gpio._drive(5, level)
        clock.sleep(5)
    clock.sleep(40)
    gpio._drive(5, 1)
    assert seen == [start, start + 65]


# ------------------------------------------------------------ set-up


def test_outputs_start_low_and_inputs_are_pulled_up_with_edge_detection(gpio, clock):
    b = make(gpio, clock)
    first = {}
    for _t, ch, lv in gpio._writes:
        first.setdefault(ch, lv)
    for key in ("relay_set_pin", "relay_reset_pin", "led_pin", "buzzer_pin"):
        assert first[PINS[key]] == 0, key  # the very first level an output takes is off
    for key in ("pulse_pin", "feedback_pin", "button_pin", "power_fail_pin", "tamper_pin"):
        pin = PINS[key]
        assert gpio.gpio_function(pin) == gpio.IN
        assert gpio._pull[pin] == gpio.PUD_UP
        assert gpio._edges[pin] == gpio.BOTH
    # No bouncetime on the pulse input (the core filters) nor on power-fail (no delay).
    assert gpio._bounce[PINS["pulse_pin"]] is None
    assert gpio._bounce[PINS["power_fail_pin"]] is None
    assert gpio._bounce[PINS["button_pin"]] == 30
    assert gpio.getmode() == gpio.BCM
    b.close()
    assert gpio._direction == {}  # every pin released


def test_make_backend_imports_RPi_GPIO_from_the_path(gpio):
    from hw import make_backend
    from hw.pi import PiBackend

    b = make_backend("pi", {"hw": dict(PINS), "meter": {"constant": 1000}}, notifier=None)
    assert isinstance(b, PiBackend) and b.gpio is gpio
    b.close()


def test_a_coil_on_a_pin_pulled_up_at_power_on_is_refused(gpio, clock):
    with pytest.raises(ConfigError) as err:
        make(gpio, clock, relay_set_pin=4)
    assert err.value.key == "hw.relay_set_pin" and "pulled up at power-on" in str(err.value)
    assert gpio._direction == {}  # nothing claimed


def test_missing_and_shared_pins_are_named(gpio, clock):
    from hw.config import validate_hw
    from hw.pi import PiBackend

    with pytest.raises(ConfigError) as err:
        PiBackend(validate_hw({"relay_set_pin": 23, "relay_reset_pin": 24}), gpio=gpio)
    assert err.value.key == "hw.pulse_pin"
    with pytest.raises(ConfigError) as err:
        validate_hw(dict(PINS, led_pin=23))
    assert err.value.key == "hw" and "used twice" in str(err.value)
    with pytest.raises(ConfigError) as err:
        make(gpio, clock, tamper_pin=1)
    assert err.value.key == "hw.tamper_pin"


def test_a_gpio_error_during_setup_releases_the_pins(gpio, clock, monkeypatch):
    real = gpio.add_event_detect

    def failing(channel, *a, **k):
        if channel == PINS["tamper_pin"]:
            raise RuntimeError("Failed to add edge detection")
        return real(channel, *a, **k)

    monkeypatch.setattr(gpio, "add_event_detect", failing)
    with pytest.raises(RuntimeError, match="Failed to add edge detection"):
        make(gpio, clock)
    assert gpio._direction == {}


# ------------------------------------------------------------ inputs


def test_pulse_edges_are_timestamped_and_active_low(gpio, clock):
    b = make(gpio, clock)
    pin = PINS["pulse_pin"]
    times = []
    for _ in range(3):
        clock.sleep(100)
        gpio._drive(pin, 0)  # opto pulls low: pulse starts
        times.append(clock.now())
        clock.sleep(40)
        gpio._drive(pin, 1)
        times.append(clock.now())
    events = b.poll()
    assert [(e.level, e.mono) for e in events] == list(zip([1, 0] * 3, times))
    assert all(isinstance(e, Edge) for e in events)


def test_pulse_polarity_follows_config(gpio, clock):
    b = make(gpio, clock, pulse_active_low=False, pulse_pull="down")
    gpio._drive(PINS["pulse_pin"], 1)
    assert [e.level for e in b.poll()] == [1]


def test_a_full_queue_drops_edges_and_says_so(gpio, clock):
    logs = []
    b = make(gpio, clock, logs=logs, queue_len=16)
    for i in range(40):
        gpio._drive(PINS["pulse_pin"], i % 2)
    assert len(b.poll()) == 16
    assert b.status()["dropped"] == 24
    assert any("24 events dropped" in m for m in logs)
    assert b.poll() == []  # reported once


def test_edges_from_the_callback_thread_all_arrive_in_order(gpio, clock):
    b = make(gpio, clock, queue_len=4096)
    gpio._threaded = True
    pin = PINS["pulse_pin"]
    got = []
    for i in range(3000):
        gpio._drive(pin, i % 2)
        if i % 97 == 0:
            got.extend(b.poll())
    gpio._flush()
    got.extend(b.poll())
    assert b.status()["dropped"] == 0
    # The callback reads the pin when it runs, like RPi.GPIO: a level may be
    # read twice (ghost edge) but every edge is there, in order.
    assert len(got) == 3000
    assert [e.mono for e in got] == sorted(e.mono for e in got)


def test_button_must_be_held(gpio, clock):
    b = make(gpio, clock)
    pin = PINS["button_pin"]
    gpio._drive(pin, 0)
    clock.sleep(1000)
    gpio._drive(pin, 1)  # let go after 1 s: not a press
    seen = []
    for _ in range(50):
        seen += b.poll()
        clock.sleep(100)
    assert not [e for e in seen if isinstance(e, Button)]
    gpio._drive(pin, 0)
    t0 = clock.now()
    for _ in range(50):
        seen += b.poll()
        clock.sleep(100)
    presses = [e for e in seen if isinstance(e, Button)]
    assert len(presses) == 1  # held 5 s: one press, not one per poll
    assert 3000 <= presses[0].mono - t0 <= 3000 + 30 + 100


def test_feedback_contact_is_debounced(gpio, clock):
    b = make(gpio, clock)
    assert list(map(repr, b.start())) == [repr(RelayFeedback(False, clock.now())), repr(Tamper(True, b.wall(), clock.now()))]
    pin = PINS["feedback_pin"]
    events = []
    for level in (0, 1, 0, 1, 0):  # contact bounce, 2 ms apart
        gpio._drive(pin, level)
        clock.sleep(2)
        events += b.poll()
    for _ in range(5):
        clock.sleep(10)
        events += b.poll()
    assert [type(e) for e in events] == [RelayFeedback]
    assert events[0].closed is True


def test_power_fail_is_reported_at_once_and_once(gpio, clock):
    b = make(gpio, clock)
    pin = PINS["power_fail_pin"]
    gpio._drive(pin, 0)
    t = clock.now()
    events = b.poll()
    assert list(map(repr, events)) == [repr(PowerFail(b.wall(), t))]
    for _ in range(10):
        clock.sleep(10)
        assert b.poll() == []
    gpio._drive(pin, 1)
    for _ in range(5):
        clock.sleep(20)
        b.poll()
    gpio._drive(pin, 0)
    assert [type(e) for e in b.poll()] == [PowerFail]


def test_cover_switch(gpio, clock):
    b = make(gpio, clock)
    pin = PINS["tamper_pin"]
    gpio._drive(pin, 0)  # cover on: switch closed to ground
    clock.sleep(50)
    assert [(type(e), e.opened) for e in b.poll()] == [(Tamper, False)]
    gpio._drive(pin, 1)
    clock.sleep(50)
    assert [(type(e), e.opened) for e in b.poll()] == [(Tamper, True)]


# ------------------------------------------------------------ relay coils


def test_a_coil_pulse_has_the_asked_width(gpio, clock):
    b = make(gpio, clock)
    t0 = clock.now()
    del gpio._writes[:]
    assert b.execute(PulseCoil("set", 60)) is True
    pulses = check_coil_log(gpio._writes, 200, t0, 60, 60)
    assert [(e - s, ch) for s, e, ch in pulses] == [(60, SET)]
    assert pulses[0][0] == t0 + 200  # waited the gap after start-up
    assert b.status()["coil_pulses"] == [["set", t0 + 200, t0 + 260]]


def test_back_to_back_pulses_are_spaced_and_never_overlap(gpio, clock):
    b = make(gpio, clock, coil_gap_ms=300)
    t0 = clock.now()
    b.coils.request("set", 80)
    b.coils.request("reset", 50)
    b.coils.request("set", 40)
    b.run_coils()
    pulses = check_coil_log(gpio._writes, 300, t0, 40, 80)
    assert [(ch, e - s) for s, e, ch in pulses] == [(SET, 80), (RESET, 50), (SET, 40)]


def test_bad_pulse_requests_are_refused_and_drive_nothing(gpio, clock):
    logs = []
    b = make(gpio, clock, logs=logs)
    del gpio._writes[:]
    for action in (PulseCoil("set", 5), PulseCoil("set", 900), PulseCoil("both", 60), PulseCoil("set", 60.0)):
        assert b.execute(action) is True
    assert [w for w in gpio._writes if w[2]] == []
    assert b.status()["coil_refused"] == 4
    assert any("hw.coil_min_ms" in m for m in logs)


def test_active_low_driver_boards(gpio, clock):
    b = make(gpio, clock, coil_active_low=True, relay_set_pin=7, relay_reset_pin=8)
    assert gpio._level(7) == 1 and gpio._level(8) == 1  # off = high
    del gpio._writes[:]
    b.execute(PulseCoil("reset", 50))
    assert [lv for _t, ch, lv in gpio._writes if ch == 8] == [0, 1]  # on = low, then off
    assert all(lv == 1 for _t, ch, lv in gpio._writes if ch == 7)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=60))
def test_coil_width_and_gap_hold_however_late_each_pin_write_lands(lags):
    """A thread or task pre-empted between reading the clock and writing a pin
    (the loaded-CI case) must only lengthen pulses and gaps, never shorten them."""
    from hw.base import CoilDriver

    t = [0]
    log = []
    lag = iter(lags * 10)

    def write(coil, on):
        t[0] += next(lag, 0)  # pre-empted before the write lands
        log.append((t[0], SET if coil == "set" else RESET, int(on)))

    driver = CoilDriver(write, 20, 250, 40, lambda: t[0])
    t0 = max(w[0] for w in log)  # both coils written off at start-up
    for coil, width in (("set", 30), ("reset", 20), ("set", 25)):
        driver.request(coil, width)
    while True:
        delay = driver.service()
        if delay is None:
            break
        t[0] += delay
    pulses = check_coil_log(log, 40, t0, 20, 250)
    assert [e - s >= w for (s, e, _c), w in zip(pulses, (30, 20, 25))] == [True] * 3


actions = st.lists(
    st.tuples(
        st.sampled_from(["set", "reset", "set", "reset", "bogus"]),
        st.integers(min_value=0, max_value=400),
        st.integers(min_value=0, max_value=700),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(actions)
def test_property_coils_never_overlap_and_respect_width_and_gap(ops):
    import importlib

    sys.path.insert(0, FAKES)
    try:
        fake = importlib.import_module("RPi.GPIO")
    finally:
        sys.path.remove(FAKES)
    fake._reset()
    clock = VClock()
    try:
        b = make(fake, clock, coil_gap_ms=150, coil_min_ms=20, coil_max_ms=250)
        t0 = clock.now()
        for coil, width, pause in ops:
            b.execute(PulseCoil(coil, width), wait=False)
            # Service when asked to (as run_coils and the asyncio loop do),
            # but stop at the next request, which may come mid-pulse.
            end = clock.now() + pause
            while clock.now() < end:
                delay = b.coils.service()
                clock.sleep(min(delay or pause, end - clock.now()))
        b.run_coils()
        pulses = check_coil_log(fake._writes, 150, t0, 20, 250)
        accepted = [(c, w) for c, w, _p in ops if c in ("set", "reset") and 20 <= w <= 250]
        refused = len(ops) - len(accepted)
        assert b.status()["coil_refused"] >= refused
        assert len(pulses) <= len(accepted)
    finally:
        fake._reset()
        sys.modules.pop("RPi.GPIO", None)
        sys.modules.pop("RPi", None)


# ------------------------------------------------------------ alarm outputs


def test_alarm_led_and_beeping_buzzer(gpio, clock):
    b = make(gpio, clock, buzzer_on_ms=200, buzzer_period_ms=1000)
    led, buzzer = PINS["led_pin"], PINS["buzzer_pin"]
    b.execute(Alarm(1, True))
    assert gpio._level(led) == 1
    del gpio._writes[:]
    b.execute(Alarm(2, True))
    t0 = clock.now()
    for _ in range(300):  # 3 s in 10 ms polls
        clock.sleep(10)
        b.poll()
    beeps = coil_periods(gpio._writes + [(clock.now(), buzzer, 0)], buzzer)
    assert [s - t0 for s, _e in beeps] == [0, 1000, 2000, 3000][: len(beeps)]
    assert len(beeps) >= 3 and all(e - s == 200 for s, e in beeps[:3])
    b.execute(Alarm(2, False))
    assert gpio._level(buzzer) == 0
    assert b.execute(Alarm(1, False)) and gpio._level(led) == 0


# ------------------------------------------------------------ clocks, watchdog


def test_set_wall_offsets_the_system_clock(gpio, clock):
    b = make(gpio, clock)
    before = b.wall()
    b.set_wall(before + 3600)
    assert b.wall() == before + 3600


def test_systemd_notifications(tmp_path):
    from hw.pi import SystemdNotifier

    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1)
    now = [0]
    n = SystemdNotifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"}, clock_ms=lambda: now[0])
    assert n.interval_ms == 5000
    n.watchdog()
    n.watchdog()  # too soon: not sent
    now[0] = 5000
    n.watchdog()
    n.stopping()
    got = [sock.recv(100) for _ in range(4)]
    assert got == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
    n.close()
    sock.close()
    quiet = SystemdNotifier(environ={})
    assert quiet.send("READY=1") is False


# ------------------------------------------------------------ with the real core


def test_the_core_meters_pulses_and_drives_the_relay_through_the_pins(gpio, clock):
    from agent.events import Boot, Tick
    from agent.meter import Meter, load_config
    from hw.base import feed, pump

    cfg = load_config({"meter": {"constant": 1000}, "relay": {"feedback": True}})
    meter = Meter(cfg)
    b = make(gpio, clock)
    other = []
    del gpio._writes[:]
    feed(b, meter.handle(Boot(b.wall(), b.mono())), other.append)
    for event in b.start():
        feed(b, meter.handle(event), other.append)
    # Boot re-drives the relay to the policy's position: one coil pulse.
    pulses = coil_periods(gpio._writes, SET) + coil_periods(gpio._writes, RESET)
    assert len(pulses) == 1
    assert [a.kind for a in other][:1] == ["persist"]  # persisted before the pulse ran
    pin = PINS["pulse_pin"]
    for _ in range(250):  # 0.25 kWh at 1000 imp/kWh
        gpio._drive(pin, 0)
        clock.sleep(40)
        gpio._drive(pin, 1)
        clock.sleep(60)
        pump(b, meter.handle, other.append)
    feed(b, meter.handle(Tick(b.wall(), b.mono())), other.append)
    assert meter.energy_wh == 250


# ---------------------------------------------------------------- RS-485 direction (hw.rs485_de_pin)

EXAMPLE_CONFIG = os.path.join(os.path.dirname(FAKES), "..", "hw", "systemd", "config.example.toml")


class SpyPort:
    """A real pyserial port that notes, in the shared trace, each write, flush and read."""

    def __init__(self, port, trace, seq):
        self._port = port
        self._trace = trace
        self._seq = seq

    def write(self, data):
        self._trace.append((self._seq(), "write", bytes(data)))
        return self._port.write(data)

    def flush(self):
        self._port.flush()
        self._trace.append((self._seq(), "flushed", None))  # tcdrain returned: the frame is out

    def read(self, size=1):
        data = self._port.read(size)
        if data:
            self._trace.append((self._seq(), "read", data))
        return data

    def __getattr__(self, name):
        return getattr(self._port, name)


def test_rs485_de_is_high_exactly_while_the_agent_sends_a_dlt645_reply(gpio, tmp_path, monkeypatch):
    """The shipped Pi config's DE pin, driven by the real agent around each reply on a real pty."""
    import itertools
    import tomllib

    import serial

    from agent import settings
    from dlt645_wires import PtyPair
    from hw.serial_link import SerialMaster
    from pmeter.agent_cli import AgentRuntime

    with open(EXAMPLE_CONFIG, "rb") as f:
        raw = tomllib.load(f)
    de = raw["hw"]["rs485_de_pin"]
    # The example names a keys file beside it; a config passed as a dict carries its keys.
    del raw["agent"]["keys"]
    raw["tokens"] = {"key": "00" * 32}
    pair = PtyPair()
    raw["dlt645"] = {"device": pair.a, "parity": "N"}  # even parity fails on Linux ptys
    counter = itertools.count()
    seq = counter.__next__
    gpio._clock = seq  # one sequence orders the pin writes and the port operations
    trace = []
    real_for_url = serial.serial_for_url

    def for_url(url, *args, **kwargs):
        port = real_for_url(url, *args, **kwargs)
        return SpyPort(port, trace, seq) if url == pair.a else port

    monkeypatch.setattr(serial, "serial_for_url", for_url)
    rt = AgentRuntime(settings.load(raw), "pi", str(tmp_path), backend_options={"gpio": gpio})
    try:
        rt.boot()
        assert rt.slave.opened.wait(5)
        with SerialMaster(pair.b, parity="N", timeout=2) as m:
            address = m.read_address()
            assert address == raw["meter"]["id"]
            for _ in range(3):
                assert m.read_energy_wh(address) == 0
    finally:
        rt.shutdown()
        pair.close()
    de_writes = [(t, "de", level) for t, ch, level in gpio._writes if ch == de]
    assert de_writes[0][2] == 0  # set up as an output that starts low: listening
    merged = [kind if kind != "de" else ("de_high" if x else "de_low") for _t, kind, x in sorted(de_writes[1:] + trace)]
    # Requests are read while the transceiver listens; each reply is written and
    # drained with DE high, and DE drops as soon as the frame is out.
    replies = merged.count("write")
    assert replies == 4, merged
    sends = [m for m in merged if m != "read"]
    assert sends == ["de_high", "write", "flushed", "de_low"] * replies, merged
    level = 0
    for step in merged:
        level = {"de_high": 1, "de_low": 0}.get(step, level)
        if step == "read":
            assert level == 0, merged


def test_rs485_de_pin_is_validated_with_the_other_pins(gpio, clock):
    with pytest.raises(ConfigError) as e:
        hw_cfg(rs485_de_pin=PINS["led_pin"])
    assert "pin %d is used twice (by led_pin and rs485_de_pin)" % PINS["led_pin"] in str(e.value)
    with pytest.raises(ConfigError) as e:
        make(gpio, clock, rs485_de_pin=1)
    assert "hw.rs485_de_pin" in str(e.value)
    gpio._reset()
    b = make(gpio, clock, rs485_de_pin=18)
    b.rs485_transmit(True)
    assert gpio.input(18) == 1
    b.rs485_transmit(False)
    assert gpio.input(18) == 0
    b.close()
