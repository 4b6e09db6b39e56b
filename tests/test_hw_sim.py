"""The simulated backend with the real core, on a virtual clock."""

import pytest

from agent.config import ConfigError
from agent.events import Boot, Button, Command, PowerFail, Pulses, RelayFeedback, Tamper, TopUp
from agent.meter import Meter, load_config
from hw import make_backend
from hw.base import Loop, feed, pump
from hw.config import validate_hw
from hw.sim import IdealRelay, SimBackend, VirtualClock


def agent(load_w=2000, feedback=True, relay=None, **core):
    raw = {"meter": {"constant": 1000}, "relay": {"feedback": feedback}, "account": {"mode": "postpaid"}}
    raw.update(core)
    cfg = load_config(raw)
    clock = VirtualClock()
    backend = make_backend("sim", {"hw": {}, "meter": {"constant": 1000}}, load_w=load_w, clock=clock, relay=relay or IdealRelay(), feedback=feedback)
    meter = Meter(cfg)
    out = []
    loop = Loop(backend, meter, out.append)
    loop.boot()
    return meter, backend, clock, out, loop


def run(loop, seconds, step_ms=1000):
    """Step the loop on the virtual clock; return the input events it saw."""
    events = []
    backend = loop.backend
    real_poll = backend.poll

    def poll():
        got = real_poll()
        events.extend(got)
        return got

    backend.poll = poll
    try:
        for _ in range(seconds * 1000 // step_ms):
            backend.clock.advance(step_ms)
            loop.step()
    finally:
        del backend.poll
    return events


def test_make_backend_rejects_unknown_names_and_bad_config():
    with pytest.raises(ValueError, match="unknown hardware backend 'gpio'"):
        make_backend("gpio", {})
    with pytest.raises(ConfigError) as err:
        make_backend("sim", {"hw": {"debounce_ms": -1}})
    assert err.value.key == "hw.debounce_ms"
    with pytest.raises(ConfigError) as err:
        make_backend("sim", {"hw": {"pulse_pinn": 4}})
    assert err.value.key == "hw.pulse_pinn"


def test_energy_flows_only_while_the_relay_is_closed():
    meter, backend, clock, out, loop = agent(load_w=3600)
    assert backend.relay.closed is True  # boot re-drove it to the policy's position
    run(loop, 3600)
    assert meter.energy_wh == 3600  # 3.6 kW for an hour, to the pulse
    feed(backend, meter.handle(Command("trip", {}, "r1", backend.wall(), backend.mono())), out.append)
    run(loop, 60)
    assert backend.relay.closed is False
    before = meter.energy_wh
    run(loop, 1800)
    assert meter.energy_wh == before  # open relay: no energy, no pulses


def test_pulses_are_counter_style_and_exact_over_odd_intervals():
    meter, backend, clock, out, loop = agent(load_w=1234)
    total = 0
    for step in (1, 7, 333, 1000, 59999, 3):
        for _ in range(50):
            clock.advance(step)
            total += sum(e.count for e in backend.poll() if isinstance(e, Pulses))
    elapsed = 50 * (1 + 7 + 333 + 1000 + 59999 + 3)
    assert total == 1234 * elapsed * 1000 // 3600000000


def test_feedback_follows_the_relay_model_and_coils_never_overlap():
    meter, backend, clock, out, loop = agent()
    events = run(loop, 2)
    for name in ("trip", "close_direct", "trip"):
        feed(backend, meter.handle(Command(name, {}, name, backend.wall(), backend.mono())), out.append)
        events += run(loop, 5, step_ms=10)
    fb = [e.closed for e in events if isinstance(e, RelayFeedback)]
    assert fb == [False, True, False]
    assert meter.relay_position is False
    log = sorted(backend.coil_log, key=lambda p: p[1])
    for a, b in zip(log, log[1:]):
        assert b[1] - a[2] >= backend.cfg["coil_gap_ms"]


def test_button_cover_and_power_fail_inputs():
    meter, backend, clock, out, loop = agent()
    backend.press_button()
    events = run(loop, 5, step_ms=50)
    assert [type(e) for e in events if isinstance(e, Button)] == [Button]
    backend.open_cover()
    backend.power_fail()
    events = run(loop, 1, step_ms=50)
    kinds = [type(e) for e in events]
    assert PowerFail in kinds and Tamper in kinds
    assert [r.kind for r in meter.records("cover_open")] == ["cover_open"]
    with pytest.raises(ValueError, match="unknown simulated input"):
        backend.set_input("door", 1)


def test_a_relay_that_does_not_latch_is_seen_through_feedback():
    class Stuck(IdealRelay):
        def apply(self, coil, width_ms, mono_ms):
            self.operations += 1  # coil open circuit: contacts never move

    meter, backend, clock, out, loop = agent(relay=Stuck(closed=False))
    run(loop, 120, step_ms=100)
    assert backend.relay.operations >= 2  # the core retried
    assert meter.records("relay_failed")
    assert meter.energy_wh == 0


def test_watchdog_and_clock():
    backend = SimBackend(validate_hw({}), clock=VirtualClock(wall=1000000))
    backend.feed_watchdog()
    assert backend.watchdog_feeds == 1
    backend.set_wall(2000000)
    assert backend.wall() == 2000000
    backend.sleep_ms(5000)
    assert backend.wall() == 2000005


def test_pump_feeds_topups_through_a_loop():
    meter, backend, clock, out, loop = agent(load_w=0)
    feed(backend, meter.handle(TopUp(10000, "t1", backend.wall(), backend.mono())), out.append)
    clock.advance(100)
    assert pump(backend, meter.handle, out.append) == 0
    assert [a.code for a in out if a.kind == "ack"] == ["accepted"]
