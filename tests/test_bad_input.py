"""Bad input over every command, as real subprocesses: the README's promise.

Each row runs one command line in a fresh directory holding the same
fixture files, and the command must exit 2 with a message naming the
argument or config key, print no traceback, and leave every file as it was
(nothing created, nothing changed, no data directory or bundle touched).

The ``headend-*`` rows are the head-end breaks issue 11 found (fixed on the
headend-cli branch; tests/test_bad_input_headend.py has more of them).
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_agent_process import _toml

ROOT = Path(__file__).resolve().parent.parent
FLASH = str(ROOT / "scripts" / "flash.sh")
PY = sys.executable
MID = "000000000001"
ZERO_KEY = "00" * 32

# A valid offline agent config; every row's config is this plus one mistake.
# Its keys live in their own file (agent.keys, mode 0600); a mistake in [tokens] or
# link.key goes into that file.
AGENT_CONFIG = {"meter": {"id": MID}, "agent": {"data_dir": "data", "keys": "keys.toml"}}
KEYS = {"tokens": {"key": ZERO_KEY}}
MQTT = {"host": "127.0.0.1"}
LINK = {"key": "11" * 32}

SIM_TOML = """\
[meter]
id = "%s"
[account]
opening_balance = 500000
""" % MID

SCENARIO_TOML = """\
[run]
meters = 2
days = 1
"""

# Config mistakes, each a (name, tables merged into AGENT_CONFIG, the key the message must name).
# Every one is a row for `pmeter agent`, `pmeter diag` and `flash.sh pi --out`.
CONFIG_MISTAKES = [
    ("meter-id-letters", {"meter": {"id": "abc"}}, "meter.id"),
    ("meter-id-int", {"meter": {"id": 1}}, "meter.id"),
    ("meter-id-short", {"meter": {"id": "1234"}}, "meter.id"),
    ("unknown-section", {"bogus": {"x": 1}}, "bogus"),
    ("unknown-key", {"relay": {"bogus": 1}}, "bogus"),
    ("tokens-key-short", {"tokens": {"key": "abcd"}}, "tokens.key"),
    ("tokens-key-not-hex", {"tokens": {"key": "zz" * 32}}, "tokens.key"),
    ("pulse-ms-negative", {"relay": {"pulse_ms": -5}}, "relay.pulse_ms"),
    ("account-mode", {"account": {"mode": "bogus"}}, "account.mode"),
    ("alarm-order", {"account": {"alarm1": 10, "alarm2": 20}}, "alarm"),
    ("pin-twice", {"hw": {"pulse_pin": 17, "relay_set_pin": 17}}, "pin"),
    ("mqtt-port", {"mqtt": dict(MQTT, port=70000), "link": LINK}, "mqtt.port"),
    ("mqtt-no-link-key", {"mqtt": MQTT}, "link.key"),
    ("tick-ms-zero", {"agent": {"tick_ms": 0}}, "agent.tick_ms"),
    ("load-w-negative", {"sim": {"load_w": -1}}, "sim.load_w"),
    ("tariff-kind", {"tariff": {"kind": "bogus"}}, "tariff.kind"),
    ("string-for-int", {"meter": {"constant": "many"}}, "meter.constant"),
]
# Mistakes only `pmeter agent` can see (files and devices on this machine).
AGENT_MISTAKES = {
    "hw-mpy": {"agent": {"hw": "mpy"}},
    "data-dir-under-file": {"agent": {"data_dir": "empty.toml/data"}},
    "keypad-missing": {"agent": {"keypad": "/dev/pmeter-no-such-keypad"}},
    "dlt645-missing": {"dlt645": {"device": "/dev/pmeter-no-such-rs485"}},
    "dlt645-bad-tcp": {"dlt645": {"device": "tcp://no-port"}},
    "mqtt-ca-missing": {"mqtt": dict(MQTT, ca="nope-ca.pem"), "link": LINK},
    # agent.toml stands in for a PEM file that exists: only the missing one must be named.
    "mqtt-cert-missing": {"mqtt": dict(MQTT, ca="agent.toml", cert="nope-cert.pem", key="agent.toml"), "link": LINK},
    "mqtt-key-missing": {"mqtt": dict(MQTT, ca="agent.toml", cert="agent.toml", key="nope-key.pem"), "link": LINK},
}


def _config_rows():
    rows = []
    for name, extra, key in CONFIG_MISTAKES:
        rows.append(("agent-config-" + name, ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:%s}" % name], key))
        rows.append(("diag-config-" + name, ["pmeter", "diag", "--config", "{cfg:%s}" % name], key))
        rows.append(("flash-pi-config-" + name, ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{cfg:%s}" % name,
                                                 "--keys", "{keys:%s}" % name], key))
    return rows


# (row id, argv, text the message must contain).  "pmeter" runs `python -m
# pmeter`, "flash" runs scripts/flash.sh; {tmp} is the row's directory and
# {cfg:NAME} an agent config with CONFIG_MISTAKES[NAME] appended.
ROWS = [
    # ------------------------------------------------------------ pmeter agent
    ("agent-no-config", ["pmeter", "agent"], "--config"),
    ("agent-config-missing", ["pmeter", "agent", "--config", "{tmp}/nope.toml"], "--config"),
    ("agent-config-directory", ["pmeter", "agent", "--config", "{tmp}/adir"], "--config"),
    ("agent-config-non-utf8", ["pmeter", "agent", "--config", "{tmp}/latin1.toml"], "--config"),
    ("agent-config-bad-toml", ["pmeter", "agent", "--config", "{tmp}/broken.toml"], "--config"),
    ("agent-config-duplicate-key", ["pmeter", "agent", "--config", "{tmp}/dupkey.toml"], "--config"),
    ("agent-config-empty", ["pmeter", "agent", "--config", "{tmp}/empty.toml"], "agent.keys"),
    ("agent-hw-bogus", ["pmeter", "agent", "--hw", "bogus", "--config", "{tmp}/agent.toml"], "--hw"),
    ("agent-hw-board", ["pmeter", "agent", "--config", "{cfg:hw-mpy}"], "agent.hw"),
    ("agent-unknown-option", ["pmeter", "agent", "--config", "{tmp}/agent.toml", "--bogus"], "--bogus"),
    ("agent-data-under-a-file", ["pmeter", "agent", "--hw", "sim", "--config", "{tmp}/agent.toml", "--data", "{tmp}/empty.toml/data"], "--data"),
    ("agent-data-dir-under-a-file", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:data-dir-under-file}"], "agent.data_dir"),
    ("agent-keypad-missing", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:keypad-missing}"], "agent.keypad"),
    ("agent-dlt645-missing", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:dlt645-missing}"], "dlt645.device"),
    ("agent-dlt645-bad-tcp", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:dlt645-bad-tcp}"], "dlt645.device"),
    ("agent-mqtt-ca-missing", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:mqtt-ca-missing}"], "mqtt.ca"),
    ("agent-mqtt-cert-missing", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:mqtt-cert-missing}"], "mqtt.cert"),
    ("agent-mqtt-key-missing", ["pmeter", "agent", "--hw", "sim", "--config", "{cfg:mqtt-key-missing}"], "mqtt.key"),
    # ------------------------------------------------------------ pmeter diag
    ("diag-no-config", ["pmeter", "diag"], "--config"),
    ("diag-config-missing", ["pmeter", "diag", "--config", "{tmp}/nope.toml"], "--config"),
    ("diag-config-non-utf8", ["pmeter", "diag", "--config", "{tmp}/latin1.toml"], "--config"),
    ("diag-config-bad-toml", ["pmeter", "diag", "--config", "{tmp}/broken.toml"], "--config"),
    ("diag-timeout-zero", ["pmeter", "diag", "--config", "{tmp}/agent.toml", "--timeout", "0"], "--timeout"),
    ("diag-timeout-huge", ["pmeter", "diag", "--config", "{tmp}/agent.toml", "--timeout", "1000"], "--timeout"),
    ("diag-timeout-text", ["pmeter", "diag", "--config", "{tmp}/agent.toml", "--timeout", "soon"], "--timeout"),
    ("diag-timeout-nan", ["pmeter", "diag", "--config", "{tmp}/agent.toml", "--timeout", "nan"], "--timeout"),
    ("diag-unknown-option", ["pmeter", "diag", "--config", "{tmp}/agent.toml", "--bogus"], "--bogus"),
    # ------------------------------------------------------------ pmeter sim run
    ("sim-meters-zero", ["pmeter", "sim", "run", "--meters", "0"], "--meters"),
    ("sim-meters-negative", ["pmeter", "sim", "run", "--meters", "-3"], "--meters"),
    ("sim-meters-text", ["pmeter", "sim", "run", "--meters", "many"], "--meters"),
    ("sim-meters-huge", ["pmeter", "sim", "run", "--meters", "100001"], "--meters"),
    ("sim-days-zero", ["pmeter", "sim", "run", "--days", "0"], "--days"),
    ("sim-days-huge", ["pmeter", "sim", "run", "--days", "3661"], "--days"),
    ("sim-days-float", ["pmeter", "sim", "run", "--days", "1.5"], "--days"),
    ("sim-seed-text", ["pmeter", "sim", "run", "--seed", "x"], "--seed"),
    ("sim-step-zero", ["pmeter", "sim", "run", "--step", "0"], "--step"),
    ("sim-step-huge", ["pmeter", "sim", "run", "--step", "86401"], "--step"),
    ("sim-start-words", ["pmeter", "sim", "run", "--start", "yesterday"], "--start"),
    ("sim-start-month-13", ["pmeter", "sim", "run", "--start", "2026-13-01 00:00"], "--start"),
    ("sim-runtime-bogus", ["pmeter", "sim", "run", "--runtime", "jython"], "--runtime"),
    ("sim-customers-bogus", ["pmeter", "sim", "run", "--customers", "rich"], "--customers"),
    ("sim-config-missing", ["pmeter", "sim", "run", "--config", "{tmp}/nope.toml"], "nope.toml"),
    ("sim-config-directory", ["pmeter", "sim", "run", "--config", "{tmp}/adir"], "adir"),
    ("sim-config-non-utf8", ["pmeter", "sim", "run", "--config", "{tmp}/latin1.toml"], "latin1.toml"),
    ("sim-config-bad-toml", ["pmeter", "sim", "run", "--config", "{tmp}/broken.toml"], "broken.toml"),
    ("sim-config-bad-value", ["pmeter", "sim", "run", "--config", "{tmp}/sim-bad.toml"], "relay.pulse_ms"),
    ("sim-config-unknown-key", ["pmeter", "sim", "run", "--config", "{tmp}/sim-unknown.toml"], "meter.bogus"),
    ("sim-scenario-missing", ["pmeter", "sim", "run", "--scenario", "{tmp}/nope.toml"], "nope.toml"),
    ("sim-scenario-non-utf8", ["pmeter", "sim", "run", "--scenario", "{tmp}/latin1.toml"], "latin1.toml"),
    ("sim-scenario-bad-toml", ["pmeter", "sim", "run", "--scenario", "{tmp}/broken.toml"], "broken.toml"),
    ("sim-scenario-bad-value", ["pmeter", "sim", "run", "--scenario", "{tmp}/scenario-bad.toml"], "run.meters"),
    ("sim-report-under-a-file", ["pmeter", "sim", "run", "--days", "1", "--report", "{tmp}/empty.toml/report"], "--report"),
    ("sim-report-bad-start", ["pmeter", "sim", "run", "--start", "never", "--report", "{tmp}/report"], "--start"),
    ("sim-live-seconds-zero", ["pmeter", "sim", "run", "--live-seconds", "0"], "--live-seconds"),
    ("sim-headend-workers-zero", ["pmeter", "sim", "run", "--headend-workers", "0"], "--headend-workers"),
    ("sim-topup-rate-zero", ["pmeter", "sim", "run", "--topup-rate", "0"], "--topup-rate"),
    ("sim-unknown-option", ["pmeter", "sim", "run", "--bogus"], "--bogus"),
    ("sim-no-subcommand", ["pmeter", "sim"], "SUBCOMMAND"),
    ("sim-unknown-subcommand", ["pmeter", "sim", "walk"], "walk"),
    ("pmeter-unknown-command", ["pmeter", "fly"], "fly"),
    ("pmeter-no-command", ["pmeter"], "COMMAND"),
    # ------------------------------------------------------------ pmeter sim run --live
    ("live-scheme", ["pmeter", "sim", "run", "--live", "ftp://127.0.0.1:1883"], "--live"),
    ("live-no-host", ["pmeter", "sim", "run", "--live", "mqtt://"], "--live"),
    ("live-port-text", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:port"], "--live"),
    ("live-port-huge", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:99999"], "--live"),
    ("live-not-a-url", ["pmeter", "sim", "run", "--live", "broker"], "--live"),
    ("live-meters-zero", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:1", "--meters", "0"], "--meters"),
    ("live-seconds-text", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:1", "--live-seconds", "x"], "--live-seconds"),
    ("live-workers-huge", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:1", "--headend-workers", "65"], "--headend-workers"),
    ("live-rate-huge", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:1", "--topup-rate", "10001"], "--topup-rate"),
    ("live-config-bad-value", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:1", "--config", "{tmp}/sim-bad.toml"], "relay.pulse_ms"),
    ("live-config-non-utf8", ["pmeter", "sim", "run", "--live", "mqtt://127.0.0.1:1", "--config", "{tmp}/latin1.toml"], "latin1.toml"),
    # ------------------------------------------------------------ pmeter token decode
    ("decode-token-not-hex", ["pmeter", "token", "decode", "zzzz", "--meter", MID, "--meter-key", ZERO_KEY], "token"),
    ("decode-no-token", ["pmeter", "token", "decode", "--meter", MID, "--meter-key", ZERO_KEY], "token"),
    ("decode-meter-letters", ["pmeter", "token", "decode", "123456789", "--meter", "abc", "--meter-key", ZERO_KEY], "--meter"),
    ("decode-meter-short", ["pmeter", "token", "decode", "123456789", "--meter", "123", "--meter-key", ZERO_KEY], "--meter"),
    ("decode-no-meter", ["pmeter", "token", "decode", "123456789", "--meter-key", ZERO_KEY], "--meter"),
    ("decode-key-short", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", "abcd"], "--meter-key"),
    ("decode-key-not-hex", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", "zz" * 32], "--meter-key"),
    ("decode-revision-text", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", ZERO_KEY, "--revision", "x"], "--revision"),
    ("decode-revision-negative", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", ZERO_KEY, "--revision", "-1"], "--revision"),
    ("decode-count-negative", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", ZERO_KEY, "--count", "-1"], "--count"),
    ("decode-count-text", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", ZERO_KEY, "--count", "x"], "--count"),
    ("decode-divider-zero", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", ZERO_KEY, "--divider", "0"], "--divider"),
    ("decode-wall-text", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--meter-key", ZERO_KEY, "--wall", "noon"], "--wall"),
    ("decode-master-missing", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--master", "{tmp}/nope.key"], "nope.key"),
    ("decode-master-not-a-key", ["pmeter", "token", "decode", "123456789", "--meter", MID, "--master", "{tmp}/empty.toml"], "empty.toml"),
    # ------------------------------------------------------------ scripts/flash.sh
    ("flash-no-target", ["flash"], "flash.sh pi"),
    ("flash-unknown-target", ["flash", "esp8266"], "unknown target 'esp8266'"),
    ("flash-pi-no-host", ["flash", "pi", "--config", "{tmp}/agent.toml"], "USER@HOST"),
    ("flash-pi-host-without-user", ["flash", "pi", "meter-12.local", "--config", "{tmp}/agent.toml"], "USER@HOST"),
    ("flash-pi-no-config", ["flash", "pi", "--out", "{tmp}/bundle"], "--config"),
    ("flash-pi-config-missing", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/nope.toml"], "--config"),
    ("flash-pi-config-json", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/agent.json"], "--config"),
    ("flash-pi-config-non-utf8", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/latin1.toml"], "latin1.toml"),
    ("flash-pi-config-bad-toml", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/broken.toml"], "broken.toml"),
    ("flash-pi-keys-missing", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/agent.toml", "--keys", "{tmp}/nope.keys"], "--keys"),
    ("flash-pi-keys-directory", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/agent.toml", "--keys", "{tmp}/adir"], "--keys"),
    ("flash-pi-out-no-dir", ["flash", "pi", "--config", "{tmp}/agent.toml", "--out"], "--out"),
    ("flash-pi-out-is-a-file", ["flash", "pi", "--out", "{tmp}/empty.toml", "--config", "{tmp}/agent.toml"], "not a directory"),
    ("flash-pi-out-holds-other-files", ["flash", "pi", "--out", "{tmp}/adir", "--config", "{tmp}/agent.toml"], "not empty"),
    ("flash-pi-out-and-host", ["flash", "pi", "pi@meter-12.local", "--out", "{tmp}/bundle", "--config", "{tmp}/agent.toml"], "--out"),
    ("flash-pi-out-and-bundle", ["flash", "pi", "--out", "{tmp}/bundle", "--bundle", "{tmp}/b2", "--config", "{tmp}/agent.toml"], "--bundle"),
    ("flash-pi-port", ["flash", "pi", "pi@meter-12.local", "--port", "/dev/ttyACM0", "--config", "{tmp}/agent.toml"], "--port"),
    ("flash-pi-unknown-option", ["flash", "pi", "pi@meter-12.local", "--bogus"], "--bogus"),
    ("flash-pi-bad-config-keeps-old-bundle", ["flash", "pi", "--out", "{tmp}/oldbundle", "--config", "{cfg:meter-id-letters}",
                                              "--keys", "{keys:meter-id-letters}"], "meter.id"),
    ("flash-pi-keys-file-not-given", ["flash", "pi", "--out", "{tmp}/bundle", "--config", "{tmp}/agent.toml"], "--keys"),
    ("flash-pi-bad-config-keeps-old-bundle-dry-run",
     ["flash", "pi", "pi@meter-12.local", "--dry-run", "--bundle", "{tmp}/oldbundle", "--config", "{tmp}/broken.toml"], "broken.toml"),
    ("flash-mpy-config-missing", ["flash", "mpy", "--bundle", "{tmp}/mb", "--config", "{tmp}/nope.json"], "--config"),
    ("flash-mpy-config-bad-json", ["flash", "mpy", "--bundle", "{tmp}/mb", "--config", "{tmp}/broken.json"], "broken.json"),
    ("flash-mpy-config-bad-value", ["flash", "mpy", "--bundle", "{tmp}/mb", "--config", "{tmp}/bad-id.json"], "meter.id"),
    ("flash-mpy-config-not-a-table", ["flash", "mpy", "--bundle", "{tmp}/mb", "--config", "{tmp}/list.json"], "list.json"),
    ("flash-mpy-bad-config-keeps-old-bundle", ["flash", "mpy", "--bundle", "{tmp}/oldmpy", "--config", "{tmp}/bad-id.json"], "meter.id"),
    ("flash-mpy-out", ["flash", "mpy", "--out", "{tmp}/mb", "--config", "{tmp}/agent.json"], "--out"),
    ("flash-mpy-port-no-device", ["flash", "mpy", "--config", "{tmp}/agent.json", "--port"], "--port"),
    ("flash-mpy-keys-no-file", ["flash", "mpy", "--config", "{tmp}/agent.json", "--keys"], "--keys"),
    ("flash-mpy-no-config", ["flash", "mpy", "--bundle", "{tmp}/mb"], "--config"),
    ("flash-firmware-no-port", ["flash", "firmware", "--out", "{tmp}/fw"], "unix32"),
    ("flash-firmware-unknown-port", ["flash", "firmware", "esp8266", "--out", "{tmp}/fw"], "'esp8266'"),
    ("flash-firmware-no-out", ["flash", "firmware", "unix32", "--micropython", "{tmp}/adir"], "--out"),
    ("flash-firmware-source-missing", ["flash", "firmware", "unix32", "--out", "{tmp}/fw", "--micropython", "{tmp}/nope"], "--micropython"),
    ("flash-firmware-source-not-micropython", ["flash", "firmware", "unix32", "--out", "{tmp}/fw", "--micropython", "{tmp}/adir"], "--micropython"),
    ("flash-firmware-source-not-a-tarball", ["flash", "firmware", "unix32", "--out", "{tmp}/fw", "--micropython", "{tmp}/agent.toml"], "--micropython"),
    ("flash-firmware-unknown-option", ["flash", "firmware", "unix32", "--bogus"], "--bogus"),
    # ------------------------------------------------------------ head-end: keys
    ("keys-no-subcommand", ["pmeter", "keys"], "init,derive"),
    ("keys-init-exists", ["pmeter", "keys", "init", "--master", "{tmp}/master.key"], "master.key"),
    ("keys-derive-meter-letters", ["pmeter", "keys", "derive", "--master", "{tmp}/master.key", "--meter", "abc"], "--meter"),
    ("keys-derive-meter-13-digits", ["pmeter", "keys", "derive", "--master", "{tmp}/master.key", "--meter", "1234567890123"], "--meter"),
    ("keys-derive-no-meter", ["pmeter", "keys", "derive", "--master", "{tmp}/master.key"], "--meter"),
    ("keys-derive-revision-negative", ["pmeter", "keys", "derive", "--master", "{tmp}/master.key", "--meter", MID, "--revision", "-1"], "--revision"),
    ("keys-derive-revision-text", ["pmeter", "keys", "derive", "--master", "{tmp}/master.key", "--meter", MID, "--revision", "x"], "--revision"),
    ("keys-derive-divider-zero", ["pmeter", "keys", "derive", "--master", "{tmp}/master.key", "--meter", MID, "--divider", "0"], "--divider"),
    ("keys-derive-master-missing", ["pmeter", "keys", "derive", "--master", "{tmp}/nope.key", "--meter", MID], "nope.key"),
    ("keys-derive-master-garbage", ["pmeter", "keys", "derive", "--master", "{tmp}/empty.toml", "--meter", MID], "empty.toml"),
    # ------------------------------------------------------------ head-end: vend
    ("vend-no-amount", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID], "--amount"),
    ("vend-no-meter", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--amount", "5"], "--meter"),
    ("vend-meter-letters", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", "abc", "--amount", "5"], "--meter"),
    ("vend-amount-text", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "five"], "--amount"),
    ("vend-amount-negative", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "-5"], "--amount"),
    ("vend-amount-zero", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "0"], "--amount"),
    ("vend-amount-5-decimals", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "1.00001"], "--amount"),
    ("vend-amount-nan", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "nan"], "--amount"),
    ("vend-ttl-zero", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "5", "--ttl", "0"], "--ttl"),
    ("vend-ttl-text", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "5", "--ttl", "x"], "--ttl"),
    ("vend-divider-zero", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "5", "--keypad", "--divider", "0"], "--divider"),
    ("vend-master-missing", ["pmeter", "vend", "--master", "{tmp}/nope.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "5"], "nope.key"),
    # ------------------------------------------------------------ head-end: batch
    ("batch-csv-missing", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/nope.csv", "--command", "trip"], "nope.csv"),
    ("batch-no-command", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv"], "--command"),
    ("batch-command-bogus", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "explode"], "explode"),
    ("batch-arg-no-equals", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "trip", "--arg", "x"], "--arg"),
    ("batch-ttl-zero", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "trip", "--ttl", "0"], "--ttl"),
    ("batch-master-missing", ["pmeter", "batch", "--master", "{tmp}/nope.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "trip"], "nope.key"),
    # ------------------------------------------------------------ head-end: push / status / restore
    ("push-no-meter", ["pmeter", "push", "--master", "{tmp}/master.key", "--amount", "5"], "--meter"),
    ("push-meter-letters", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", "abc", "--amount", "5"], "--meter"),
    ("push-no-amount", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID], "--amount"),
    ("push-amount-text", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID, "--amount", "five"], "--amount"),
    ("push-amount-negative", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID, "--amount", "-5"], "--amount"),
    ("push-timeout-text", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID, "--amount", "5", "--timeout", "x"], "--timeout"),
    ("push-broker-no-port", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID, "--amount", "5", "--broker", "localhost"], "--broker"),
    ("push-ca-missing", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID, "--amount", "5", "--broker", "mqtts://127.0.0.1:1", "--ca", "{tmp}/nope.pem"], "--ca"),
    ("status-meter-letters", ["pmeter", "status", "--meter", "abc"], "--meter"),
    ("status-unknown-option", ["pmeter", "status", "--bogus"], "--bogus"),
    ("restore-no-meter", ["pmeter", "restore"], "--meter"),
    ("restore-meter-letters", ["pmeter", "restore", "--meter", "abc"], "--meter"),
    ("restore-timeout-text", ["pmeter", "restore", "--meter", MID, "--timeout", "x"], "--timeout"),
    ("restore-no-shadow", ["pmeter", "restore", "--meter", MID, "--yes", "--shadow", "{tmp}/nope.db"], "--shadow"),
]

# Broke the promise before the headend-cli branch was merged.
HEADEND_FIXED = [
    ("headend-vend-amount-huge", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--meter", MID, "--amount", "99999999999"], "--amount"),
    ("headend-vend-ledger-unwritable", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/empty.toml/l.sqlite", "--meter", MID, "--amount", "5"], "--ledger"),
    ("headend-keys-init-unwritable", ["pmeter", "keys", "init", "--master", "{tmp}/empty.toml/master.key"], "--master"),
    ("headend-batch-out-unwritable", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "trip", "--out", "{tmp}/empty.toml/out.csv"], "--out"),
    ("headend-batch-set-mode-no-mode", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "set_mode"], "mode"),
    ("headend-batch-set-mode-bogus", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "set_mode", "--arg", "mode=free"], "mode"),
    ("headend-batch-force-on-negative", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/meters.csv", "--command", "force_on", "--arg", "seconds=-5"], "seconds"),
    ("headend-batch-bad-meter-ids", ["pmeter", "batch", "--master", "{tmp}/master.key", "--ledger", "{tmp}/l.sqlite", "--csv", "{tmp}/bad-meters.csv", "--command", "trip"], "meter"),
    ("headend-push-timeout-negative", ["pmeter", "push", "--master", "{tmp}/master.key", "--meter", MID, "--amount", "5", "--wait", "--timeout", "-1"], "--timeout"),
    ("headend-status-corrupt-shadow", ["pmeter", "status", "--shadow", "{tmp}/empty.toml"], "--shadow"),
    ("headend-vend-corrupt-ledger", ["pmeter", "vend", "--master", "{tmp}/master.key", "--ledger", "{tmp}/agent.toml", "--meter", MID, "--amount", "5"], "--ledger"),
]

ALL_ROWS = ROWS + _config_rows() + HEADEND_FIXED
PARAMS = [pytest.param(argv, needle, id=rid) for rid, argv, needle in ALL_ROWS]

MASTER_HEX = bytes(range(32)).hex()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The fixture files every row starts from (copied into the row's directory)."""
    t = tmp_path_factory.mktemp("bad-input-template")
    (t / "agent.toml").write_text(_toml(AGENT_CONFIG))
    (t / "keys.toml").write_text(_toml(KEYS))
    os.chmod(t / "keys.toml", 0o600)
    (t / "agent.json").write_text('{"meter": {"id": "%s"}, "tokens": {"key": "%s"}}' % (MID, ZERO_KEY))
    (t / "bad-id.json").write_text('{"meter": {"id": "abc"}, "tokens": {"key": "%s"}}' % ZERO_KEY)
    (t / "broken.json").write_text('{"meter": ')
    (t / "list.json").write_text("[1, 2]")
    (t / "sim.toml").write_text(SIM_TOML)
    (t / "sim-bad.toml").write_text(SIM_TOML + "[relay]\npulse_ms = -5\n")
    (t / "sim-unknown.toml").write_text(SIM_TOML.replace("[account]", "bogus = 1\n[account]"))
    (t / "scenario-bad.toml").write_text(SCENARIO_TOML.replace("meters = 2", "meters = -2"))
    (t / "latin1.toml").write_bytes('[meter]\nid = "000000000001"\n# Zähler\n'.encode("latin-1"))
    (t / "broken.toml").write_text("[meter\nid = ")
    (t / "dupkey.toml").write_text('[meter]\nid = "%s"\nid = "%s"\n' % (MID, MID))
    (t / "empty.toml").write_text("")
    (t / "adir").mkdir()
    (t / "adir" / "keep.txt").write_text("not a bundle\n")
    (t / "master.key").write_text(MASTER_HEX + "\n")
    os.chmod(t / "master.key", 0o600)
    (t / "meters.csv").write_text("meter_id\n%s\n000000000002\n" % MID)
    (t / "bad-meters.csv").write_text("meter_id\nabc\n12\n")
    for old in ("oldbundle/payload", "oldmpy"):
        (t / old).mkdir(parents=True)
        (t / old / "MANIFEST.sha256").write_text("0" * 64 + "  config.toml\n")
        (t / old / "config.toml").write_text("# the previous bundle's config\n")
    return t


