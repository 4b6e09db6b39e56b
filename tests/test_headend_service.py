"""`pmeter headend serve` as an operator runs it: a real service process on
one headend.toml, a real Mosquitto with the shipped TLS config and ACL,
live agents (LinkedMeter on a durable Device, over paho with their own
certificates), a real HTTP webhook receiver, and real HTTP requests.

Top-up through the API to an online meter; a top-up for an offline meter
queued and delivered after its birth (also from `pmeter push` with
[service] queue); idempotency keys served once; roles; signed webhook
notifications retried after the receiver failed; clean SIGTERM."""

import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import mosquitto
from mosquitto import Broker, free_port, make_pki, shipped_tls
from test_headend_live import ROOT, LiveMeter, pmeter

from headend.ledger import Ledger

M1, M2 = "000000000201", "000000000202"
PAY, OPS, READ = "pay-token-0123456789", "ops-token-0123456789", "read-token-0123456789"
SECRET = "webhook-secret-0123456789"


class Receiver:
    """A webhook receiver on a free loopback port: answers 500 to the first ``fail`` requests, then 200."""

    def __init__(self, fail=1):
        self.got = []  # (headers dict, body bytes, answered status)
        self.fail = fail
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if rec.fail > 0 else 200
                rec.fail -= 1
                rec.got.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self, kind):
        """Bodies (dicts) of ``kind`` the receiver answered 200, in order."""
        return [json.loads(b) for h, b, s in self.got if s == 200 and json.loads(b)["kind"] == kind]


