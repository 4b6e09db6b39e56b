"""Property tests of the core (hypothesis, CPython)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import Boot, Command, Pulses, PulseCoil, Tick, TopUp
from agent.meter import Meter, load_config
from agent.relay.driver import RelayDriver, SCHEMA as DRIVER_SCHEMA
from agent.config import validate

T0 = 1767196800  # 2026-01-01 00:00 +08:00

TOU_TIERED = {
    "kind": "tiered_tou",
    "tou_prices": [12345, 10001, 5883, 2999],
    "tou_slots": [["00:00", "valley"], ["08:00", "flat"], ["10:00", "peak"], ["19:00", "sharp"], ["21:00", "flat"]],
    "tier_kwh": [3, 7],
    "tier_prices": [0, 500, 3000],
}


def _meter(constant=3200, tariff=None, **account):
    acc = {"opening_balance": 50000, "trip_delay_s": 0}
    acc.update(account)
    m = Meter(load_config({"meter": {"constant": constant}, "account": acc, "tariff": tariff or TOU_TIERED}))
    m.handle(Boot(T0, 0))
    return m


steps = st.lists(
    st.tuples(
        st.integers(1, 4 * 3600),  # seconds to the next event
        st.sampled_from(["pulses", "pulses", "pulses", "topup", "tick", "guarantee_on", "guarantee_off", "trip", "close_direct", "force_on"]),
        st.integers(0, 20000),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([800, 1000, 1600, 3200, 10000]), steps)
def test_energy_never_decreases_and_the_ledger_balances(constant, plan):
    m = _meter(constant)
    t = 0
    last_energy = 0
    credited = 0
    for dt, what, n in plan:
        t += dt
        w, mo = T0 + t, t * 1000
        if what == "pulses":
            m.handle(Pulses(n, w, mo))
        elif what == "topup":
            m.handle(TopUp(n * 10 + 1, "r%d" % t, w, mo))
            credited += n * 10 + 1
        elif what == "tick":
            m.handle(Tick(w, mo))
        else:
            m.handle(Command(what, {}, "c", w, mo))
        assert m.energy_wh >= last_energy
        last_energy = m.energy_wh
        assert m.account.credited == credited
        assert m.balance == 50000 + m.account.credited - m.account.charged
        if m.relay_state == "guarantee":
            assert m.relay_closed


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([800, 1000, 1200, 3200, 10000]),
    st.lists(st.tuples(st.integers(0, 1439), st.integers(0, 30000)), min_size=1, max_size=12),
    st.data(),
)
def test_any_batching_of_the_same_pulses_gives_identical_registers_and_charges(constant, minutes, data):
    """Split each interval's pulses into random batches: nothing may differ."""
    minutes = sorted(set(m for m, _ in minutes))
    counts = data.draw(st.lists(st.integers(0, 30000), min_size=len(minutes), max_size=len(minutes)))
    whole = _meter(constant, opening_balance=10**9)
    split = _meter(constant, opening_balance=10**9)
    for minute, count in zip(minutes, counts):
        w = T0 + minute * 60
        whole.handle(Pulses(count, w, minute * 60000))
        cuts = sorted(data.draw(st.lists(st.integers(0, count), max_size=5)))
        last = 0
        for cut in cuts + [count]:
            split.handle(Pulses(cut - last, w, minute * 60000))
            last = cut
    assert split.regs.snapshot() == whole.regs.snapshot()
    assert split.account.charged == whole.account.charged
    assert split.account.carry == whole.account.carry
    assert split.balance == whole.balance


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 400))
def test_charge_equals_energy_times_price_to_the_unit(pulses_per_batch, batches):
    """Flat 0.5883 CNY/kWh at 3200 imp/kWh: charged == floor(energy x price)."""
    m = _meter(3200, {"price": 5883}, opening_balance=10**12)
    for i in range(batches):
        m.handle(Pulses(pulses_per_batch, T0 + 60 + i, 60000 + i * 1000))
    total = pulses_per_batch * batches
    # energy in kWh = total/3200, price 5883 minor/kWh
    assert m.account.charged == total * 5883 // 3200


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(["open", "close", "poll"])), max_size=80))
def test_driver_never_energises_both_coils(plan):
    """Whatever the request pattern, a pulse starts only after the last one ended plus the spacing."""
    d = RelayDriver(validate({"pulse_ms": 80, "min_interval_ms": 500}, DRIVER_SCHEMA))
    d.boot()
    t = 0
    busy_until = -1
    for dt, what in plan:
        t += dt
        timed = []  # (start ms, action)
        if what == "poll":
            while d.deadline() is not None and d.deadline() <= t:
                due = d.deadline()
                timed += [(due, a) for a in d.poll(due)[0]]
        else:
            timed = [(t, a) for a in d.request(what == "close", t)]
        for start, a in timed:
            assert isinstance(a, PulseCoil)
            assert a.width_ms == 80
            assert start >= busy_until, "pulse at %d overlaps one running until %d" % (start, busy_until)
            busy_until = start + 80 + 500


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(60, 6 * 3600), st.integers(0, 40000)), max_size=30))
def test_no_trip_in_friendly_time(plan):
    """Friendly all day but 23:59 and at weekends: every cut falls in that minute.

    (A meter cut at 23:59 stays cut into the next friendly day: friendly time
    forbids disconnection, it does not reconnect.)"""
    m = _meter(1000, {"price": 10000}, opening_balance=0, friendly={"night_start": "00:00", "night_end": "23:59", "weekends": True})
    t = 0
    for dt, n in plan:
        t += dt
        m.handle(Pulses(n, T0 + t, t * 1000))
        m.handle(Tick(T0 + t + 1, t * 1000 + 1000))
    for rec in m.records("trip"):
        local = rec.wall + 8 * 3600
        weekday = (local // 86400 + 3) % 7 + 1
        assert local % 86400 // 60 == 1439 and weekday < 6, rec
