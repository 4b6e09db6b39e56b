"""Live mode: virtual meters as real MQTT sessions, head-end workers on a shared subscription."""

import pytest

from mosquitto import TLSListener, make_pki
from pmeter.cli import main
from sim.live import LiveRun, parse_url
from sim.runner import DEFAULT_CONFIG


def test_fleet_live_url_is_checked(capsys):
    assert parse_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884, False)
    assert parse_url("mqtt://broker") == ("broker", 1883, False)
    assert parse_url("mqtts://broker") == ("broker", 8883, True)
    assert parse_url("mqtts://127.0.0.1:18883") == ("127.0.0.1", 18883, True)
    for bad in ("http://x:1", "mqtt://:1883", "mqtt://h:0", "mqtt://h:port", "mqtts://:8883", "mqttss://h:1"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert main(["sim", "run", "--live", "tcp://127.0.0.1:1"]) == 2
    assert "--live" in capsys.readouterr().err


def _sim(capsys, *argv):
    code = main(["sim", "run"] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


LIVE = ["--live", "mqtt://127.0.0.1:1"]  # never reached: every case is refused first


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--scenario", "scenarios/village.toml"], "--scenario"),
        (["--report", "REPORT"], "--report"),
        (["--runtime", "micropython"], "--runtime micropython"),
        (["--days", "3"], "--days"),
        (["--step", "60"], "--step"),
        (["--start", "2026-01-01 00:00"], "--start"),
        (["--customers", "prompt"], "--customers"),
        (["--feedback"], "--feedback"),
    ],
)
def test_fleet_live_refuses_what_it_cannot_honour(tmp_path, capsys, extra, option):
    extra = [str(tmp_path / "rep") if a == "REPORT" else a for a in extra]
    code, out, err = _sim(capsys, *(LIVE + extra))
    assert code == 2 and out == ""
    assert err.startswith("pmeter: %s cannot be used with --live" % option), err
    assert not (tmp_path / "rep").exists()  # refused before anything was made


@pytest.mark.parametrize("extra", [["--live-seconds", "5"], ["--headend-workers", "3"], ["--topup-rate", "2"], ["--ca", "ca.crt"], ["--cert", "c.crt"], ["--key", "c.key"]])
def test_fleet_live_options_are_refused_without_live(capsys, extra):
    code, out, err = _sim(capsys, "--days", "2", *extra)
    assert code == 2 and out == ""
    assert "%s is for live runs only" % extra[0] in err


def test_fleet_live_tls_files_are_checked_before_connecting(tmp_path, capsys):
    pki = make_pki(tmp_path / "pki", clients=["sim"])
    url = "mqtts://127.0.0.1:1"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ([url], "--ca: mqtts:// needs the CA certificate"),
        ([url, "--ca", str(tmp_path / "nope.crt")], "--ca: no such file"),
        ([url, "--ca", str(junk)], "--ca: %s is not a readable PEM CA certificate" % junk),
        ([url, "--ca", str(pki.ca_cert), "--cert", str(pki.client_cert("sim"))], "--cert and --key go together"),
        ([url, "--ca", str(pki.ca_cert), "--cert", str(pki.client_cert("sim")), "--key", str(pki.server_key)], "--cert/--key:"),
        (["mqtt://127.0.0.1:1", "--ca", str(pki.ca_cert)], "--ca/--cert/--key are for a TLS broker"),
    ]
    for argv, message in cases:
        code, out, err = _sim(capsys, "--live", *argv)
        assert code == 2 and out == "", (argv, err)
        assert err.startswith("pmeter: " + message), (argv, err)


def test_fleet_live_over_tls_with_client_certificates(tmp_path, capsys, mosquitto_factory):
    # A tester's broker as docs/fleet.md gives it: TLS, client certificates
    # from the CA required, no identity binding (every simulated client
    # presents the one simulator certificate).  No plain listener is used.
    pki = make_pki(tmp_path / "pki", clients=["sim"])
    broker = mosquitto_factory(tls=TLSListener(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True),
                               extra_lines=["set_tcp_nodelay true"])
    url = "mqtts://127.0.0.1:%d" % broker.tls_port
    tls = ["--ca", str(pki.ca_cert), "--cert", str(pki.client_cert("sim")), "--key", str(pki.client_key("sim"))]
    # Meters with no credit: cut at once, so top-ups must close relays over TLS.
    cfg = tmp_path / "meter.toml"
    cfg.write_text("[account]\nopening_balance = 0\ntrip_delay_s = 0\nalarm1 = 0\nalarm2 = 0\n")
    code, out, err = _sim(capsys, "--live", url, *tls, "--config", str(cfg), "--meters", "3", "--live-seconds", "3", "--topup-rate", "3", "--headend-workers", "2")
    assert code == 0, err + broker.log()
    # A readable summary, not a Python dict.
    assert "{" not in out and "}" not in out
    assert out.startswith("Live: 3 meters (3 connected at the end) on %s for 3 s, 2 head-end workers" % url), out
    sent = int(out.split("Top-ups: ")[1].split(" sent")[0])
    assert sent >= 5
    assert "Top-ups: %d sent, %d acked (accepted %d)." % (sent, sent, sent) in out, out
    restores = int(out.split("Publish -> relay close at a cut meter: ")[1].split("(")[1].split(" restore")[0])
    assert restores >= 1, out
    # Every client came in over TLS with a certificate: a client without one is refused.
    code, out, err = _sim(capsys, "--live", url, "--ca", str(pki.ca_cert), "--meters", "1", "--live-seconds", "1", "--headend-workers", "1")
    assert code == 1 and out == ""
    assert "live run failed: head-end worker 0 cannot subscribe" in err, err


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
