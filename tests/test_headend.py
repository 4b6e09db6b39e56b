"""Head-end: master key file, vending, ledger, batch and the CLI."""

import binascii
import json
import os
import stat
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import config, results
from agent.tokens import SCHEMA, TokenGuard
from headend import batch, cli, keys, parse_amount, vend
from headend.ledger import Ledger

METER = "000000000001"
T0 = 1700000000


@pytest.fixture
def master(tmp_path):
    path = str(tmp_path / "master.key")
    keys.init_master(path)
    return path


def device(master_path, meter=METER, divider=1):
    prov = keys.provision(keys.load_master(master_path), meter, 0, divider)
    return TokenGuard.from_config(meter, config.validate(prov["tokens"], SCHEMA))


def test_parse_amount():
    assert parse_amount("50.00") == 500000
    assert parse_amount("50") == 500000
    assert parse_amount("0.0001") == 1
    assert parse_amount("12.3456") == 123456
    for bad in ("", " ", "-1", "+1", "1.23456", "1e3", "abc", "1.", ".5", "1,5", "١٢", "nan", "1.2.3"):
        with pytest.raises(ValueError):
            parse_amount(bad)


@settings(max_examples=200)
@given(st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False))
def test_parse_amount_matches_decimal(d):
    assert parse_amount(str(d) if "E" not in str(d) else format(d, "f")) == int(d * 10000)


def test_master_key_file_is_private_and_never_overwritten(tmp_path, master):
    assert stat.S_IMODE(os.stat(master).st_mode) == 0o600
    with pytest.raises(keys.KeyFileError):
        keys.init_master(master)
    os.chmod(master, 0o644)
    with pytest.raises(keys.KeyFileError, match="chmod 600"):
        keys.load_master(master)
    with pytest.raises(keys.KeyFileError, match="does not exist"):
        keys.load_master(str(tmp_path / "nope"))


def test_vended_tokens_are_accepted_by_the_device_once(tmp_path, master):
    m = keys.load_master(master)
    led = Ledger(str(tmp_path / "l.db"))
    g = device(master)
    seq, tok = vend.topup(led, m, METER, 500000, T0)
    code, t = g.check(tok, T0)
    assert code == results.ACCEPTED and t.amount == 500000 and t.seq == seq == 1
    g.accept(t)
    assert g.check(tok, T0)[0] == results.ALREADY_USED
    # The same token on another meter is refused.
    assert device(master, "000000000002").check(tok, T0)[0] == results.WRONG_METER
    # Keypad digits.
    count, digits = vend.keypad_token(led, m, METER, 70000, T0)
    code, kt = g.check_keypad(digits, T0, 0)
    assert code == results.ACCEPTED and kt.amount == 70000 and kt.count == count
    led.record_result(METER, "mqtt", seq, results.ACCEPTED, T0)
    rec = led.reconcile()
    assert rec == [{"meter_id": METER, "issued": 570000, "applied": 500000, "pending": 1}]


def test_keypad_divider_and_limits(tmp_path, master):
    m = keys.load_master(master)
    led = Ledger(":memory:")
    g = device(master, divider=100)
    _, digits = vend.keypad_token(led, m, METER, 12300, T0, divider=100)  # 1.23
    code, kt = g.check_keypad(digits, T0, 0)
    assert code == results.ACCEPTED and kt.amount == 12300
    with pytest.raises(ValueError, match="multiple of 100"):
        vend.keypad_token(led, m, METER, 12345, T0, divider=100)
    with pytest.raises(ValueError, match="too large"):
        vend.keypad_token(led, m, METER, 996 * 10000, T0)
    _, digits = vend.keypad_token(led, m, METER, 996 * 10000, T0, extended=True)
    assert len(digits) == 12 and g.check_keypad(digits, T0, 0)[1].amount == 996 * 100


def test_key_change_through_the_ledger(tmp_path, master):
    m = keys.load_master(master)
    led = Ledger(str(tmp_path / "l.db"))
    g = device(master)
    seq, tok, rev = vend.key_change(led, m, METER, T0)
    code, t = g.check(tok, T0)
    assert code == results.ACCEPTED and g.accept(t) == results.ACCEPTED and g.revision == rev == 1
    _, tok = vend.topup(led, m, METER, 10000, T0)  # minted with revision 1 now
    assert g.check(tok, T0)[0] == results.ACCEPTED


def test_sequences_never_reused_across_restarts_and_writers(tmp_path, master):
    m = keys.load_master(master)
    path = str(tmp_path / "l.db")
    seqs = []
    for _ in range(3):  # restarts
        led = Ledger(path)
        seqs += [vend.topup(led, m, METER, 1, T0)[0] for _ in range(3)]
        led.close()
    lock = threading.Lock()

    def writer():
        led = Ledger(path)
        for _ in range(10):
            s = vend.topup(led, m, METER, 1, T0)[0]
            with lock:
                seqs.append(s)
        led.close()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 40))
    assert len(Ledger(path).tokens(METER)) == 39


