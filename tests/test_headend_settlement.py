"""Daily settlement, operators' figures and batches of `pmeter headend serve`,
on the rig of tests/test_headend_service.py: a real service process, a real
Mosquitto with the shipped TLS config, live agents and a webhook receiver.

The meters' days pass on the meter side: the test feeds the live agent
Pulses and Ticks at chosen walls past its local midnights (in the agent's
own thread), so the agent reports real daily freezes over MQTT."""

import csv
import io
import json
import queue
import threading
import urllib.error
import urllib.request

import test_headend_service as service_rig
from test_headend_live import LiveMeter
from test_headend_service import M1, M2, OPS, PAY, READ, Rig, wait_for

from agent.events import Anomaly, Pulses, Tamper, Tick
from hw.mqtt_paho import mono_ms, wall_s

M3 = "000000000203"
DAY = 86400


class ClockedMeter(LiveMeter):
    """A live agent whose local events (Pulses, Ticks, a poke at its account) the test feeds in its thread."""

    def __init__(self, *a, **kw):
        LiveMeter.__init__(self, *a, **kw)
        self.calls = queue.Queue()

    def _run(self):
        self.linked.boot(wall_s(), mono_ms())
        while not self.stop.is_set():
            self.transport.step(0.01)
            while not self.calls.empty():
                self.calls.get()()

    def do(self, fn):
        """Run ``fn()`` in the agent's thread; its result."""
        out, done = [], threading.Event()
        self.calls.put(lambda: (out.append(fn()), done.set()))
        assert done.wait(10)
        return out[0]

    def feed(self, event, wall):
        """Feed a local event at ``wall``: what it publishes goes out now."""
        self.do(lambda: self.transport.send(self.linked.handle(event, wall)[1]))

    def midnight(self, n):
        """Wall of the ``n``-th local midnight after boot (China time, the default)."""
        tz = self.meter.tz_s
        return ((wall_s() + tz) // DAY + n) * DAY - tz

    def counters(self):
        """(cumulative charge, balance) as the meter holds them now."""
        return self.do(lambda: (self.meter.account.charged, self.meter.balance))


def _rig(tmp_path, monkeypatch):
    # A third meter certificate for the batch.
    make = service_rig.make_pki
    monkeypatch.setattr(service_rig, "make_pki", lambda d, clients: make(d, clients=clients + [M3]))
    return Rig(tmp_path, monkeypatch)


def _start(rig, meter_id, **kw):
    m = ClockedMeter(rig.broker, rig.pki, meter_id, rig.tmp / ("store-" + meter_id), **kw).start()
    rig.meters.append(m)
    return m


def _bills(api, meter, query=""):
    code, body = api.call("GET", "/api/v1/meters/%s/bills%s" % (meter, query), READ)
    assert code == 200, body
    return body


def test_a_days_bill_is_the_meters_own_charge_exactly_and_a_mismatch_is_flagged(tmp_path, monkeypatch):
    rig = _rig(tmp_path, monkeypatch)
    try:
        api = rig.api
        a = _start(rig, M1, account={"opening_balance": 1000000})
        m1, m2, m3 = a.midnight(1), a.midnight(2), a.midnight(3)
        a.feed(Pulses(640, m1 - 600, mono_ms()), m1 - 600)  # 200 Wh before the first midnight
        a.feed(Tick(m1 + 5, mono_ms()), m1 + 5)  # the first freeze opens the settlement
        chg1, bal1 = a.counters()
        # Day 1: use, a top-up through the API, more use, then midnight.
        a.feed(Pulses(1600, m1 + 3600, mono_ms()), m1 + 3600)
        code, body = api.topup(M1, "25.00", "day1-topup")
        assert code == 200 and body["status"] == "applied", body
        a.feed(Pulses(3200, m1 + 7200, mono_ms()), m1 + 7200)
        a.feed(Tick(m2 + 5, mono_ms()), m2 + 5)
        chg2, bal2 = a.counters()
        assert chg2 > chg1
        assert wait_for(lambda: len(_bills(api, M1)["days"]) == 1), _bills(api, M1)
        day1 = _bills(api, M1)["days"][0]
        # Exactly the meter's own figures, in integers.
        assert (day1["charge_minor"], day1["credits_minor"], day1["opening_minor"], day1["closing_minor"],
                day1["mismatch_minor"], day1["checked"]) == (chg2 - chg1, 250000, bal1, bal2, 0, True), day1
        assert day1["meter_charged_total_minor"] == chg2
        assert day1["energy_wh"] == 1500 and sum(day1["rates_wh"]) == 1500
        assert _bills(api, M1)["problems"] == []
        # Day 2: the cover opens twice and the meter doubts its register
        # (a theft suspect), and its balance moves by money neither charged
        # nor credited.
        for i, opened in enumerate((True, False, True, False)):
            a.feed(Tamper(opened, m2 + 60 + i, mono_ms()), m2 + 60 + i)
        a.feed(Anomaly("register_drift", {}, m2 + 70, mono_ms()), m2 + 70)
        a.do(lambda: setattr(a.meter.account, "balance", a.meter.account.balance - 1234))
        a.feed(Tick(m3 + 5, mono_ms()), m3 + 5)
        assert wait_for(lambda: len(_bills(api, M1)["days"]) == 2)
        bills = _bills(api, M1)
        assert bills["days"][1]["mismatch_minor"] == -1234 and bills["days"][1]["checked"] is False
        assert [p["code"] for p in bills["problems"]] == ["settlement_mismatch"]
        assert wait_for(lambda: rig.hook.delivered("settlement_mismatch")), rig.hook.got
        assert rig.hook.delivered("settlement_mismatch")[0]["data"]["mismatch_minor"] == -1234
        # The month, the date range, CSV, and who may read.
        assert [(m["days"], m["charge_minor"], m["mismatch_minor"]) for m in bills["months"]] in (
            [(2, chg2 - chg1, -1234)], [(1, chg2 - chg1, 0), (1, 0, -1234)])
        first = bills["days"][0]["date"]
        assert len(_bills(api, M1, "?from=%s&to=%s" % (first, first))["days"]) == 1
        req = urllib.request.Request(api.base + "/api/v1/meters/%s/bills?format=csv" % M1,
                                     headers={"Authorization": "Bearer " + READ})
        with urllib.request.urlopen(req, timeout=30) as r:
            rows = list(csv.DictReader(io.StringIO(r.read().decode())))
        assert [(r["date"], int(r["charge"]), int(r["mismatch"])) for r in rows] == [
            (first, chg2 - chg1, 0), (bills["days"][1]["date"], 0, -1234)]
        assert api.call("GET", "/api/v1/meters/%s/bills" % M1, PAY)[0] == 403
        # The theft rules over the settled days: two cover openings and a plausibility record.
        code, fig = api.call("GET", "/api/v1/figures?from=%s&to=%s" % (first, bills["days"][1]["date"]), READ)
        assert code == 200 and [(s["meter_id"], s["score"]) for s in fig["theft_suspects"]] == [(M1, 50)], fig
        assert "cover opened 2 times" in fig["theft_suspects"][0]["reasons"]
        code, body = api.call("GET", "/api/v1/meters/%s/bills?from=2026-13-01" % M1, READ)
        assert code == 400 and body["error"]["field"] == "from"
    finally:
        rig.close()


def test_figures_after_a_cut_and_a_top_up_and_a_batch_reaching_an_offline_meter(tmp_path, monkeypatch):
    rig = _rig(tmp_path, monkeypatch)
    try:
        api = rig.api
        a = _start(rig, M1)  # no credit: cut at boot
        b = _start(rig, M2, account={"opening_balance": 500000})
        assert a.wait(lambda: a.meter.relay_state == "tripped_arrears")
        code, body = api.topup(M1, "10.00", "restore-me")
        assert code == 200 and body["status"] == "applied", body
        assert a.wait(lambda: a.meter.relay_state == "connected")
        cmd = "/api/v1/meters/%s/commands" % M2
        for name in ("trip", "close_direct"):
            code, body = api.call("POST", cmd, OPS, {"name": name})
            assert code == 200 and body["code"] == "accepted", body
        # A batch: JSON list of three meters, the third offline.
        code, bad = api.call("POST", "/api/v1/batches", OPS, {"meters": [M1, M1], "command": "set_mode",
                                                             "args": {"mode": "postpaid"}})
        assert code == 400 and bad["error"]["field"] == "meters" and "already" in bad["error"]["message"], bad
        code, bad = api.call("POST", "/api/v1/batches", OPS, {"meters": [M1], "command": "set_mode",
                                                             "args": {"mode": "free"}})
        assert code == 400 and bad["error"]["field"] == "args", bad
        assert api.call("POST", "/api/v1/batches", READ, {"meters": [M1], "command": "set_mode"})[0] == 403
        code, batch = api.call("POST", "/api/v1/batches", OPS, {"meters": [M1, M2, M3], "command": "set_mode",
                                                               "args": {"mode": "postpaid"}})
        assert code == 202 and batch["total"] == 3, batch
        path = "/api/v1/batches/%d" % batch["batch_id"]

        def results():
            return [(m["meter_id"], m["result"]) for m in api.call("GET", path, READ)[1]["meters"]]

        assert wait_for(lambda: results() == [(M1, "accepted"), (M2, "accepted"), (M3, "pending")]), results()
        view = api.call("GET", path, READ)[1]
        assert view["done"] is False and view["progress"]["applied"] == 2
        # Figures, while M3 is still pending.
        code, fig = api.call("GET", "/api/v1/figures", OPS)
        assert code == 200, fig
        assert api.call("GET", "/api/v1/figures", READ)[0] == 200
        assert api.call("GET", "/api/v1/figures", PAY)[0] == 403
        day = fig["remote"][-1]
        assert (day["cut"]["sent"], day["cut"]["confirmed"], day["cut"]["success_pm"]) == (1, 1, 1000), fig
        assert (day["reconnect"]["sent"], day["reconnect"]["confirmed"]) == (1, 1), fig
        lat = fig["topup_restore_latency"]
        assert lat["count"] == 1 and 0 <= lat["p50_s"] == lat["worst_s"] <= 10, lat
        assert fig["pending_deliveries"]["count"] == 1
        # The webhook receiver fails every POST for a while: failing notifications.
        rig.hook.fail = 10 ** 6
        code, body = api.call("POST", cmd, OPS, {"name": "trip"})
        assert code == 200 and body["code"] == "accepted", body

        def failing():
            return api.call("GET", "/api/v1/figures", OPS)[1]["failing_notifications"]

        assert wait_for(lambda: failing()["count"] >= 1), failing()
        assert "cut" in [n["kind"] for n in failing()["notifications"]]
        rig.hook.fail = 0
        assert wait_for(lambda: failing()["count"] == 0), failing()
        # The offline meter comes online: the batch finishes.
        c = _start(rig, M3)
        assert wait_for(lambda: results()[-1] == (M3, "accepted")), results()
        assert api.call("GET", path, READ)[1]["done"] is True
        assert c.meter.payment_mode == b.meter.payment_mode == "postpaid"
        # The same batch as CSV, as pmeter batch reads it.
        req = urllib.request.Request(api.base + "/api/v1/batches?command=set_mode&args=%7B%22mode%22%3A%22prepaid%22%7D",
                                     data=("meter_id\n%s\n%s\n" % (M2, M3)).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + OPS, "Content-Type": "text/csv"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 202
        req = urllib.request.Request(api.base + "/api/v1/batches?command=set_mode", data=b"meter_id\n12345\n",
                                     method="POST", headers={"Authorization": "Bearer " + OPS,
                                                             "Content-Type": "text/csv"})
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError("a bad meter id in a CSV batch was taken")
        except urllib.error.HTTPError as e:
            err = json.loads(e.read())["error"]
            assert e.code == 400 and err["field"] == "body" and "line 2" in err["message"], err
        assert wait_for(lambda: c.meter.payment_mode == b.meter.payment_mode == "prepaid")
    finally:
        rig.close()