class Api:
    """Real HTTP requests to the service."""

    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def call(self, method, path, token=None, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def topup(self, meter, amount, key, token=PAY):
        return self.call("POST", "/api/v1/meters/%s/topups" % meter, token,
                         {"amount": amount, "idempotency_key": key})


def wait_for(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


class Rig:
    """The broker, the service process (on its headend.toml), the webhook receiver and live meters."""

    def __init__(self, tmp_path, monkeypatch, broker_first=True, group=None):
        self.tmp = tmp_path
        self.pki = make_pki(tmp_path / "pki", clients=[M1, M2, "headend", "headend-ops"])
        self.broker = Broker(tmp_path / "mosquitto", **shipped_tls(self.pki))
        # The broker's ports are chosen now, so the config can name them
        # before the broker runs (a service started while the broker is down).
        ports = [free_port(), free_port()]
        self.tls_port = ports[1]
        monkeypatch.setattr(mosquitto, "free_port", lambda host=None: ports.pop(0))
        if broker_first:
            self.broker.start()
        (tmp_path / "master.key").write_text(bytes(range(32)).hex())
        (tmp_path / "master.key").chmod(0o600)
        self.hook = Receiver(fail=1)
        self.group = group
        self.meters = []
        self.procs = []
        self.api, self.proc = self.serve("headend")

    def serve(self, name):
        """Start a service process with certificate ``name`` (its own config and port): (Api, process)."""
        port = free_port()
        (self.tmp / (name + ".toml")).write_text(
            '[broker]\nurl = "mqtts://127.0.0.1:%d"\nca = "%s"\ncert = "%s"\nkey = "%s"\n'
            '[keys]\nmaster = "master.key"\n[ledger]\npath = "pmeter-ledger.sqlite"\n'
            '[service]\nqueue = true\nlisten = "127.0.0.1:%d"\nwait_s = 3\npoll_s = 0.2\n%s'
            '[api]\npayment = ["%s"]\noperator = ["%s"]\nread = ["%s"]\n'
            '[webhook]\nurl = "%s"\nsecret = "%s"\nretry_s = 0.2\n'
            % (self.tls_port, self.pki.ca_cert, self.pki.client_cert(name), self.pki.client_key(name), port,
               'group = "%s"\n' % self.group if self.group else "", PAY, OPS, READ, self.hook.url, SECRET))
        if name == "headend":  # what pmeter push and batch read in this folder
            (self.tmp / "headend.toml").write_text((self.tmp / (name + ".toml")).read_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("PMETER_")}
        log = open(self.tmp / (name + ".log"), "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pmeter", "headend", "serve", "--config", name + ".toml"], cwd=str(self.tmp),
            stdout=log, stderr=subprocess.STDOUT, env=dict(env, PYTHONPATH=str(ROOT)))
        log.close()
        self.procs.append(proc)
        api = Api(port)
        assert wait_for(lambda: proc.poll() is None and _answers(api)), self.log_text(name)
        return api, proc

    def log_text(self, name="headend"):
        return (self.tmp / (name + ".log")).read_text()

    def start(self, meter_id, **kw):
        """A live meter, connected."""
        m = LiveMeter(self.broker, self.pki, meter_id, self.tmp / ("store-" + meter_id), **kw).start()
        self.meters.append(m)
        return m

    def close(self):
        for m in self.meters:
            m.halt()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.hook.server.shutdown()
        self.broker.stop()


@pytest.fixture
def rig(tmp_path, monkeypatch):
    r = Rig(tmp_path, monkeypatch)
    yield r
    r.close()


def _answers(api):
    try:
        return api.call("GET", "/api/v1/openapi.json")[0] == 200
    except OSError:
        return False


def test_topup_through_the_api_reaches_the_online_meter_once_per_key_with_roles_and_signed_webhooks(rig):
    api, start, hook, proc, tmp = rig.api, rig.start, rig.hook, rig.proc, rig.tmp
    a = start(M1)  # no credit: alarm 2 and a cut
    assert a.wait(lambda: a.meter.relay_state == "tripped_arrears")
    # Roles and refusals, each a JSON error naming the field.
    assert api.topup(M1, "20.00", "k1", token=None)[1]["error"]["field"] == "Authorization"
    assert api.topup(M1, "20.00", "k1", token="not-a-token-at-all")[0] == 401
    code, body = api.topup(M1, "20.00", "k1", token=READ)
    assert code == 403 and body["error"]["field"] == "Authorization"
    assert api.call("GET", "/api/v1/meters/" + M1, PAY)[0] == 403
    assert api.call("POST", "/api/v1/meters/%s/commands" % M1, PAY, {"name": "set_mode", "args": {}})[0] == 403
    for amount, field in ((50, "amount"), ("-1", "amount"), ("1.00001", "amount")):
        code, body = api.topup(M1, amount, "k1")
        assert code == 400 and body["error"]["field"] == field, body
    code, body = api.call("POST", "/api/v1/meters/12345/topups", PAY, {"amount": "1", "idempotency_key": "k"})
    assert code == 400 and body["error"]["field"] == "meter_id"
    code, body = api.call("POST", "/api/v1/meters/%s/topups" % M1, PAY, {"amount": "1", "idempotency_key": "k",
                                                                         "extra": 1})
    assert code == 400 and body["error"]["field"] == "extra"
    # The top-up: vended, delivered, applied; the exact new balance.
    code, body = api.topup(M1, "20.00", "order-1")
    assert code == 200, body
    assert (body["status"], body["code"], body["balance"], body["replayed"]) == ("applied", "accepted", "20.0000",
                                                                                  False)
    assert a.meter.balance == 200000
    # The same key again: served from the first answer, nothing vended.
    code, again = api.topup(M1, "20.00", "order-1")
    assert code == 200 and again["replayed"] is True and again["delivery_id"] == body["delivery_id"]
    code, clash = api.topup(M1, "30.00", "order-1")
    assert code == 409 and clash["error"]["field"] == "idempotency_key"
    topups = [t for t in Ledger(str(tmp / "pmeter-ledger.sqlite")).tokens(M1) if t["kind"] == "topup"]
    assert [t["amount"] for t in topups] == [200000]
    assert a.meter.balance == 200000
    # The shadow, read-only, with ages.
    code, view = api.call("GET", "/api/v1/meters/" + M1, READ)
    assert code == 200 and view["online"] is True and view["status"]["age_s"] >= 0
    assert wait_for(lambda: api.call("GET", "/api/v1/meters/" + M1, OPS)[1]["balance"]["minor"] == 200000)
    code, ev = api.call("GET", "/api/v1/meters/%s/events?limit=50" % M1, READ)
    assert code == 200 and "close" in [e["kind"] for e in ev["events"]]
    # Commands, operators only, checked by the meter core's rules first.
    cmd = "/api/v1/meters/%s/commands" % M1
    code, body = api.call("POST", cmd, OPS, {"name": "set_limits", "args": {"alarm2": "x"}})
    assert code == 400 and body["error"]["field"] == "args", body
    code, body = api.call("POST", cmd, OPS, {"name": "self_destruct"})
    assert code == 400 and body["error"]["field"] == "name", body
    code, body = api.call("POST", cmd, OPS, {"name": "set_mode", "args": {"mode": "postpaid"}})
    assert code == 200 and (body["status"], body["code"], body["command"]) == ("applied", "accepted", "set_mode")
    assert a.meter.payment_mode == "postpaid"
    # The customer's warning amount (alarm 1): 15 CNY, below the balance of 20.
    warn = "/api/v1/meters/%s/warning" % M1
    assert api.call("PUT", warn, PAY, {"amount": "15.00"})[0] == 403
    code, body = api.call("PUT", warn, OPS, {"amount": "15.00"})
    assert code == 200 and (body["status"], body["code"]) == ("applied", "accepted"), body
    assert a.meter.limits["alarm1"] == 150000
    # Notifications: alarm 2 and the cut at boot, then the reconnection and
    # alarm 1 (20 CNY is below alarm 1's 30); the first POST failed and was
    # retried; every body is signed.
    assert wait_for(lambda: all(hook.delivered(k) for k in ("alarm2", "cut", "reconnection", "alarm1"))), hook.got
    assert hook.got[0][2] == 500
    first = json.loads(hook.got[0][1])["id"]
    assert [json.loads(b)["id"] for h, b, s in hook.got].count(first) == 2  # retried, then delivered
    for headers, body_bytes, status in hook.got:
        want = "sha256=" + hmac.new(SECRET.encode(), body_bytes, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Pmeter-Signature"], want)
        assert headers["X-Pmeter-Delivery"] == json.loads(body_bytes)["id"]
    assert hook.delivered("cut")[0]["meter_id"] == M1
    # SIGTERM: a clean stop.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "stopped" in rig.log_text()


def test_topup_for_an_offline_meter_is_queued_and_delivered_after_its_birth(rig):
    api, start, hook, proc, tmp = rig.api, rig.start, rig.hook, rig.proc, rig.tmp
    code, body = api.topup(M2, "12.50", "order-offline")
    assert code == 202 and body["status"] == "queued", body
    # pmeter push with [service] queue = true enqueues through the same queue.
    code, out, err = pmeter(tmp, "push", "--meter", M2, "--amount", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "queued"
    b = start(M2)
    assert wait_for(lambda: b.meter.balance == 135000), b.meter.balance

    def statuses():
        rows = api.call("GET", "/api/v1/meters/%s/deliveries" % M2, READ)[1]["deliveries"]
        return [(r["status"], r["code"], r["sends"]) for r in rows]

    assert wait_for(lambda: statuses() == [("applied", "accepted", 1)] * 2), statuses()
    # The same key after delivery: the final answer, nothing new.
    code, again = api.topup(M2, "12.50", "order-offline")
    assert code == 200 and again["status"] == "applied" and again["replayed"] is True
    # A push waiting for the meter's answer, through the running service.
    code, out, err = pmeter(tmp, "push", "--meter", M2, "--amount", "2", "--wait", "--timeout", "20", "--json")
    assert code == 0, (out, err)
    res = json.loads(out)
    assert (res["code"], res["balance"], res["status"]) == ("accepted", 155000, "applied")
    assert b.meter.balance == 155000
    # The meter vanishes without a word (its retained status still says
    # online): the next top-up is published into the void, then re-sent
    # after the meter's next birth, and applied once.
    b.halt()
    code, body = api.topup(M2, "3.00", "order-void")
    assert code == 202 and body["status"] == "sent" and body["sends"] == 1, body
    b = start(M2)
    assert wait_for(lambda: statuses()[-1] == ("applied", "accepted", 2)), statuses()
    assert b.meter.balance == 185000


def test_the_service_started_while_the_broker_is_down_serves_and_delivers_once_it_is_up(tmp_path, monkeypatch):
    rig = Rig(tmp_path, monkeypatch, broker_first=False)
    try:
        # No broker: the API still vends and queues, and the process lives on.
        code, body = rig.api.topup(M1, "5", "while-down")
        assert code == 202 and body["status"] == "queued", body
        assert rig.proc.poll() is None
        rig.broker.start()  # on the port the config names: the service reconnects by itself
        a = rig.start(M1)
        assert wait_for(lambda: a.meter.balance == 50000, 30), rig.log_text()
        # A batch through the queue: the online meter answers, the offline one stays queued.
        (tmp_path / "two.csv").write_text("%s\n%s\n" % (M1, M2))
        code, out, err = pmeter(tmp_path, "batch", "--csv", "two.csv", "--command", "set_mode", "--arg",
                                "mode=postpaid", "--timeout", "3", "--json")
        assert code == 1, (out, err)
        assert [(r["meter_id"], r["result"]) for r in json.loads(out)["results"]] == [
            (M1, "accepted"), (M2, "pending")]
        assert a.meter.payment_mode == "postpaid"
        rig.proc.send_signal(signal.SIGTERM)
        assert rig.proc.wait(15) == 0
    finally:
        rig.close()


@pytest.mark.parametrize("extra, field", [
    ('[service]\nfoo = 1\n', "service.foo"),
    ('[service]\nqueue = "yes"\n', "service.queue"),
    ('[service]\nlisten = "nowhere"\n[api]\nread = ["%s"]\n' % READ, "service.listen"),
    ('[api]\nread = ["short"]\n', "api.read"),
    ('[service]\nwait_s = -1\n', "service.wait_s"),
    ('', "api: no bearer tokens"),
    ('[api]\nread = ["%s"]\n[webhook]\nurl = "http://127.0.0.1:9/x"\n' % READ, "webhook.secret"),
    ('[api]\nread = ["%s"]\n[webhook]\nurl = "ftp://x"\nsecret = "s"\n' % READ, "webhook.url"),
])
def test_serve_refuses_a_bad_config_naming_the_key(tmp_path, extra, field):
    (tmp_path / "master.key").write_text(bytes(range(32)).hex())
    (tmp_path / "master.key").chmod(0o600)
    (tmp_path / "headend.toml").write_text('[broker]\nurl = "mqtt://127.0.0.1:9"\n[keys]\nmaster = "master.key"\n'
                                           + extra)
    code, out, err = pmeter(tmp_path, "headend", "serve")
    assert code == 2 and field in err, err
    assert not (tmp_path / "pmeter-ledger.sqlite").exists()


def test_queue_expires_open_items_and_a_late_acceptance_still_counts(tmp_path):
    from headend.delivery import Queue
    from headend.shadow import Shadow

    shadow = Shadow(str(tmp_path / "l.sqlite"))
    q = Queue(shadow.ledger)
    row, replayed = q.topup(bytes(range(32)), M1, 100, 60, key="k", wall=1000)
    assert (row["status"], row["expires"], replayed) == ("queued", 1060, False)
    assert q.expire(1059) == [] and q.expire(1060) == [row["id"]]
    assert q.get(row["id"])["status"] == "expired"
    # The meter did apply it after all (its ack came late): applied wins.
    shadow.record(M1, "ack", {"q": 1, "b": {"r": row["ref"], "code": "accepted", "bal": 100}}, 1100)
    assert q.settle(M1, row["ref"], 100, 1100)["status"] == "applied"
    # A conflicting reuse of the key vends nothing.
    with pytest.raises(ValueError):
        q.topup(bytes(range(32)), M1, 200, 60, key="k", wall=1000)
    assert [t["amount"] for t in shadow.ledger.tokens(M1)] == [100]
    shadow.close()


def test_two_instances_in_one_group_share_the_meters_messages_and_one_idempotency_key(tmp_path, monkeypatch):
    rig = Rig(tmp_path, monkeypatch, group="headends")
    try:
        api2, proc2 = rig.serve("headend-ops")
        a = rig.start(M1)
        assert a.wait(lambda: a.meter.relay_state == "tripped_arrears")
        # Acks reach either instance (the broker splits them); each top-up is
        # answered wherever it was asked, through the shared file.
        for i, api in enumerate((rig.api, api2, rig.api, api2)):
            code, body = api.topup(M1, "1", "pay-%d" % i)
            assert code == 200 and body["status"] == "applied", (body, rig.log_text(), rig.log_text("headend-ops"))
        assert a.meter.balance == 40000
        # One key sent to both instances: one vend.
        first = rig.api.topup(M1, "2", "both")[1]
        second = api2.topup(M1, "2", "both")[1]
        assert (first["replayed"], second["replayed"]) == (False, True)
        assert second["delivery_id"] == first["delivery_id"]
        assert a.meter.balance == 60000
        assert len(Ledger(str(tmp_path / "pmeter-ledger.sqlite")).tokens(M1)) == 5
    finally:
        rig.close()
