"""Fleet simulator: the demo, the JSON contract, scenarios, faults and reports."""

import json
import os

import pytest

from pmeter.cli import main
from sim import scenario as scenario_mod
from sim.cores import LocalCore, micropython_binary
from sim.faults import MeterPlan
from sim.runner import DAILY_FIELDS, DEFAULT_CONFIG, DEFAULT_START, TZ_S, VirtualMeter, meter_config, run
from agent.calendar import parse_datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_FIELDS = ("id", "energy_wh", "charged", "credited", "balance_start", "balance_end", "cuts", "reconnects", "alarms", "relay")


def run_cli(capsys, *argv):
    code = main(["sim", "run"] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fleet_default_demo_shows_a_cut_and_a_reconnection(capsys):
    code, out, err = run_cli(capsys)
    assert code == 0
    assert "Simulated 1 meter for 30 days" in out
    assert " cut " in out and " reconnected " in out
    assert "exact for every meter" in out
    # No progress bar when stderr is not a terminal.
    assert err == ""


def test_fleet_json_keeps_its_fields_and_same_seed_same_output(capsys):
    code, out, _ = run_cli(capsys, "--json", "--meters", "3", "--days", "20", "--seed", "5")
    assert code == 0
    rep = json.loads(out)
    assert rep["money_scale"] == 10000
    assert "daily" not in rep
    for row in rep["meters"]:
        for key in JSON_FIELDS:
            assert key in row
        assert row["relay"] in ("closed", "open")
        assert row["balance_end"] == row["balance_start"] + row["credited"] - row["charged"]
    code, again, _ = run_cli(capsys, "--json", "--meters", "3", "--days", "20", "--seed", "5")
    assert again == out
    code, other, _ = run_cli(capsys, "--json", "--meters", "3", "--days", "20", "--seed", "6")
    assert other != out


@pytest.mark.skipif(micropython_binary() is None, reason="MicroPython unix port not installed")
def test_fleet_scenario_on_micropython_matches_cpython(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SMALL + "\n[faults]\ntamper_per_mille = 500\nclock_drift_ppm = 100\nrelay_welded_per_mille = 200\npower_cuts_per_year = 60\n")
    outs = []
    for runtime in ("cpython", "micropython"):
        code, out, err = run_cli(capsys, "--scenario", str(path), "--meters", "2", "--days", "12", "--json", "--runtime", runtime)
        assert code == 0, err
        rep = json.loads(out)
        rep.pop("runtime")
        outs.append(rep)
    assert outs[0] == outs[1]


SMALL = """
name = "small"
[run]
meters = 4
days = 40
seed = 3
[[operator]]
at = "2026-01-10 09:00"
command = "set_mode"
args = { mode = "postpaid" }
meters = [1]
[[operator]]
at = "2026-01-20 09:00"
command = "guarantee_on"
"""


@pytest.mark.parametrize(
    "text, key",
    [
        ("[run]\nmeterz = 3\n", "run.meterz"),
        ("[run]\nmeters = 'three'\n", "run.meters"),
        ("[run]\nmeters = 0\n", "run.meters"),
        ("[faults]\nrelay_welded_per_mille = 2000\n", "faults.relay_welded_per_mille"),
        ("[faults]\nbroker_outages = [['2026-01-02 10:00', '2026-01-01 10:00']]\n", "faults.broker_outages"),
        ("[theft]\nkinds = { magic = 3 }\n", "theft.kinds"),
        ("[customers]\nlazy = 3\n", "customers"),
        ("[[operator]]\nat = '2026-01-01 00:00'\ncommand = 'explode'\n", "operator[0].command"),
        ("[[operator]]\ncommand = 'trip'\n", "operator[0].at"),
        ("[[operator]]\nat = '2026-01-01'\ncommand = 'trip'\n", "operator[0].at"),
        ("[[operator]]\nat = '2026-01-01 00:00'\ncommand = 'trip'\nmeters = [100]\n", "operator[0].meters"),
        ("[config.account]\nalarm1 = 'x'\n", "config.account.alarm1"),
        ("[run\n", "(file)"),
    ],
)
def test_fleet_bad_scenario_is_rejected_naming_the_key(tmp_path, capsys, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = run_cli(capsys, "--scenario", str(path))
    assert code == 2
    assert out == ""
    assert "'%s'" % key in err
    assert str(path) in err


def test_fleet_missing_scenario_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--scenario", str(tmp_path / "nope.toml"))
    assert code == 2 and "--scenario: cannot read" in err


def test_fleet_shipped_scenarios_are_valid():
    for name in ("village.toml", "theft.toml"):
        sc = scenario_mod.load(os.path.join(ROOT, "scenarios", name), DEFAULT_CONFIG, TZ_S)
        assert sc.data["run"]["meters"] >= 100


def small_scenario(extra=""):
    return scenario_mod.check(__import__("tomllib").loads(SMALL + extra), DEFAULT_CONFIG, TZ_S)


def test_fleet_operator_commands_reach_the_core():
    rep = run(4, 40, 3, scenario=small_scenario())
    ops = rep["operator_actions"]
    assert [(o["command"], o["sent"], o["accepted"]) for o in ops] == [("set_mode", 1, 1), ("guarantee_on", 4, 4)]
    # Guarantee power from 2026-01-20 holds to the end, whatever the balance.
    assert all(r["relay_state"] == "guarantee" for r in rep["meters"])
    assert rep["totals"]["cuts"] >= 1
    assert len(rep["daily"]) == 4 and all(len(v) == 40 for v in rep["daily"].values())


def plan(*events):
    p = MeterPlan()
    p.events = sorted(events)
    return p


def virtual(p, days=20, feedback=False, outages=()):
    cfg = meter_config(DEFAULT_CONFIG, 0)
    t0 = parse_datetime(DEFAULT_START, TZ_S)
    vm = VirtualMeter(0, 1, DEFAULT_CONFIG, LocalCore(cfg), t0, feedback, "waits_for_cut", p, outages)
    vm.run(t0 + days * 86400, 900)
    return vm, t0


def test_fleet_power_cut_boots_from_the_snapshot():
    t0 = parse_datetime(DEFAULT_START, TZ_S)
    down, back = t0 + 3 * 86400 + 5000, t0 + 4 * 86400 + 7000
    vm, _ = virtual(plan((down, "power_fail", back)))
    ref, _ = virtual(plan())
    m = vm.core.meter
    assert vm.power_cuts == 1 and m.boots == 2
    assert [r.reason for r in m.records("power_down")] == ["power_fail"]
    # Nothing is drawn or counted while the supply is down ...
    assert vm.daily[3][7] == 86400 - (down - t0 - 3 * 86400)
    assert vm.daily[4][7] == back - t0 - 4 * 86400
    assert vm.result()["energy_wh"] < ref.result()["energy_wh"]
    # ... and the money still adds up exactly across the restore.
    r = vm.result()
    assert r["balance_end"] == r["balance_start"] + r["credited"] - r["charged"]


def test_fleet_welded_relay_fails_the_cut_and_keeps_drawing():
    t0 = parse_datetime(DEFAULT_START, TZ_S)
    vm, _ = virtual(plan((t0 + 3600, "relay_fault", "welded")), days=30)
    r = vm.result()
    assert r["cuts"] >= 1
    assert r["remote_ops"][0] >= 1 and r["remote_ops"][1] == 0  # no cut succeeded
    assert sum(row[4] for row in vm.daily) > 100  # energy registered while "cut"


def test_fleet_relay_bypass_thief_draws_while_cut_and_is_found():
    t0 = parse_datetime(DEFAULT_START, TZ_S)
    p = plan((t0 + 86400, "theft", "relay_bypass"))
    p.theft = "relay_bypass"
    vm, _ = virtual(p, days=30)
    assert vm.stolen_mwh > 0
    assert vm.topups == 0  # a jumper instead of paying
    from headend.analytics import suspects

    found = suspects({vm.id: vm.daily})
    assert found and found[0]["suspect"] and "used while cut" in found[0]["reasons"][0]


def test_fleet_broker_outage_delays_top_ups():
    t0 = parse_datetime(DEFAULT_START, TZ_S)
    vm_ref, _ = virtual(plan(), days=30)
    cut_at = [w for w, what, _ in vm_ref.timeline if what == "cut"][0]
    outage = ((cut_at - 3600, cut_at + 2 * 86400),)
    vm, _ = virtual(plan(), days=30, outages=outage)
    assert vm.restore_delays and max(vm.restore_delays) > 3600


def test_fleet_clock_drift_is_corrected_by_syncs():
    t0 = parse_datetime(DEFAULT_START, TZ_S)
    p = plan(*[(t0 + k * 7 * 86400, "clock_sync", None) for k in (1, 2)])
    p.drift_ppm = 1000  # 86 s a day
    vm, _ = virtual(p, days=20)
    assert len(vm.core.meter.records("clock_set")) == 2
    r = vm.result()
    assert r["balance_end"] == r["balance_start"] + r["credited"] - r["charged"]


def test_fleet_scenario_run_is_deterministic_and_scores_thieves():
    extra = """
[faults]
power_cuts_per_year = 10
tamper_per_mille = 100
register_drift_ppm = 3000
[theft]
thieves_per_mille = 300
start_day_min = 15
kinds = { meter_bypass = 1, stopped = 1, pulse_tamper = 1 }
"""
    sc = small_scenario(extra)
    a = run(12, 50, 9, scenario=sc)
    b = run(12, 50, 9, scenario=sc)
    assert a == b
    th = a["theft"]
    assert th["planted"] >= 1
    assert th["recall_pm"] is not None and th["recall_pm"] >= 500
    assert a["totals"]["power_cuts"] >= 1
    for r in a["meters"]:
        assert r["balance_end"] == r["balance_start"] + r["credited"] - r["charged"]


def test_fleet_report_writes_csv_html_and_plots(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SMALL + "\n[theft]\nthieves_per_mille = 500\nstart_day_min = 10\n")
    out_dir = tmp_path / "rep"
    code, out, err = run_cli(capsys, "--scenario", str(path), "--report", str(out_dir))
    assert code == 0, err
    assert "report written to" in err
    lines = (out_dir / "daily.csv").read_text().splitlines()
    assert lines[0].split(",") == ["meter"] + list(DAILY_FIELDS)
    assert len(lines) == 1 + 4 * 40
    page = (out_dir / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    for png in ("consumption.png", "balances.png", "relay_timeline.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "suspects.csv").exists()


def test_fleet_report_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    code, out, err = run_cli(capsys, "--days", "5", "--report", str(tmp_path / "r"))
    assert code == 0
    assert "matplotlib is not installed" in err
    assert (tmp_path / "r" / "report.html").exists()
    assert not list((tmp_path / "r").glob("*.png"))


def test_fleet_progress_bar_on_request(capsys):
    code, out, err = run_cli(capsys, "--meters", "3", "--days", "3", "--progress")
    assert code == 0
    assert "3/3 meters" in err and "100 %" in err