def test_batch_checks_every_row_and_the_command_before_anything_is_issued():
    text = "meter_id,name\n000000000001,a\n\n000000000002,b\n"
    assert batch.plan(text) == [(2, "000000000001"), (4, "000000000002")]
    assert batch.read_meter_ids("000000000001\n000000000002\n") == [(1, "000000000001"), (2, "000000000002")]
    for bad, why in (("meter_id\n000000000001\nbad\n", "line 3"), ("000000000001\n000000000001\n", "already on line 1"),
                     ("meter_id\n", "no meter ids")):
        with pytest.raises(ValueError, match=why):
            batch.plan(bad)
    # The core's own rules: what the meter would answer bad_argument is refused here.
    assert batch.check_command("set_mode", {"mode": "postpaid"}) is None
    assert batch.check_command("force_on", {"seconds": 60}) is None
    assert batch.check_command("set_limits", {"alarm1": 5}) is None
    for name, args in (("set_mode", {}), ("set_mode", {"mode": "free"}), ("force_on", {"seconds": -5}),
                       ("set_limits", {"alarm1": 5, "alarm2": 6}), ("set_credit", {}), ("explode", {})):
        assert batch.check_command(name, args) is not None, (name, args)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end(tmp_path, capsys):
    mk = str(tmp_path / "m.key")
    lg = str(tmp_path / "l.db")
    common = ["--master", mk]
    assert run_cli(capsys, "keys", "init", *common)[0] == 0
    code, out, _ = run_cli(capsys, "keys", "derive", "--meter", METER, "--json", *common)
    prov = json.loads(out)
    assert code == 0 and len(prov["tokens"]["key"]) == 64 and prov["tokens"]["revision"] == 0
    assert len(prov["link"]["key"]) == 64
    code, out, _ = run_cli(capsys, "vend", "--meter", METER, "--amount", "50.00", "--json", "--ledger", lg, *common)
    v = json.loads(out)
    assert code == 0 and v["amount"] == 500000 and v["seq"] == 1
    code, out, _ = run_cli(capsys, "token", "decode", v["token"], "--meter", METER, "--wall", str(v["expires"] - 1),
                           "--json", *common)
    d = json.loads(out)
    assert code == 0 and d["result"] == "accepted" and d["amount"] == 500000
    code, out, _ = run_cli(capsys, "token", "decode", v["token"], "--meter", METER, "--wall", str(v["expires"] + 1),
                           "--json", *common)
    assert code == 1 and json.loads(out)["result"] == "expired"
    code, out, _ = run_cli(capsys, "token", "decode", v["token"], "--meter", "000000000002", "--json", *common)
    assert json.loads(out)["result"] == "wrong_meter"
    code, out, _ = run_cli(capsys, "vend", "--meter", METER, "--amount", "5", "--keypad", "--json", "--ledger", lg,
                           *common)
    k = json.loads(out)
    code, out, _ = run_cli(capsys, "token", "decode", k["digits"], "--meter", METER, "--json", *common)
    assert json.loads(out)["amount"] == 50000
    code, out, _ = run_cli(capsys, "token", "decode", k["digits"], "--meter", METER, "--json",
                           "--meter-key", prov["tokens"]["keypad_key"])
    assert json.loads(out)["result"] == "accepted"
    csv_path = tmp_path / "meters.csv"
    csv_path.write_text("meter_id\n000000000001\n000000000003\nnope\n")
    before = Ledger(lg).tokens()
    code, out, err = run_cli(capsys, "batch", "--csv", str(csv_path), "--command", "set_mode", "--arg", "mode=prepaid",
                             "--ledger", lg, "--out", str(tmp_path / "r.csv"), *common)
    assert code == 2 and "--csv" in err and "line 4" in err
    assert Ledger(lg).tokens() == before and not (tmp_path / "r.csv").exists()  # nothing issued, nothing written


