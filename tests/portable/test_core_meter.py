"""The whole meter core through its one entry point (both runtimes)."""

from agent import results
from agent.events import Boot, Button, Command, Pulses, PowerFail, PulseCoil, SetClock, Tick, TopUp, Persist, Ack, Alarm, Publish
from agent.meter import Meter, load_config

T0 = 1767196800  # 2026-01-01 00:00 in China (UTC+8), a Thursday
C = 1000  # imp/kWh: 1 pulse = 1 Wh


def _meter(**sections):
    raw = {"meter": {"constant": C}, "account": {"opening_balance": 100000, "trip_delay_s": 0, "alarm1": 50000, "alarm2": 20000}, "tariff": {"price": 10000}}
    for k in sections:
        raw.setdefault(k, {}).update(sections[k])
    m = Meter(load_config(raw))
    m.handle(Boot(T0, 0))
    return m


class Clock:
    """Steps wall and mono together, like a shell would."""

    def __init__(self, m, t=0):
        self.m = m
        self.t = t

    def at(self, seconds):
        self.t = seconds
        return T0 + seconds, seconds * 1000

    def pulses(self, seconds, n):
        w, mo = self.at(seconds)
        return self.m.handle(Pulses(n, w, mo))

    def tick(self, seconds):
        w, mo = self.at(seconds)
        return self.m.handle(Tick(w, mo))

    def cmd(self, seconds, name, args=None, ref="c"):
        w, mo = self.at(seconds)
        return self.m.handle(Command(name, args or {}, ref, w, mo))

    def topup(self, seconds, amount, ref="t"):
        w, mo = self.at(seconds)
        return self.m.handle(TopUp(amount, ref, w, mo))


def _kinds(actions):
    return [a.record.kind for a in actions if isinstance(a, Publish)]


def _coils(actions):
    return [a.coil for a in actions if isinstance(a, PulseCoil)]


def _ack(actions):
    acks = [a for a in actions if isinstance(a, Ack)]
    assert len(acks) == 1
    return acks[0].code


def test_credit_runs_out_the_supply_is_cut_and_a_topup_restores_it():
    m = _meter()
    c = Clock(m)
    c.tick(1)
    acts = c.pulses(3600, 5000)  # 5 kWh at 1 CNY = 50000: alarm 1
    assert m.balance == 50000 and m.alarm_level == 1
    assert Alarm(1, True) in acts
    acts = c.pulses(7200, 5001)
    assert m.balance == -10 and m.relay_state == "tripped_arrears"
    assert isinstance(acts[0], Persist) and acts[0].urgent
    assert _coils(acts) == ["reset"] and "trip" in _kinds(acts)
    c.tick(7201)
    acts = c.topup(8000, 200000)
    assert _ack(acts) == results.ACCEPTED
    assert isinstance(acts[0], Persist)
    assert acts.index(acts[0]) < [i for i, a in enumerate(acts) if isinstance(a, PulseCoil)][0]
    assert _coils(acts) == ["set"] and m.relay_state == "connected"
    assert m.balance == 199990 and m.alarm_level == 0


def test_trip_waits_for_the_trip_delay():
    m = _meter(account={"trip_delay_s": 1800})
    c = Clock(m)
    c.pulses(60, 10001)
    assert m.relay_state == "connected"
    deadline = m.next_deadline()
    assert deadline == T0 + 60 + 1800
    c.tick(60 + 1799)
    assert m.relay_state == "connected"
    c.tick(60 + 1800)
    assert m.relay_state == "tripped_arrears"


def test_postpaid_never_cuts_for_credit():
    m = _meter(account={"mode": "postpaid"})
    c = Clock(m)
    c.pulses(3600, 50000)
    c.tick(7200)
    assert m.balance < 0 and m.relay_state == "connected" and m.alarm_level == 0


def test_guarantee_power_blocks_trips_and_arrears_trip_follows_when_cleared():
    m = _meter()
    c = Clock(m)
    assert _ack(c.cmd(10, "guarantee_on")) == results.ACCEPTED
    c.pulses(3600, 20000)
    assert m.relay_state == "guarantee"
    assert _ack(c.cmd(3700, "trip")) == results.REFUSED
    assert m.relay_state == "guarantee"
    c.cmd(3800, "guarantee_off")
    c.tick(3801)
    assert m.relay_state == "tripped_arrears"


