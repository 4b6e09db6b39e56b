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


# A scenario whose plots have something to show: operator actions, a broker
# outage, every relay's closing coil breaking at some point (no repair, no
# feedback contact), so some meters end in the dark with credit.
FAULTY = SMALL.replace('name = "small"', 'name = "reports"').replace("meters = 4\n", "meters = 6\n").replace(
    '[[operator]]\nat = "2026-01-10 09:00"', '[[operator]]\nlabel = "one to postpaid"\nat = "2026-01-10 09:00"') + """
[[operator]]
at = "2026-01-24 09:00"
command = "guarantee_off"
[customers]
waits_for_cut = 1
[faults]
relay_open_set_per_mille = 1000
power_cuts_per_year = 20
broker_outages = [["2026-01-05 10:00", "2026-01-06 16:00"]]
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """(report, daily) of the FAULTY scenario, run once for the report tests."""
    path = tmp_path_factory.mktemp("faulty") / "faulty.toml"
    path.write_text(FAULTY)
    sc = scenario_mod.load(str(path), DEFAULT_CONFIG, TZ_S)
    r = sc.data["run"]
    rep = run(r["meters"], r["days"], r["seed"], "cpython", r["step_s"], r["start"], sc.config, r["feedback"], "auto", sc)
    daily = rep.pop("daily")
    return rep, daily


def test_fleet_silent_relay_failure_is_surfaced_in_summary_json_and_report(faulty, tmp_path):
    from sim import report
    from sim.runner import render

    rep, daily = faulty
    # Ground truth: meters whose contact is open at the end while their core wants supply.
    dark = [r["id"] for r in rep["meters"] if r["relay"] == "open" and r["relay_state"] == "connected"]
    assert dark, "the scenario must produce a silent relay failure"
    assert all(r["balance_end"] > 0 for r in rep["meters"] if r["id"] in dark)
    assert rep["silent_relay_failures"] == dark
    assert rep["totals"]["silent_relay_failures"] == len(dark)
    text = render(rep)
    assert "SILENT RELAY FAILURES: %d" % len(dark) in text
    for mid in dark:
        assert mid in text.split("SILENT RELAY FAILURES")[1]
    # The top-ups those customers bought never brought the supply back: said, not dropped.
    assert rep["totals"]["unrestored_topups"] >= len(dark)
    assert "NEVER restored after %d top-up" % rep["totals"]["unrestored_topups"] in text
    report.write(str(tmp_path), rep, daily)
    page = (tmp_path / "report.html").read_text()
    assert "Silent relay failures" in page and all(mid in page for mid in dark)
    import csv

    with open(tmp_path / "meters.csv") as f:
        flagged = [row["id"] for row in csv.DictReader(f) if row["silent_relay_failure"] == "1"]
    assert flagged == dark


def test_fleet_report_plots_are_dated_marked_and_start_at_zero(faulty):
    pytest.importorskip("matplotlib")
    import datetime

    import matplotlib
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    from sim import report

    rep, daily = faulty
    figs = report.figures(rep, daily)
    try:
        cons = figs["consumption.png"]
        energy_ax = cons.axes[0]
        assert energy_ax.get_ylabel() == "fleet energy, kWh/day"
        assert energy_ax.get_ylim()[0] == 0
        cuts_ax = [a for a in cons.axes if a.get_ylabel() == "meters cut that day"][0]
        assert cuts_ax.get_ylim()[0] == 0
        for name in ("consumption.png", "balances.png", "relay_timeline.png"):
            fig = figs[name]
            ax = fig.axes[0]
            # Dates over exactly the run, not day numbers.
            lo, hi = (mdates.num2date(x).replace(tzinfo=None) for x in ax.get_xlim())
            assert (lo, hi) == (datetime.datetime(2026, 1, 1), datetime.datetime(2026, 2, 10)), name
            fig.canvas.draw()
            ticks = [t.get_text() for a in fig.axes for t in a.get_xticklabels() if t.get_text()]
            assert "Jan" in ticks and "Feb" in ticks, (name, ticks)
            # Each operator action a line at its time, named in the legend; the outage shaded.
            xs = set(line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
            for op in rep["operator_actions"]:
                assert datetime.datetime.strptime(op["at"], "%Y-%m-%d %H:%M") in xs, (name, op["at"], xs)
            legend = [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]
            assert any("one to postpaid (2026-01-10 09:00)" in t for t in legend), legend
            assert "broker outage" in legend
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_fleet_relay_timeline_shows_telling_meters_by_id_with_a_legend(faulty):
    pytest.importorskip("matplotlib")
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    from sim import report

    rep, daily = faulty
    rows, left_out = report.timeline_meters(rep, daily)
    ids = [mid for mid, _ in rows]
    silent = rep["silent_relay_failures"]
    # Silent failures first, then the other meters with a relay fault.
    assert ids[:len(silent)] == sorted(silent, key=ids.index) and set(ids[:len(silent)]) == set(silent)
    faulty_ids = [r["id"] for r in rep["meters"] if any(f[1] == "relay fault" for f in r["faults"])]
    assert set(faulty_ids) <= set(ids)
    assert all("relay open_set" in why for mid, why in rows if mid in faulty_ids)
    fig = report.figures(rep, daily)["relay_timeline.png"]
    try:
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert [label.split()[0] for label in labels] == ids
        assert labels[0].startswith(silent[0] if silent[0] == ids[0] else ids[0]) and "silent relay failure" in labels[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        for want in ("cut all day", "dark, no cut reported", "power cut", "relay fault"):
            assert want in legend
    finally:
        plt.close(fig)


def test_fleet_relay_timeline_picks_the_telling_meters_not_the_first_by_index():
    from sim import report

    # 300 meters, none cut, except a few far down the index.
    rows = [{"id": "%012d" % (100000000001 + i), "faults": [], "relay": "closed", "relay_state": "connected"} for i in range(300)]
    daily = dict((r["id"], [[d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] for d in range(10)]) for r in rows)
    rows[250]["faults"] = [[0, "relay fault", "welded"]]
    daily[rows[200]["id"]][3][3] = 3600
    daily[rows[299]["id"]][4][3] = 7200
    rep = {"meters": rows, "silent_relay_failures": [rows[120]["id"]]}
    picked, left_out = report.timeline_meters(rep, daily)
    assert [mid for mid, _ in picked] == [rows[120]["id"], rows[250]["id"], rows[299]["id"], rows[200]["id"]]
    assert left_out == 0
    assert picked[2][1] == "cut 2.0 h" and picked[3][1] == "cut 60 min"
    many = dict((mid, [[0, 0, 0, 600 + k, 0, 0, 0, 0, 0, 0, 0]]) for k, mid in enumerate(daily))
    picked, left_out = report.timeline_meters({"meters": rows, "silent_relay_failures": []}, many)
    assert len(picked) == report.TIMELINE_LIMIT and left_out == 300 - report.TIMELINE_LIMIT
    assert picked[0][0] == rows[250]["id"]  # the relay fault before the longest cut


def test_fleet_latency_histogram_shows_the_whole_distribution(faulty):
    pytest.importorskip("matplotlib")
    import copy

    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    from sim import report

    rep, daily = faulty
    rep = copy.deepcopy(rep)
    # The village's worst case: a top-up that restored the supply 345.7 h later.
    rep["meters"][0]["restore_delays_s"].append(1244377)
    delays = sorted(d for r in rep["meters"] for d in r["restore_delays_s"])
    rep["totals"]["restore_max_s"] = delays[-1]
    fig = report.figures(rep, daily)["latencies.png"]
    try:
        ax = fig.axes[1]
        assert ax.get_xscale() == "log"
        assert ax.get_xlim()[0] <= 1 and ax.get_xlim()[1] > 1244377  # nothing capped, nothing off the axis
        heights = [p.get_height() for p in ax.patches]
        assert sum(heights) == len(delays)  # every restore is in a bar, the 0 s ones too
        assert heights[-1] == 1 or heights[-2] == 1  # the worst case has its bar
        texts = [t.get_text() for t in ax.texts]
        assert "worst 345.7 h" in texts and "target 15 min" in texts
        assert "capped" not in ax.get_xlabel()
    finally:
        plt.close(fig)


def test_fleet_summary_gives_one_restore_figure_in_one_unit(faulty):
    import copy

    from sim.runner import render

    rep = copy.deepcopy(faulty[0])
    rep["totals"].update(restore_max_s=1244377, restore_p99_s=1244377)
    text = render(rep)
    lines = [line for line in text.splitlines() if "restore" in line.lower() and "worst" in line]
    assert len(lines) == 1, lines
    assert "worst 345.7 h" in lines[0] and "1244377" not in text and "1,244,377" not in text