@pytest.mark.parametrize(
    "argv, arg",
    [
        (["vend", "--meter", "123", "--amount", "1"], "--meter"),
        (["vend", "--meter", METER, "--amount", "1.00001"], "--amount"),
        (["vend", "--meter", METER, "--amount", "-3"], "--amount"),
        (["vend", "--meter", METER, "--amount", "0"], "--amount"),
        (["vend", "--meter", METER, "--amount", "abc"], "--amount"),
        (["vend", "--meter", METER, "--amount", "1", "--ttl", "x"], "--ttl"),
        (["vend", "--meter", METER, "--amount", "1", "--keypad", "--divider", "3"], "--divider"),
        (["vend", "--meter", METER, "--amount", "996", "--keypad"], "--amount"),
        (["keys", "derive", "--meter", METER, "--revision", "-1"], "--revision"),
        (["token", "decode", "zz", "--meter", METER], "token"),
        (["token", "decode", "123456789", "--meter", METER, "--meter-key", "00"], "--meter-key"),
        (["batch", "--csv", "/nonexistent.csv", "--command", "set_mode", "--arg", "mode=prepaid"], "--csv"),
        (["batch", "--csv", "x.csv", "--command", "explode"], "--command"),
        (["batch", "--csv", "x.csv", "--command", "set_mode", "--arg", "novalue"], "--arg"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_argument(tmp_path, capsys, monkeypatch, argv, arg):
    monkeypatch.chdir(tmp_path)  # the default ledger would land here
    monkeypatch.delenv("PMETER_LEDGER", raising=False)
    mk = str(tmp_path / "m.key")
    keys.init_master(mk)
    code, out, err = run_cli(capsys, *(argv + ["--master", mk]))
    assert code == 2 and arg in err, err
    assert not os.path.exists(tmp_path / "pmeter-ledger.sqlite")


def test_cli_missing_master_is_bad_input(tmp_path, capsys):
    code, _, err = run_cli(capsys, "vend", "--meter", METER, "--amount", "1", "--master", str(tmp_path / "none"),
                           "--ledger", str(tmp_path / "l.db"))
    assert code == 2 and "--master" in err and "pmeter keys init" in err


def test_cli_vends_restricted_keypad_tokens_the_reference_decodes(tmp_path, capsys):
    """4-key keypads: `vend --keypad --restricted` digits 1-4 that openpaygo and our decoder accept."""
    from openpaygo import decode_token

    mk = str(tmp_path / "m.key")
    lg = str(tmp_path / "l.db")
    assert run_cli(capsys, "keys", "init", "--master", mk)[0] == 0
    prov = json.loads(run_cli(capsys, "keys", "derive", "--meter", METER, "--json", "--master", mk)[1])["tokens"]
    for extended, length in ((False, 15), (True, 20)):
        argv = ["vend", "--meter", METER, "--amount", "7.00", "--keypad", "--restricted", "--json", "--ledger", lg, "--master", mk]
        code, out, _ = run_cli(capsys, *(argv + (["--extended"] if extended else [])))
        v = json.loads(out)
        assert code == 0 and len(v["digits"]) == length and set(v["digits"]) <= set("1234")
        value, _, count, _ = decode_token(
            token=v["digits"], secret_key=prov["keypad_key"], count=v["count"] - 2, used_counts=[],
            restricted_digit_set=True,
        )
        assert value == 7 and count == v["count"]
        code, out, _ = run_cli(capsys, "token", "decode", v["digits"], "--meter", METER, "--count", str(v["count"] - 2), "--json", "--master", mk)
        assert code == 0 and json.loads(out)["result"] == "accepted"
    code, _, err = run_cli(capsys, "vend", "--meter", METER, "--amount", "7.00", "--restricted", "--ledger", lg, "--master", mk)
    assert code == 2 and "--restricted" in err


def test_keys_derive_prints_tables_that_paste_into_the_agent_config(tmp_path, capsys):
    """What `pmeter keys derive` prints, pasted as is, is a valid agent config
    section by section (no unknown key), and holds the keys the head-end uses."""
    from agent import settings
    from headend.link import Fleet

    mk = str(tmp_path / "m.key")
    keys.init_master(mk)
    code, out, _ = run_cli(capsys, "keys", "derive", "--meter", METER, "--master", mk)
    assert code == 0
    text = '[meter]\nid = "%s"\n\n%s\n[mqtt]\nhost = "127.0.0.1"\nca = "ca.pem"\n' % (METER, out)
    cfg = settings.validate(settings.parse(text))
    fleet = Fleet(keys.load_master(mk))
    assert cfg["tokens"]["key"] == fleet.meter_key(METER).hex()
    assert cfg["link"]["key"] == fleet.link_key(METER).hex()
    assert cfg["tokens"]["keypad_key"] == keys.keypad_key(keys.load_master(mk), METER).hex()


def test_options_come_from_flag_then_environment_then_config_file_then_default(tmp_path, monkeypatch):
    import argparse

    from headend import options

    for k in list(os.environ):
        if k.startswith("PMETER_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "headend.toml").write_text(
        '[broker]\nurl = "mqtt://broker.example:1884"\n[keys]\nmaster = "master.key"\n[ledger]\npath = "l.db"\n')

    def settings(*argv):
        p = argparse.ArgumentParser()
        options.add(p, ["master", "ledger"] + list(options.BROKER))
        return options.Settings(p.parse_args(list(argv)))

    st = settings("--config", "etc/headend.toml")
    # Paths in the file are relative to the file.
    assert st.get("master") == str(tmp_path / "etc" / "master.key") and st.get("ledger") == str(tmp_path / "etc" / "l.db")
    assert st.broker()[:3] == ("broker.example", 1884, None) and st.get("client_id") is None
    monkeypatch.setenv("PMETER_LEDGER", "env.db")
    assert settings("--config", "etc/headend.toml").get("ledger") == "env.db"
    assert settings("--config", "etc/headend.toml", "--ledger", "flag.db").get("ledger") == "flag.db"
    assert settings().get("master") == "pmeter-master.key"  # no file here: the default
    monkeypatch.setenv("PMETER_HEADEND_CONFIG", "etc/headend.toml")
    assert settings().get("broker") == "mqtt://broker.example:1884"