def _write_config(name, tmp):
    """Write cfg-NAME.toml and its keys file cfg-NAME-keys.toml (0600) into tmp; returns the config's path."""
    mistake = AGENT_MISTAKES.get(name) or {n: m for n, m, _k in CONFIG_MISTAKES}[name]
    cfg = {section: dict(table) for section, table in AGENT_CONFIG.items()}
    cfg.update({section: dict(table) for section, table in KEYS.items()})
    for section, table in mistake.items():
        cfg.setdefault(section, {}).update(table)
    keys = {"tokens": cfg.pop("tokens")}
    if "key" in cfg.get("link", {}):
        keys["link"] = {"key": cfg["link"].pop("key")}
        if not cfg["link"]:
            del cfg["link"]
    keys_path = tmp / ("cfg-%s-keys.toml" % name)
    keys_path.write_text(_toml(keys))
    keys_path.chmod(0o600)
    cfg["agent"]["keys"] = keys_path.name
    path = tmp / ("cfg-%s.toml" % name)
    path.write_text(_toml(cfg))
    return path


def _snapshot(root):
    """{relative path: (mode, sha256 or 'dir')} of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root)] = (os.stat(p).st_mode, "dir")
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (os.stat(p).st_mode, hashlib.sha256(fh.read()).hexdigest())
    return out


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMETER_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _expand(argv, tmp):
    out = []
    for a in argv:
        if a.startswith("{cfg:"):
            a = str(_write_config(a[5:-1], tmp))
        elif a.startswith("{keys:"):
            a = str(tmp / ("cfg-%s-keys.toml" % a[6:-1]))
        out.append(a.replace("{tmp}", str(tmp)))
    if out and out[0] == "pmeter":
        return [PY, "-m", "pmeter"] + out[1:]
    return ["bash", FLASH] + out[1:]


@pytest.mark.parametrize("argv,needle", PARAMS)
def test_bad_input_exits_2_names_the_argument_and_changes_nothing(template, tmp_path, argv, needle):
    work = tmp_path / "w"
    shutil.copytree(template, work)
    cmd = _expand(argv, work)
    before = _snapshot(work)
    r = subprocess.run(cmd, cwd=str(work), env=_env(), capture_output=True, text=True, timeout=60)
    after = _snapshot(work)
    shown = "%s\nexit %d\nstdout: %s\nstderr: %s" % (" ".join(cmd), r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr + r.stdout, shown
    assert r.returncode == 2, shown
    assert needle in r.stderr, shown
    assert after == before, "files changed: %s\n%s" % (
        sorted(set(after.items()) ^ set(before.items())), shown)


def test_the_table_covers_every_command_with_enough_rows():
    rows = ALL_ROWS
    assert len(rows) >= 150
    assert len({r[0] for r in rows}) == len(rows)  # ids are unique
    commands = set()
    for _rid, argv, _needle in rows:
        commands.add(" ".join(argv[:3]) if argv[:2] == ["pmeter", "sim"] and "--live" not in argv else
                     "sim run --live" if "--live" in argv else argv[1] if argv[0] == "pmeter" and len(argv) > 1 else argv[0])
    for name in ("pmeter sim run", "sim run --live", "agent", "diag", "token", "flash", "vend", "push", "status",
                 "restore", "batch", "keys"):
        assert name in commands, name


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["pi", "--help"]])
def test_flash_help_prints_the_usage_and_exits_0(argv):
    r = subprocess.run(["bash", FLASH] + argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "unknown target" not in r.stderr, r.stderr
    assert "flash.sh pi --out DIR" in r.stdout and "Exit codes" in r.stdout
