"""Live mode: virtual meters as real MQTT sessions, head-end workers on a shared subscription."""

import pytest

from pmeter.cli import main
from sim.live import LiveRun, parse_url
from sim.runner import DEFAULT_CONFIG


def test_fleet_live_url_is_checked(capsys):
    assert parse_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    assert parse_url("mqtt://broker") == ("broker", 1883)
    for bad in ("http://x:1", "mqtt://:1883", "mqtt://h:0", "mqtt://h:port"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert main(["sim", "run", "--live", "tcp://127.0.0.1:1"]) == 2
    assert "--live" in capsys.readouterr().err


def test_fleet_live_meters_and_two_headend_workers(mosquitto_factory):
    broker = mosquitto_factory(extra_lines=["set_tcp_nodelay true"])
    # Meters that start with no credit: they trip at once, and the vendor's
    # top-ups must close their relays through the broker.
    cfg = dict((k, dict(v)) for k, v in DEFAULT_CONFIG.items())
    cfg["account"].update(opening_balance=0, trip_delay_s=0, alarm1=0, alarm2=0)
    run = LiveRun(broker.host, broker.port, 6, 4, cfg, workers=2, telemetry_s=1, speed=60, topup_rate=6.0, tick_s=1)
    rep = run.run(4)
    assert rep["loop_error"] is None
    assert rep["connected"] == 6
    # The broker split the meters' messages between the two workers.
    assert len(rep["messages_per_worker"]) == 2 and min(rep["messages_per_worker"]) > 0
    assert rep["rejected"] == 0
    assert rep["topups_sent"] >= 10
    assert rep["topups_acked"] == rep["topups_sent"]
    assert rep["ack_codes"] == {"accepted": rep["topups_sent"]}
    assert rep["restore_us"]["n"] >= 1  # cut meters came back on after a top-up
    credited = [m for m in run.meters if m.linked.meter.account.credited > 0]
    assert credited and all(m.linked.meter.balance > 0 for m in credited)


def test_fleet_live_telemetry_is_spread_over_the_minute():
    # No broker needed: the meters are built and ticked, never connected.
    run = LiveRun("127.0.0.1", 1, 40, 7, DEFAULT_CONFIG, telemetry_s=60)
    offsets = [m.tele_offset for m in run.meters]
    assert all(0 <= o < 60 for o in offsets) and len(set(offsets)) >= 20
    assert offsets == [m.tele_offset for m in LiveRun("127.0.0.1", 1, 40, 7, DEFAULT_CONFIG, telemetry_s=60).meters]
    for m in run.meters[:10]:
        m.boot()
        w0 = m.last_wall + 1
        m.tick(w0)
        due = m.linked.next_tele
        assert due % 60 == m.tele_offset and w0 < due <= w0 + 120
        m.tick(due - 1)
        assert m.linked.next_tele == due  # not yet: no telemetry before the meter's offset
        m.tick(due)
        assert m.linked.next_tele == due + 60  # reported, and keeps its offset
    for m in run.meters:
        m.transport.close()
