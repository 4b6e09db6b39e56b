"""`pmeter sim run`: the demo, determinism, both runtimes, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PMETER = [sys.executable, "-m", "pmeter"]


def pmeter(*args, timeout=120):
    return subprocess.run(PMETER + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_the_demo_shows_a_cut_and_a_reconnection_and_an_exact_ledger():
    done = pmeter("sim", "run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert " cut " in out and "reconnected" in out and "top-up" in out and "alarm 1" in out
    assert "exact for every meter" in out


def test_json_report_has_the_documented_fields_and_the_ledger_holds():
    done = pmeter("sim", "run", "--meters", "3", "--days", "45", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["money_scale"] == 10000
    assert len(rep["meters"]) == 3
    for m in rep["meters"]:
        for key in ("id", "energy_wh", "charged", "credited", "balance_start", "balance_end", "cuts", "reconnects", "alarms", "relay"):
            assert key in m
        assert m["balance_end"] == m["balance_start"] + m["credited"] - m["charged"]
        assert m["relay"] in ("closed", "open")
        assert m["energy_wh"] > 0
    assert rep["meters"][0]["id"] != rep["meters"][1]["id"]


def test_same_seed_same_output_and_another_seed_differs():
    a = pmeter("sim", "run", "--meters", "2", "--days", "20", "--seed", "7", "--json").stdout
    b = pmeter("sim", "run", "--meters", "2", "--days", "20", "--seed", "7", "--json").stdout
    c = pmeter("sim", "run", "--meters", "2", "--days", "20", "--seed", "8", "--json").stdout
    assert a == b
    assert json.loads(a)["meters"] != json.loads(c)["meters"]


def test_micropython_runtime_gives_identical_results():
    cp = pmeter("sim", "run", "--meters", "2", "--days", "40", "--json")
    mp = pmeter("sim", "run", "--meters", "2", "--days", "40", "--json", "--runtime", "micropython", timeout=300)
    assert cp.returncode == 0 and mp.returncode == 0, mp.stderr
    a, b = json.loads(cp.stdout), json.loads(mp.stdout)
    assert a.pop("runtime") == "cpython" and b.pop("runtime") == "micropython"
    assert a == b
    assert sum(m["cuts"] for m in a["meters"]) > 0  # the comparison covers a cut


@pytest.mark.parametrize(
    "toml, key",
    [
        ('[tariff]\nprice = -1\n', "tariff.price"),
        ('[tariff]\nkind = "tiered"\ntier_kwh = [600, 260]\ntier_prices = [1, 2, 3]\n', "tariff"),
        ('[account]\nalarm1 = 10\nalarm2 = 20\n', "account"),
        ('[meter]\nconstant = "3200"\n', "meter.constant"),
        ('[meter]\nconstnt = 3200\n', "meter.constnt"),
        ('[account\n', None),
    ],
)
def test_bad_configuration_exits_2_naming_the_key(tmp_path, toml, key):
    cfg = tmp_path / "meter.toml"
    cfg.write_text(toml)
    done = pmeter("sim", "run", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stdout == ""
    if key:
        assert "'%s'" % key in done.stderr, done.stderr
    else:
        assert "not valid TOML" in done.stderr


@pytest.mark.parametrize("args", [["--meters", "0"], ["--days", "x"], ["--runtime", "jython"], ["--start", "2026-13-01 00:00"]])
def test_bad_arguments_exit_2(args):
    done = pmeter("sim", "run", *args)
    assert done.returncode == 2
    assert done.stderr.strip()


def test_a_config_file_changes_the_meter(tmp_path):
    cfg = tmp_path / "meter.toml"
    cfg.write_text('[account]\nmode = "postpaid"\nopening_balance = 0\n')
    done = pmeter("sim", "run", "--config", str(cfg), "--days", "20", "--json")
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)["meters"][0]
    assert m["cuts"] == 0 and m["balance_end"] < 0  # postpaid: billed, never cut


def test_the_demo_table_adds_up_to_the_last_digit():
    from decimal import Decimal

    done = pmeter("sim", "run", "--meters", "3", "--days", "45")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    head = [k for k, line in enumerate(lines) if line.startswith("meter ")][0]
    assert lines[head].split()[3:7] == ["opening", "credited", "charged", "balance"]
    rows = []
    for line in lines[head + 1:head + 4]:
        f = line.split()
        assert f[3] == f[5] == f[7] == f[9] == "CNY"
        rows.append(dict(zip(("opening", "credited", "charged", "balance"), (Decimal(f[k]) for k in (2, 4, 6, 8)))))
    for r in rows:
        assert r["opening"] + r["credited"] - r["charged"] == r["balance"]
    assert all(r["charged"] % Decimal("0.01") for r in rows), "figures with sub-fen digits: where rounding would show"
    total = [line for line in lines if line.startswith("Energy ")][0]
    charged = Decimal(total.split("charged ")[1].split(" CNY")[0])
    credited = Decimal(total.split("credited ")[1].split(" CNY")[0])
    assert charged == sum(r["charged"] for r in rows) and credited == sum(r["credited"] for r in rows)
