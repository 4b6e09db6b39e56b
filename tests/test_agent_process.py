"""`pmeter agent --hw sim` as a real process against a real Mosquitto (TLS,
per-meter certificates, the shipped ACL), driven by `pmeter push`; and
`pmeter diag` on healthy and broken set-ups."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mosquitto import Broker, free_port, make_pki, shipped_tls

from agent.store import OsFS, Store
from headend.link import Fleet

ROOT = Path(__file__).resolve().parent.parent
MID = "000000000077"
MASTER = bytes(range(32, 64))
PY = sys.executable


def _toml(d):
    lines = []
    for section in sorted(d):
        lines.append("[%s]" % section)
        for k in sorted(d[section]):
            lines.append("%s = %s" % (k, json.dumps(d[section][k])))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent")
    pki = make_pki(tmp / "pki", clients=[MID, "headend"])
    broker = Broker(tmp / "broker",
                    **shipped_tls(pki))
    broker.start()
    fleet = Fleet(MASTER)
    (tmp / "master.hex").write_text(MASTER.hex())
    (tmp / "master.hex").chmod(0o600)
    yield tmp, pki, broker, fleet
    broker.stop()


def _config(rig, data, broker_port=None, offline=False, **extra):
    tmp, pki, broker, fleet = rig
    cfg = {
        "meter": {"id": MID},
        "account": {"opening_balance": 0, "trip_delay_s": 0},
        "tokens": {"key": fleet.meter_key(MID).hex()},
        "agent": {"data_dir": str(data)},
        "sim": {"load_w": 7200},  # 2 Wh a second
        "link": {"key": fleet.link_key(MID).hex(), "telemetry_s": 10},
        "mqtt": {"host": broker.host, "port": broker_port or broker.tls_port, "ca": str(pki.ca_cert),
                 "cert": str(pki.client_cert(MID)), "key": str(pki.client_key(MID)), "keepalive_s": 5},
    }
    if offline:
        del cfg["mqtt"]
        del cfg["link"]["key"]
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    # The keys go in their own file (agent.keys), mode 0600.
    keys = {"tokens": cfg.pop("tokens")}
    if "key" in cfg["link"]:
        keys["link"] = {"key": cfg["link"].pop("key")}
    cfg["agent"]["keys"] = _keys_file(data.parent / ("%s-keys.toml" % data.name), keys)
    path = data.parent / ("%s.toml" % data.name)
    path.write_text(_toml(cfg))
    return path


def _keys_file(path, keys):
    path.write_text(_toml(keys))
    path.chmod(0o600)
    return str(path)


class Agent:
    """A `pmeter agent` subprocess with its stderr collected in a file (one per run)."""

    runs = 0

    def __init__(self, config, *more):
        Agent.runs += 1
        self.log_path = Path("%s.%d.log" % (config, Agent.runs))
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PY, "-m", "pmeter", "agent", "--config", str(config), "--hw", "sim"] + list(more),
                                     cwd=str(ROOT), stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self):
        return self.log_path.read_text()

    def wait_log(self, text, timeout=10.0, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def term(self, timeout=10.0):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.log_file.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


def _push(rig, amount, shadow):
    tmp, pki, broker, fleet = rig
    out = subprocess.run(
        [PY, "-m", "pmeter", "push", "--meter", MID, "--amount", amount, "--wait", "--json", "--timeout", "10",
         "--broker", "mqtts://%s:%d" % (broker.host, broker.tls_port), "--ca", str(pki.ca_cert),
         "--cert", str(pki.client_cert("headend")), "--key", str(pki.client_key("headend")),
         "--master", str(tmp / "master.hex"), "--ledger", str(shadow)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def _diag(config, *more):
    out = subprocess.run([PY, "-m", "pmeter", "diag", "--config", str(config), "--json", "--timeout", "2"] + list(more),
                         cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def _stored(data):
    loads, findings, had = Store(OsFS(), str(data), MID).load()
    return loads[0].value


def test_agent_topup_sigterm_restart_keeps_balance(rig):
    tmp = rig[0]
    data = tmp / "run1"
    config = _config(rig, data)
    a = Agent(config)
    try:
        assert a.wait_log("MQTT connected"), a.log()
        res = _push(rig, "50.00", tmp / "shadow1.db")
        assert res["code"] == "accepted" and 490000 < res["balance"] <= 500000, (res, a.log())
        # Durable before acknowledged: the running agent's store already holds the credit.
        from agent import settings
        from agent.meter import Meter

        assert Meter.restore(settings.load(str(config)), _stored(data)["meter"]).balance > 490000
        assert a.wait_log("event", count=3)
        time.sleep(1.2)  # meter a little: 7200 W on a closed relay
        assert a.term() == 0, a.log()
    finally:
        a.kill()
    log = a.log()
    assert "power_down shutdown" in log and "stopped: balance" in log
    value = _stored(data)
    assert value["device"]["clean"] is True and value["device"]["reason"] == "shutdown"
    from agent import settings
    from agent.meter import Meter

    meter = Meter.restore(settings.load(str(config)), value["meter"])
    assert meter.energy_wh > 0 and 0 < meter.balance < 500000  # metered and debited
    # Restart on the same store: the balance survives and a second top-up adds to it.
    b = Agent(config)
    try:
        assert b.wait_log("MQTT connected"), b.log()
        assert "balance %d" % meter.balance in b.log()
        res = _push(rig, "1.00", tmp / "shadow1.db")
        assert res["code"] == "accepted", (res, b.log())
        assert meter.balance + 10000 - 200 <= res["balance"] <= meter.balance + 10000
        assert b.term() == 0
    finally:
        b.kill()
    code, report, _ = _diag(config)
    assert code == 0, report
    checks = {i["check"]: i for i in report["findings"]}
    assert checks["broker"]["status"] == "ok" and checks["store"]["status"] == "ok"
    assert checks["keys"]["status"] == "ok"


def test_agent_broker_down_keeps_metering(rig):
    tmp = rig[0]
    data = tmp / "offline"
    dead = free_port()  # nothing listens here: the broker is "down"
    config = _config(rig, data, broker_port=dead, account={"opening_balance": 1000000})
    a = Agent(config)
    try:
        assert a.wait_log("connect to", timeout=10), a.log()  # the transport tried and backs off
        time.sleep(2.5)
        assert a.proc.poll() is None, a.log()  # still running
        assert a.term() == 0, a.log()
    finally:
        a.kill()
    value = _stored(data)
    from agent import settings
    from agent.meter import Meter

    meter = Meter.restore(settings.load(str(config)), value["meter"])
    assert meter.energy_wh >= 2 and meter.balance < 1000000  # metered and debited offline
    assert value["link"]["outbox"]["items"]  # events wait for the broker
    code, report, _ = _diag(config)
    assert code == 1
    broker = [i for i in report["findings"] if i["check"] == "broker"][0]
    assert broker["status"] == "fail" and "cannot connect" in broker["finding"] and broker["fix"]


def test_agent_bad_config_exit_2_names_key(rig, tmp_path):
    bad = tmp_path / "bad.toml"
    keys = _keys_file(tmp_path / "keys.toml", {"tokens": {"key": "00" * 32}})
    bad.write_text('[meter]\nid = "12345"\n[agent]\nkeys = "%s"\ndata_dir = "%s"\n' % (keys, tmp_path / "d"))
    out = subprocess.run([PY, "-m", "pmeter", "agent", "--config", str(bad)], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "meter.id" in out.stderr
    assert not (tmp_path / "d").exists()  # nothing started
    bad.write_text('[meter]\nid = "000000000077"\n[agent]\nkeys = "keys.toml"\n[mqtt]\nhost = "x"\n')
    out = subprocess.run([PY, "-m", "pmeter", "agent", "--config", str(bad)], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "link.key" in out.stderr
    out = subprocess.run([PY, "-m", "pmeter", "diag", "--config", str(tmp_path / "missing.toml")], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "missing.toml" in out.stderr


def test_agent_diag_corrupt_store(rig):
    tmp = rig[0]
    data = tmp / "corrupt"
    config = _config(rig, data, offline=True)
    a = Agent(config)
    try:
        assert a.wait_log("running offline"), a.log()
        assert a.term() == 0
    finally:
        a.kill()
    code, report, _ = _diag(config)
    assert code == 0, report
    # Damage every copy of the state: diag must say so and fail.
    for name in os.listdir(data):
        if name.startswith(("state.", "ckpt.")):
            p = data / name
            raw = bytearray(p.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            p.write_bytes(bytes(raw))
    code, report, _ = _diag(config)
    assert code == 1
    store = [i for i in report["findings"] if i["check"] == "store"]
    assert any(i["status"] == "fail" and "no valid state" in i["finding"] for i in store), store
    assert any("bad_crc" in i["finding"] for i in store), store


def test_agent_dlt645_slave_over_tcp(rig):
    from hw.serial_link import SerialMaster

    tmp = rig[0]
    data = tmp / "dlt"
    port = free_port()
    config = _config(rig, data, offline=True, dlt645={"device": "tcp://127.0.0.1:%d" % port},
                     account={"opening_balance": 123400})
    a = Agent(config)
    try:
        assert a.wait_log("DL/T 645 slave"), a.log()
        with SerialMaster("socket://127.0.0.1:%d" % port, timeout=2.0) as m:
            assert m.read_address() == MID
            assert m.read_energy_wh(MID) >= 0
            from agent.dlt645 import master as M

            money = M.money_minor(m.read(MID, M.DI_REMAINING_MONEY))
            assert 120000 <= money <= 123400  # served from the live core
        assert a.term() == 0
    finally:
        a.kill()
