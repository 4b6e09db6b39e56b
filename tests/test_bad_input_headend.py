"""Bad input to every head-end command, run as the real `pmeter` process:
exit code 2, a message naming the argument (or config key / variable), no
traceback, and nothing changed: every file in the folder (the ledger, the
master key, the CSV) is byte for byte what it was, and nothing was created.

The broker options point at a port where nothing listens: a case whose bad
input slipped through would try to connect and exit 1, not 2.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mosquitto import free_port

from headend import keys, vend
from headend.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
M = "000000000042"
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("headend-bad-input")
    keys.init_master(str(d / "m.key"))
    master = keys.load_master(str(d / "m.key"))
    led = Ledger(str(d / "l.db"))
    vend.topup(led, master, M, 500000, T0)
    led.close()
    (d / "loose.key").write_text(master.hex())
    (d / "loose.key").chmod(0o644)
    (d / "junk.key").write_text("not hex")
    (d / "junk.key").chmod(0o600)
    (d / "corrupt.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    (d / "text.db").write_text("these are not the tables you are looking for\n")
    (d / "folder").mkdir()
    (d / "plain.txt").write_text("a file, not a folder\n")
    (d / "ok.csv").write_text("meter_id\n%s\n000000000043\n" % M)
    (d / "badid.csv").write_text("meter_id\n%s\n12345\n" % M)
    (d / "dup.csv").write_text("%s\n%s\n" % (M, M))
    (d / "empty.csv").write_text("meter_id\n")
    (d / "latin1.csv").write_bytes(b"meter_id\n\xe9\xe9\n")
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    conf = d / "conf"
    conf.mkdir()
    (conf / "unknown_key.toml").write_text('[broker]\nurll = "mqtts://127.0.0.1:1"\n')
    (conf / "unknown_section.toml").write_text('[database]\npath = "x"\n')
    (conf / "not_toml.toml").write_text("[broker\nurl = \n")
    (conf / "latin1.toml").write_bytes(b'[ledger]\npath = "\xe9"\n')
    (conf / "int_path.toml").write_text("[ledger]\npath = 5\n")
    (conf / "not_table.toml").write_text('ledger = "l.db"\n')
    (conf / "corrupt_ledger.toml").write_text('[ledger]\npath = "../corrupt.db"\n[keys]\nmaster = "../m.key"\n')
    (conf / "missing_master.toml").write_text('[keys]\nmaster = "../none.key"\n[ledger]\npath = "../l.db"\n')
    (conf / "bad_url.toml").write_text('[broker]\nurl = "tcp://127.0.0.1:1883"\n[keys]\nmaster = "../m.key"\n'
                                       '[ledger]\npath = "../l.db"\n')
    return d


def _dead_broker():
    return ["--broker", "mqtt://127.0.0.1:%d" % free_port()]


VEND = ["vend", "--meter", M, "--master", "m.key", "--ledger", "l.db"]
PUSH = ["push", "--meter", M, "--master", "m.key", "--ledger", "l.db", "--wait", "--timeout", "1"]
BATCH = ["batch", "--csv", "ok.csv", "--command", "set_mode", "--arg", "mode=prepaid", "--master", "m.key",
         "--ledger", "l.db", "--timeout", "1"]
RESTORE = ["restore", "--meter", M, "--ledger", "l.db", "--master", "m.key", "--yes"]
DECODE = ["token", "decode", "00ff", "--master", "m.key"]


def _without(argv, *flags):
    out = list(argv)
    for flag in flags:
        i = out.index(flag)
        del out[i:i + 2]
    return out


# (id, argv, environment, what the message must name)
CASES = [
    # vend
    ("vend-meter-short", VEND[:2] + ["123"] + VEND[3:] + ["--amount", "1"], {}, "--meter"),
    ("vend-meter-letters", VEND[:2] + ["abcdefghijkl"] + VEND[3:] + ["--amount", "1"], {}, "--meter"),
    ("vend-meter-arabic-digits", VEND[:2] + ["١٢٣٤٥٦٧٨٩٠١٢"] + VEND[3:] + ["--amount", "1"], {}, "--meter"),
    ("vend-amount-huge", VEND + ["--amount", "99999999999"], {}, "--amount"),
    ("vend-amount-negative", VEND + ["--amount", "-3"], {}, "--amount"),
    ("vend-amount-zero", VEND + ["--amount", "0"], {}, "--amount"),
    ("vend-amount-5-decimals", VEND + ["--amount", "1.00001"], {}, "--amount"),
    ("vend-amount-text", VEND + ["--amount", "abc"], {}, "--amount"),
    ("vend-amount-empty", VEND + ["--amount", ""], {}, "--amount"),
    ("vend-amount-exponent", VEND + ["--amount", "1e3"], {}, "--amount"),
    ("vend-no-amount", VEND, {}, "--amount"),
    ("vend-amount-and-revend", VEND + ["--amount", "1", "--revend", "mqtt:1"], {}, "--amount"),
    ("vend-revend-nonsense", VEND + ["--revend", "nonsense"], {}, "--revend"),
    ("vend-revend-unknown", VEND + ["--revend", "mqtt:999"], {}, "--revend"),
    ("vend-revend-unanswered", VEND + ["--revend", "mqtt:1"], {}, "--revend"),
    ("vend-revend-keypad", VEND + ["--revend", "mqtt:1", "--keypad"], {}, "--revend"),
    ("vend-ttl-text", VEND + ["--amount", "1", "--ttl", "x"], {}, "--ttl"),
    ("vend-ttl-short", VEND + ["--amount", "1", "--ttl", "5"], {}, "--ttl"),
    ("vend-divider", VEND + ["--amount", "1", "--keypad", "--divider", "3"], {}, "--divider"),
    ("vend-keypad-amount", VEND + ["--amount", "996", "--keypad"], {}, "--amount"),
    ("vend-extended-without-keypad", VEND + ["--amount", "1", "--extended"], {}, "--extended"),
    ("vend-master-missing", _without(VEND, "--master") + ["--master", "none.key", "--amount", "1"], {}, "--master"),
    ("vend-master-loose", _without(VEND, "--master") + ["--master", "loose.key", "--amount", "1"], {}, "--master"),
    ("vend-master-junk", _without(VEND, "--master") + ["--master", "junk.key", "--amount", "1"], {}, "--master"),
    ("vend-master-env", _without(VEND, "--master") + ["--amount", "1"], {"PMETER_MASTER": "none.key"},
     "PMETER_MASTER"),
    ("vend-ledger-no-folder", _without(VEND, "--ledger") + ["--ledger", "nope/l.db", "--amount", "1"], {},
     "--ledger"),
    ("vend-ledger-under-a-file", _without(VEND, "--ledger") + ["--ledger", "plain.txt/l.db", "--amount", "1"], {},
     "--ledger"),
    ("vend-ledger-proc", _without(VEND, "--ledger") + ["--ledger", "/proc/pmeter-l.db", "--amount", "1"], {},
     "--ledger"),
    ("vend-ledger-corrupt", _without(VEND, "--ledger") + ["--ledger", "corrupt.db", "--amount", "1"], {}, "--ledger"),
    ("vend-ledger-text", _without(VEND, "--ledger") + ["--ledger", "text.db", "--amount", "1"], {}, "--ledger"),
    ("vend-ledger-folder", _without(VEND, "--ledger") + ["--ledger", "folder", "--amount", "1"], {}, "--ledger"),
    ("vend-ledger-env-corrupt", _without(VEND, "--ledger") + ["--amount", "1"], {"PMETER_LEDGER": "corrupt.db"},
     "PMETER_LEDGER"),
    ("vend-config-missing", VEND + ["--amount", "1", "--config", "none.toml"], {}, "--config"),
    ("vend-config-env-missing", VEND + ["--amount", "1"], {"PMETER_HEADEND_CONFIG": "none.toml"},
     "PMETER_HEADEND_CONFIG"),
    ("vend-config-unknown-key", VEND + ["--amount", "1", "--config", "conf/unknown_key.toml"], {}, "broker.urll"),
    ("vend-config-unknown-section", VEND + ["--amount", "1", "--config", "conf/unknown_section.toml"], {},
     "database"),
    ("vend-config-not-toml", VEND + ["--amount", "1", "--config", "conf/not_toml.toml"], {}, "--config"),
    ("vend-config-latin1", VEND + ["--amount", "1", "--config", "conf/latin1.toml"], {}, "--config"),
    ("vend-config-int-path", VEND + ["--amount", "1", "--config", "conf/int_path.toml"], {}, "ledger.path"),
    ("vend-config-not-a-table", VEND + ["--amount", "1", "--config", "conf/not_table.toml"], {}, "ledger"),
    ("vend-config-corrupt-ledger", ["vend", "--meter", M, "--amount", "1", "--config", "conf/corrupt_ledger.toml"],
     {}, "ledger.path"),
    ("vend-config-missing-master", ["vend", "--meter", M, "--amount", "1", "--config", "conf/missing_master.toml"],
     {}, "keys.master"),
    # keys
    ("keys-init-no-folder", ["keys", "init", "--master", "nope/m.key"], {}, "--master"),
    ("keys-init-under-a-file", ["keys", "init", "--master", "plain.txt/m.key"], {}, "--master"),
    ("keys-init-proc", ["keys", "init", "--master", "/proc/pmeter-m.key"], {}, "--master"),
    ("keys-init-exists", ["keys", "init", "--master", "m.key"], {}, "--master"),
    ("keys-init-folder", ["keys", "init", "--master", "folder"], {}, "--master"),
    ("keys-derive-meter", ["keys", "derive", "--meter", "12", "--master", "m.key"], {}, "--meter"),
    ("keys-derive-revision", ["keys", "derive", "--meter", M, "--revision", "-1", "--master", "m.key"], {},
     "--revision"),
    ("keys-derive-divider", ["keys", "derive", "--meter", M, "--divider", "0", "--master", "m.key"], {},
     "--divider"),
    ("keys-derive-master", ["keys", "derive", "--meter", M, "--master", "none.key"], {}, "--master"),
    # token decode
    ("decode-not-hex", ["token", "decode", "zz", "--meter", M, "--master", "m.key"], {}, "token"),
    ("decode-meter-key", ["token", "decode", "123456789", "--meter", M, "--meter-key", "00"], {}, "--meter-key"),
    ("decode-meter", DECODE + ["--meter", "bad"], {}, "--meter"),
    ("decode-count", DECODE + ["--meter", M, "--count", "-1"], {}, "--count"),
    ("decode-wall", DECODE + ["--meter", M, "--wall", "x"], {}, "--wall"),
    ("decode-master", ["token", "decode", "00ff", "--meter", M, "--master", "none.key"], {}, "--master"),
    # push
    ("push-timeout-negative", PUSH[:-1] + ["-1", "--amount", "1"], {}, "--timeout"),
    ("push-timeout-zero", PUSH[:-1] + ["0", "--amount", "1"], {}, "--timeout"),
    ("push-timeout-nan", PUSH[:-1] + ["nan", "--amount", "1"], {}, "--timeout"),
    ("push-timeout-inf", PUSH[:-1] + ["inf", "--amount", "1"], {}, "--timeout"),
    ("push-timeout-text-no-wait", ["push", "--meter", M, "--amount", "1", "--timeout", "soon", "--master", "m.key",
                                   "--ledger", "l.db"], {}, "--timeout"),
    ("push-meter", PUSH[:2] + ["1"] + PUSH[3:] + ["--amount", "1"], {}, "--meter"),
    ("push-amount-negative", PUSH + ["--amount", "-5"], {}, "--amount"),
    ("push-amount-huge", PUSH + ["--amount", "99999999999"], {}, "--amount"),
    ("push-amount-and-revend", PUSH + ["--amount", "1", "--revend", "mqtt:1"], {}, "--amount"),
    ("push-broker-scheme", PUSH + ["--amount", "1", "--broker", "http://127.0.0.1:1883"], {}, "--broker"),
    ("push-broker-port", PUSH + ["--amount", "1", "--broker", "mqtts://127.0.0.1:99999"], {}, "--broker"),
    ("push-broker-no-host", PUSH + ["--amount", "1", "--broker", "mqtts://"], {}, "--broker"),
    ("push-broker-env", PUSH + ["--amount", "1"], {"PMETER_BROKER": "127.0.0.1:8883"}, "PMETER_BROKER"),
    ("push-broker-config", ["push", "--meter", M, "--amount", "1", "--config", "conf/bad_url.toml"], {},
     "broker.url"),
    ("push-no-ca", PUSH + ["--amount", "1", "--broker", "mqtts://127.0.0.1:1"], {}, "--ca"),
    ("push-ca-missing", PUSH + ["--amount", "1", "--broker", "mqtts://127.0.0.1:1", "--ca", "none.pem"], {},
     "--ca"),
    ("push-cert-missing", PUSH + ["--amount", "1", "--broker", "mqtts://127.0.0.1:1", "--ca", "ca.pem",
                                  "--cert", "none.crt", "--key", "ca.pem"], {}, "--cert"),
    ("push-key-missing", PUSH + ["--amount", "1", "--broker", "mqtts://127.0.0.1:1", "--ca", "ca.pem",
                                 "--cert", "ca.pem"], {}, "--key"),
    ("push-master-missing", _without(PUSH, "--master") + ["--amount", "1", "--master", "none.key"], {}, "--master"),
    ("push-ledger-corrupt", _without(PUSH, "--ledger") + ["--amount", "1", "--ledger", "corrupt.db"], {},
     "--ledger"),
    ("push-ledger-no-folder", _without(PUSH, "--ledger") + ["--amount", "1", "--ledger", "nope/l.db"], {},
     "--ledger"),
    ("push-client-id", PUSH + ["--amount", "1", "--client-id", "x\ny"], {}, "--client-id"),
    # status
    ("status-ledger-missing", ["status", "--ledger", "none.db"], {}, "--ledger"),
    ("status-ledger-corrupt", ["status", "--ledger", "corrupt.db"], {}, "--ledger"),
    ("status-ledger-text", ["status", "--ledger", "text.db"], {}, "--ledger"),
    ("status-ledger-folder", ["status", "--ledger", "folder"], {}, "--ledger"),
    ("status-meter", ["status", "--ledger", "l.db", "--meter", "abc"], {}, "--meter"),
    ("status-config-unknown-key", ["status", "--config", "conf/unknown_key.toml"], {}, "broker.urll"),
    # restore
    ("restore-meter", RESTORE[:2] + ["abc"] + RESTORE[3:], {}, "--meter"),
    ("restore-timeout", RESTORE + ["--timeout", "-1"], {}, "--timeout"),
    ("restore-ledger-corrupt", _without(RESTORE, "--ledger") + ["--ledger", "corrupt.db"], {}, "--ledger"),
    ("restore-ledger-missing", _without(RESTORE, "--ledger") + ["--ledger", "none.db"], {}, "--ledger"),
    # batch
    ("batch-command-unknown", _without(BATCH, "--command") + ["--command", "explode"], {}, "--command"),
    ("batch-set-mode-no-mode", _without(BATCH, "--arg"), {}, "--arg"),
    ("batch-set-mode-bad-mode", _without(BATCH, "--arg") + ["--arg", "mode=free"], {}, "--arg"),
    ("batch-force-on-negative", _without(BATCH, "--command", "--arg") + ["--command", "force_on", "--arg",
                                                                         "seconds=-5"], {}, "--arg"),
    ("batch-set-limits-order", _without(BATCH, "--command", "--arg") + ["--command", "set_limits", "--arg",
                                                                        "alarm1=5", "--arg", "alarm2=6"], {}, "--arg"),
    ("batch-trip-then-close", _without(BATCH, "--command", "--arg") + ["--command", "trip_then_close", "--arg",
                                                                       "minutes=0"], {}, "--arg"),
    ("batch-set-clock", _without(BATCH, "--command", "--arg") + ["--command", "set_clock", "--arg", "wall=-1"], {},
     "--arg"),
    ("batch-set-credit-text", _without(BATCH, "--command", "--arg") + ["--command", "set_credit", "--arg",
                                                                       "amount=lots"], {}, "--arg"),
    ("batch-arg-no-value", BATCH + ["--arg", "novalue"], {}, "--arg"),
    ("batch-arg-bad-json", BATCH + ["--arg", "tariff={bad"], {}, "--arg"),
    ("batch-csv-missing", _without(BATCH, "--csv") + ["--csv", "none.csv"], {}, "--csv"),
    ("batch-csv-bad-id", _without(BATCH, "--csv") + ["--csv", "badid.csv"], {}, "--csv"),
    ("batch-csv-duplicate", _without(BATCH, "--csv") + ["--csv", "dup.csv"], {}, "--csv"),
    ("batch-csv-empty", _without(BATCH, "--csv") + ["--csv", "empty.csv"], {}, "--csv"),
    ("batch-csv-latin1", _without(BATCH, "--csv") + ["--csv", "latin1.csv"], {}, "--csv"),
    ("batch-csv-folder", _without(BATCH, "--csv") + ["--csv", "folder"], {}, "--csv"),
    ("batch-out-no-folder", BATCH + ["--out", "nope/r.csv"], {}, "--out"),
    ("batch-out-under-a-file", BATCH + ["--out", "plain.txt/r.csv"], {}, "--out"),
    ("batch-out-folder", BATCH + ["--out", "folder"], {}, "--out"),
    ("batch-timeout", BATCH[:-1] + ["-1"], {}, "--timeout"),
    ("batch-ttl", BATCH + ["--ttl", "1"], {}, "--ttl"),
    ("batch-ledger-corrupt", _without(BATCH, "--ledger") + ["--ledger", "corrupt.db"], {}, "--ledger"),
    ("batch-broker", BATCH + ["--broker", "mqtts://127.0.0.1:0"], {}, "--broker"),
    ("batch-master-missing", _without(BATCH, "--master") + ["--master", "none.key"], {}, "--master"),
]


def _snapshot(folder):
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, folder)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = (os.stat(p).st_mode, hashlib.sha256(f.read()).hexdigest())
            else:
                out[rel] = "dir"
    return out


def test_the_table_is_large_and_covers_every_head_end_command():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert commands == {"vend", "keys", "token", "push", "status", "restore", "batch"}


@pytest.mark.parametrize("name, argv, env, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_it_and_changes_nothing(world, name, argv, env, names):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PMETER_")}
    e.update(env)
    e["PYTHONPATH"] = str(ROOT)
    if argv[0] in ("push", "batch", "restore") and "--broker" not in argv and "--config" not in argv \
            and "PMETER_BROKER" not in env:
        argv = argv + _dead_broker()
    before = _snapshot(world)
    out = subprocess.run([sys.executable, "-m", "pmeter"] + argv, cwd=str(world), env=e, capture_output=True,
                         text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert names in out.stderr, out.stderr
    assert "None" not in out.stderr, out.stderr
    assert _snapshot(world) == before, "files changed"