def test_friendly_night_blocks_the_cut_until_morning():
    m = _meter(account={"friendly": {"night_start": "18:00", "night_end": "08:00"}})
    c = Clock(m)
    c.pulses(20 * 3600, 10001)  # 20:00 local, credit gone
    assert m.relay_state == "connected"
    assert m.next_deadline() <= T0 + 32 * 3600
    c.tick(31 * 3600)  # 07:00 next day
    assert m.relay_state == "connected"
    c.tick(32 * 3600)  # 08:00
    assert m.relay_state == "tripped_arrears"
    c.topup(33 * 3600, 100000)  # the credit used overnight is recovered first
    assert m.balance == 100000 - 10001 * 10 + 100000 and m.relay_state == "connected"


def test_weekend_and_holiday_are_friendly():
    m = _meter(account={"friendly": {"weekends": True, "holidays": ["2026-01-01"]}})
    c = Clock(m)
    c.pulses(3600, 10001)  # Thursday Jan 1: holiday
    assert m.relay_state == "connected"
    c.tick(24 * 3600 + 60)  # Friday
    assert m.relay_state == "tripped_arrears"


def test_hoarding_limit_refuses_a_topup_and_changes_nothing():
    m = _meter(account={"hoarding": 150000})
    c = Clock(m)
    before = m.snapshot()
    acts = c.topup(10, 60000)
    assert _ack(acts) == results.OVER_HOARDING_LIMIT
    assert not any(isinstance(a, Persist) for a in acts)
    assert m.balance == 100000
    assert m.snapshot()[5] == before[5]  # the account is untouched


def test_close_allowed_needs_the_button():
    m = _meter(relay={"reconnect": "button"})
    c = Clock(m)
    c.pulses(60, 10001)
    assert m.relay_state == "tripped_arrears"
    c.tick(70)
    acts = c.topup(100, 100000)
    assert m.relay_state == "close_allowed" and _coils(acts) == []
    w, mo = c.at(110)
    acts = m.handle(Button(w, mo))
    assert m.relay_state == "connected" and _coils(acts) == ["set"]


def test_forced_reconnection_is_bounded_in_time():
    m = _meter()
    c = Clock(m)
    c.pulses(60, 10001)
    c.tick(70)
    assert _ack(c.cmd(100, "close_direct")) == results.REFUSED
    assert _ack(c.cmd(110, "force_on", {"seconds": 3600})) == results.ACCEPTED
    assert m.relay_state == "forced" and m.relay_closed
    assert m.next_deadline() <= T0 + 3710
    c.tick(3710)
    c.tick(3711)
    assert m.relay_state == "tripped_arrears"


def test_trip_then_close_after_the_timer():
    m = _meter()
    c = Clock(m)
    assert _ack(c.cmd(10, "trip_then_close", {"minutes": 5})) == results.ACCEPTED
    assert m.relay_state == "tripped_command"
    c.tick(309)
    assert m.relay_state == "tripped_command"
    c.tick(310)
    assert m.relay_state == "connected"


def test_bad_commands_change_nothing():
    m = _meter()
    c = Clock(m)
    snap = m.snapshot()
    assert _ack(c.cmd(10, "set_limits", {"alarm1": 1, "alarm2": 5})) == results.BAD_ARGUMENT
    assert _ack(c.cmd(11, "set_mode", {"mode": "free"})) == results.BAD_ARGUMENT
    assert _ack(c.cmd(12, "explode")) == results.UNKNOWN_COMMAND
    assert _ack(c.cmd(13, "set_tariff", {"tariff": {"price": -5}})) == results.BAD_ARGUMENT
    assert _ack(c.topup(14, -5)) == results.BAD_ARGUMENT
    assert m.snapshot()[5] == snap[5] and m.relay_state == "connected"


def test_passive_tariff_takes_over_at_its_time():
    m = _meter()
    c = Clock(m)
    assert _ack(c.cmd(10, "set_tariff", {"tariff": {"price": 20000}, "activate_at": T0 + 3600})) == results.ACCEPTED
    c.pulses(3599, 1000)
    assert m.account.charged == 10000
    assert m.next_deadline() <= T0 + 3600
    c.pulses(3700, 1000)
    assert m.account.charged == 30000


def test_clock_jumps_never_double_charge_or_refreeze():
    m = _meter()
    c = Clock(m)
    c.pulses(23 * 3600, 100)
    c.pulses(25 * 3600, 100)  # past midnight: one daily freeze
    assert len(m.daily_freezes) == 1
    w, mo = c.at(25 * 3600 + 10)
    m.handle(SetClock(T0 + 20 * 3600, mo))  # clock set back before midnight
    m.handle(Pulses(100, T0 + 20 * 3600 + 5, mo + 5000))
    m.handle(Tick(T0 + 24 * 3600 + 5, mo + 20000))
    assert len(m.daily_freezes) == 1
    assert m.account.charged == 300 * 10
    # the set and the jump back forward are both on record
    assert [r.data["new"] for r in m.records("clock_set")] == [T0 + 24 * 3600 + 5, T0 + 20 * 3600]


