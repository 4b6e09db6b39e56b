"""The head-end commands as an operator runs them (real `pmeter` processes,
one headend.toml), against a real Mosquitto with the shipped TLS config and
ACL and live agents (LinkedMeter on a durable Device): batch delivered to
several meters with one offline, push then status, a refused top-up
re-vended, and a replaced ledger that must not lose paid top-ups silently."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from apps import fleet_app
from mosquitto import make_pki, shipped_tls
from test_link_restore import DeviceAgent

from agent import results
from agent.link.backoff import Backoff
from headend.ledger import Ledger
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS, PahoTransport, mono_ms, wall_s

ROOT = Path(__file__).resolve().parent.parent
MASTER = bytes(range(32))
M1, M2, M3 = "000000000101", "000000000102", "000000000103"


class LiveMeter:
    """A live agent: LinkedMeter on a Device with its store, over paho with its own certificate."""

    def __init__(self, broker, pki, meter_id, store_dir, account=None):
        app = fleet_app(Fleet(MASTER), meter_id, store_dir, account)
        self.device, self.linked = app.device, app.linked
        self.transport = PahoTransport(
            self.linked, broker.host, broker.tls_port, "meter-" + meter_id,
            tls=TLS(pki.ca_cert, pki.client_cert(meter_id), pki.client_key(meter_id)),
            keepalive=5, backoff=Backoff(base_ms=50, cap_ms=400, stable_ms=1000), log=lambda m: None)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    wait = staticmethod(DeviceAgent.wait)  # polls a condition, 5 s at most

    @property
    def meter(self):
        return self.device.meter

    def _run(self):
        self.linked.boot(wall_s(), mono_ms())
        while not self.stop.is_set():
            self.transport.step(0.01)

    def start(self):
        self.thread.start()
        assert self.wait(lambda: self.transport.connected)
        return self

    def halt(self):
        if not self.stop.is_set():
            self.stop.set()
            self.thread.join(5)
            self.transport.close()


@pytest.fixture
def rig(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki", clients=[M1, M2, M3, "headend"])
    broker = mosquitto_factory(**shipped_tls(pki))
    (tmp_path / "master.key").write_text(MASTER.hex())
    (tmp_path / "master.key").chmod(0o600)
    # Paths relative to the config file, as an operator writes them.
    os.symlink(str(pki.client_cert("headend")), str(tmp_path / "headend.crt"))
    os.symlink(str(pki.client_key("headend")), str(tmp_path / "headend.key"))
    (tmp_path / "headend.toml").write_text(
        '[broker]\nurl = "mqtts://%s:%d"\nca = "%s"\ncert = "headend.crt"\nkey = "headend.key"\n'
        '[keys]\nmaster = "master.key"\n[ledger]\npath = "pmeter-ledger.sqlite"\n'
        % (broker.host, broker.tls_port, pki.ca_cert))
    meters = []

    def start(meter_id, **kw):
        m = LiveMeter(broker, pki, meter_id, tmp_path / ("store-" + meter_id), **kw).start()
        meters.append(m)
        return m

    yield tmp_path, broker, pki, start
    for m in meters:
        m.halt()


def pmeter(cwd, *argv, env=None):
    """Run the real `pmeter` in ``cwd`` (its headend.toml): (exit code, stdout, stderr)."""
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("PMETER_"):
            del e[k]
    e.update(env or {})
    out = subprocess.run([sys.executable, "-m", "pmeter"] + list(argv), cwd=str(cwd), capture_output=True,
                         text=True, timeout=120, env=dict(e, PYTHONPATH=str(ROOT)))
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stdout, out.stderr


def test_batch_delivers_to_every_online_meter_and_lists_the_offline_one_as_pending(rig):
    tmp, broker, pki, start = rig
    a, b = start(M1), start(M2)  # M3 stays offline
    (tmp / "meters.csv").write_text("meter_id,name\n%s,a\n%s,b\n%s,c\n" % (M1, M2, M3))
    code, out, err = pmeter(tmp, "batch", "--csv", "meters.csv", "--command", "set_mode", "--arg", "mode=postpaid",
                            "--timeout", "3", "--out", "result.csv", "--json")
    assert code == 1, (out, err)  # not every meter answered
    res = json.loads(out)
    assert [(r["meter_id"], r["result"]) for r in res["results"]] == [
        (M1, results.ACCEPTED), (M2, results.ACCEPTED), (M3, "pending")]
    assert (res["accepted"], res["refused"], res["pending"]) == (2, 0, 1)
    assert a.meter.payment_mode == "postpaid" and b.meter.payment_mode == "postpaid"
    assert "pending" in (tmp / "result.csv").read_text()
    # The text table says what is true about the offline meter.
    code, out, _ = pmeter(tmp, "batch", "--csv", "meters.csv", "--command", "set_mode", "--arg", "mode=prepaid",
                          "--timeout", "2")
    assert code == 1 and "2 accepted, 0 refused, 1 pending" in out and "never receives it" in out
    assert a.meter.payment_mode == "prepaid"
    # A push to the offline meter says what is true, and claims no later delivery.
    code, out, err = pmeter(tmp, "push", "--meter", M3, "--amount", "1", "--wait", "--timeout", "1")
    assert code == 1 and "published once and is not re-sent" in out and "never receives it" in out, (out, err)
    assert "at most once when it comes back" not in out
    # Every command went through the one ledger.
    assert [(t["kind"], t["command"]) for t in Ledger(str(tmp / "pmeter-ledger.sqlite")).tokens(M3)] == [
        ("command", "set_mode"), ("command", "set_mode"), ("topup", None)]


def test_push_then_status_shows_what_the_meter_reported_in_cny_with_ages(rig):
    tmp, broker, pki, start = rig
    a = start(M1)
    assert a.wait(lambda: a.meter.relay_state == "tripped_arrears")  # no credit: cut
    code, out, err = pmeter(tmp, "push", "--meter", M1, "--amount", "51.9986", "--wait")
    assert code == 0, err
    assert "accepted: balance 51.9986 CNY" in out
    code, out, err = pmeter(tmp, "status", "--meter", M1)
    assert code == 0, err
    assert "51.9986 CNY" in out and "connected" in out and "tripped_arrears" not in out, out
    assert "s ago" in out and "None" not in out and "519986" not in out, out
    rows = json.loads(pmeter(tmp, "status", "--json")[1])
    assert rows[0]["state"]["bal"] == 519986 and rows[0]["reconcile"]["problems"] == []


def test_a_refused_topup_stays_refused_and_is_revended_once(rig):
    tmp, broker, pki, start = rig
    a = start(M2, account={"hoarding": 600000})  # at most 60 CNY on the meter
    assert pmeter(tmp, "push", "--meter", M2, "--amount", "50", "--wait")[0] == 0
    code, out, _ = pmeter(tmp, "push", "--meter", M2, "--amount", "20", "--wait", "--json")
    assert code == 1 and json.loads(out)["code"] == results.OVER_HOARDING_LIMIT
    ref = json.loads(out)["ref"]
    ledger = Ledger(str(tmp / "pmeter-ledger.sqlite"))
    seq = int(ref.split(":")[1])
    # The very token sent again: the meter answers already_used, which must not
    # overwrite its refusal in the ledger.
    tok = bytes.fromhex(ledger.db.execute("SELECT token FROM tokens WHERE seq=? AND meter_id=?",
                                          (seq, M2)).fetchone()[0])
    shadow = Shadow(str(tmp / "pmeter-ledger.sqlite"))
    head = HeadEnd(Fleet(MASTER), shadow, broker.host, broker.tls_port, client_id="headend-resend",
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend"))).start()
    try:
        topic, payload = head.fleet.seal_token(M2, seq, tok, ref, wall_s())
        head.expect(ref)
        head.publish(topic, payload)
        assert head.wait_ack(ref, 10)["b"]["code"] == results.ALREADY_USED
    finally:
        head.stop()
        shadow.close()
    assert ledger.token(M2, "mqtt", seq)["result"] == results.OVER_HOARDING_LIMIT
    problems = json.loads(pmeter(tmp, "status", "--meter", M2, "--json")[1])[0]["reconcile"]["problems"]
    assert [p["code"] for p in problems] == ["refused"] and ref in problems[0]["message"]
    # Room on the meter (the limit is raised), then the refused credit is paid out again.
    (tmp / "one.csv").write_text(M2 + "\n")
    code, out, err = pmeter(tmp, "batch", "--csv", "one.csv", "--command", "set_limits", "--arg", "hoarding=0",
                            "--timeout", "5")
    assert code == 0, (out, err)
    code, out, err = pmeter(tmp, "push", "--meter", M2, "--revend", ref, "--wait", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["code"] == results.ACCEPTED and res["amount"] == 200000 and res["balance"] == 700000
    assert a.meter.balance == 700000
    new = ledger.token(M2, "mqtt", int(res["ref"].split(":")[1]))
    assert new["revend_of"] == ref
    rec = json.loads(pmeter(tmp, "status", "--meter", M2, "--json")[1])[0]["reconcile"]
    assert rec["problems"] == [] and rec["issued"] == 700000 and rec["applied"] == 700000
    # At most once.
    code, _, err = pmeter(tmp, "push", "--meter", M2, "--revend", ref, "--wait")
    assert code == 2 and "--revend" in err and "already re-vended" in err
    assert a.meter.balance == 700000


def _problems(tmp, meter, env=None, refresh=False):
    code, out, err = pmeter(tmp, "status", "--meter", meter, "--json", *(["--refresh"] if refresh else []), env=env)
    assert code == 0, err
    return sorted(p["code"] for p in json.loads(out)[0]["reconcile"]["problems"])


def test_a_replaced_ledger_never_loses_a_paid_topup_silently(rig):
    tmp, broker, pki, start = rig
    a = start(M1)
    for amount in ("10", "20"):
        assert pmeter(tmp, "push", "--meter", M1, "--amount", amount, "--wait")[0] == 0
    # The ledger is lost; a new one starts on a head-end with a fresh session.
    new = {"PMETER_LEDGER": str(tmp / "new-ledger.sqlite"), "PMETER_CLIENT_ID": "headend-new"}
    code, out, err = pmeter(tmp, "push", "--meter", M1, "--amount", "5", "--wait", "--json", env=new)
    res = json.loads(out)
    assert code == 1 and res["code"] == results.ALREADY_USED and res["ref"] == "mqtt:1", (out, err)
    assert a.meter.balance == 300000
    code, out, _ = pmeter(tmp, "push", "--meter", M1, "--amount", "5", "--wait", env=new)
    assert code == 1 and "ALARM" in out and "NOT applied" in out and "--revend mqtt:2" in out, out
    # Paid and never applied: an alarm, not silence.
    assert _problems(tmp, M1, new) == ["sequence_reused", "sequence_reused"]
    # The meter reconnects: its birth tells the head-end the highest sequence it used.
    a.halt()
    a = start(M1)
    assert _problems(tmp, M1, new, refresh=True) == ["sequence_reused", "sequence_reused"]  # 2 used, 2 issued
    code, out, err = pmeter(tmp, "push", "--meter", M1, "--amount", "5", "--wait", "--json", env=new)
    res = json.loads(out)
    assert code == 0 and res["code"] == results.ACCEPTED and res["ref"] == "mqtt:3", (out, err)
    # The lost top-ups are paid out again, once each, and the alarms are resolved.
    for ref in ("mqtt:1", "mqtt:2"):
        code, out, err = pmeter(tmp, "push", "--meter", M1, "--revend", ref, "--wait", "--json", env=new)
        assert code == 0 and json.loads(out)["code"] == results.ACCEPTED, (out, err)
    assert a.meter.balance == 450000
    assert _problems(tmp, M1, new) == []