def test_snapshot_round_trip_keeps_state_and_boot_redrives_the_relay():
    m = _meter()
    c = Clock(m)
    c.pulses(600, 10001)
    c.tick(601)
    snap = m.snapshot()
    m2 = Meter.restore(m.cfg, snap)
    assert m2.snapshot() == snap
    acts = m2.handle(Boot(T0 + 700, 0))
    assert _coils(acts) == ["reset"]  # position unknown after boot: drive it open
    assert m2.records("power_up")[0].data["boots"] == 2


def test_restore_refuses_a_snapshot_of_another_meter_or_a_damaged_one():
    m = _meter()
    snap = m.snapshot()
    other = load_config({"meter": {"id": "000000000002"}})
    for bad_cfg, bad_snap in ((other, snap), (m.cfg, snap[:5]), (m.cfg, [99] + snap[1:]), (m.cfg, "garbage")):
        try:
            Meter.restore(bad_cfg, bad_snap)
            raise AssertionError("restored a bad snapshot")
        except ValueError:
            pass


def test_power_fail_persists_at_once():
    m = _meter()
    w, mo = Clock(m).at(50)
    acts = m.handle(PowerFail(w, mo))
    assert isinstance(acts[0], Persist) and acts[0].urgent
    assert "power_down" in _kinds(acts)


def test_event_log_keeps_the_last_ten_of_each_kind_with_rising_sequence():
    m = _meter()
    c = Clock(m)
    for i in range(15):
        c.cmd(10 + i, "freeze")
    recs = m.records("freeze")
    assert len(recs) == 10
    seqs = [r.seq for r in recs]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 10


def test_set_credit_restores_a_balance_and_keeps_the_ledger_exact():
    m = _meter()
    c = Clock(m)
    c.pulses(60, 1000)
    assert _ack(c.cmd(70, "set_credit", {"amount": 123456})) == results.ACCEPTED
    assert m.balance == 123456
    assert m.balance == 100000 + m.account.credited - m.account.charged
    assert _ack(c.cmd(71, "set_credit", {"amount": "lots"})) == results.BAD_ARGUMENT


def test_anomaly_from_outside_is_logged_and_purchases_are_counted():
    from agent.events import Anomaly

    m = _meter()
    c = Clock(m)
    w, mo = c.at(10)
    acts = m.handle(Anomaly("register_drift", {"drift_wh": 500}, w, mo))
    assert m.records("plausibility")[0].reason == "register_drift"
    assert isinstance(acts[0], Persist)
    c.topup(20, 1000)
    c.topup(30, 1000)
    assert m.purchase_count == 2
    c.pulses(40, 10)
    assert m.records("trip") == [] or "energy_wh" in m.records("trip")[0].data


def test_cut_waits_while_the_load_is_high_but_not_past_the_hold():
    m = _meter(relay={"high_load_w": 3000, "high_load_hold_s": 600})
    c = Clock(m)
    c.pulses(60, 100)
    # 5 kW for a minute at a time (83 pulses of 1 Wh a minute): credit runs out
    t = 60
    while m.balance > -100:
        t += 60
        c.pulses(t, 84 if m.balance > 1000 else 83)
    assert m.relay_state == "connected"
    assert m.records("trip_postponed")[0].data["limit_w"] == 3000
    while t < 60 + 60 * 200 and m.relay_state == "connected":
        t += 60
        c.pulses(t, 83)
    # cut at the end of the hold (600 s after the credit ran out), not before
    held = m.records("trip")[0].wall - m.records("trip_postponed")[0].wall
    assert m.relay_state == "tripped_arrears"
    assert 600 <= held <= 660, held


def test_cut_follows_once_the_load_drops():
    m = _meter(relay={"high_load_w": 3000, "high_load_hold_s": 3600})
    c = Clock(m)
    c.pulses(60, 100)
    c.pulses(120, 9902)  # far above 3 kW over that minute: credit gone (-30)
    assert m.relay_state == "connected" and m.balance < 0
    c.pulses(180, 10)  # 600 W: the load dropped
    assert m.relay_state == "tripped_arrears"
