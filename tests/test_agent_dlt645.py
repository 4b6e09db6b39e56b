"""`pmeter agent`'s DL/T 645 side in process: the master thread reads the host
meter (the independent PyPI `dlt645` package's server, over ``socket://``)
and its cross-check findings reach the core as Anomaly events (logged,
committed, queued for the head-end); the slave's view of the core."""

import logging
import time

import pytest

import dlt645
from dlt645 import MeterServerService

from agent import settings
from agent.dlt645 import master as M
from agent.dlt645.bcd import to_bcd
from agent.events import TopUp
from agent.store import OsFS, Store
from mosquitto import free_port
from pmeter.agent_cli import AgentRuntime
from portable.dlt645_view import make_slave

MID = "000000000042"
HOST = "123456781012"  # the host meter's address
PKG_HOST = "121078563412"  # the package spells addresses in wire order
DI = 0x00010000  # forward active total, kWh with two decimals
W = 1_790_000_000

dlt645.disable_logging()


@pytest.fixture(scope="module")
def host_meter():
    # The package copies its whole data table per service (about 2 s): one per module.
    svc = MeterServerService.new_tcp_server("127.0.0.1", 0, timeout=2)
    svc.set_address(PKG_HOST)
    assert svc.server.start()
    yield svc
    svc.server.stop()


def _runtime(tmp_path, device, **master):
    mc = {"device": device, "timeout_ms": 500, "interval_s": 600, "drift_wh": 100, "drift_permille": 0}
    mc.update(master)
    cfg = settings.load({
        "meter": {"id": MID},
        "account": {"opening_balance": 100000},
        "tokens": {"key": "11" * 32},
        "agent": {"data_dir": str(tmp_path)},
        "sim": {"load_w": 0},  # no pulses: the pulse side stays at 0 Wh
        "dlt645_master": mc,
    })
    return AgentRuntime(cfg, "sim", str(tmp_path))


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _stored(tmp_path):
    return Store(OsFS(), str(tmp_path), MID).load()[0][0].value


def test_agent_master_thread_reports_register_drift(tmp_path, host_meter, caplog):
    caplog.set_level(logging.INFO, logger="pmeter.agent")
    host_meter.set_00(DI, 1234.56)
    rt = _runtime(tmp_path, "socket://127.0.0.1:%d" % host_meter.server.port)
    rt.boot()
    try:
        # The thread's first read: the address asked with 0x13, the baseline set.
        assert _wait(lambda: rt.master_reads == 1), caplog.text
        assert rt.master_address == HOST
        assert rt.linked.meter.records("plausibility") == []
        # The host meter's register runs 1 kWh ahead of the pulses: a finding.
        host_meter.set_00(DI, 1235.56)
        found = rt.master_pass()  # the thread's next interval, without the wait
        assert [r for r, _ in found] == ["register_drift"]
        rec = rt.linked.meter.records("plausibility")[0]
        assert rec.reason == "register_drift"
        assert rec.data["pulse_wh"] == 0 and rec.data["register_wh"] == 1000 and rec.data["drift_wh"] == -1000
        # Committed with the event's outbox entry (durable before it is sent) and logged.
        v = _stored(tmp_path)
        assert any(it for it in v["link"]["outbox"]["items"] if "register_drift" in repr(it))
        assert v["meter"][12] == rt.linked.meter.log.snapshot()
        assert "plausibility register_drift" in caplog.text
        # The finding re-baselines: the same register again is no new finding.
        assert rt.master_pass() == []
        # A register that goes back (a replaced meter, a reset): its own finding.
        host_meter.set_00(DI, 1000.00)
        assert [r for r, _ in rt.master_pass()] == ["register_backwards"]
        assert rt.linked.meter.records("plausibility")[0].reason == "register_backwards"
    finally:
        rt.stop.set()
        rt.master.join(5)
        rt.shutdown()
    assert not rt.master.is_alive()


def test_agent_master_absent_host_meter_is_logged_not_fatal(tmp_path, caplog):
    rt = _runtime(tmp_path, "socket://127.0.0.1:%d" % free_port(), address=HOST)
    rt.boot()
    try:
        assert _wait(lambda: "dlt645 master" in caplog.text), caplog.text
        assert rt.master_pass() == [] and rt.master_reads == 0
        assert rt.master.is_alive()
        rt.step()  # the main loop goes on
        assert rt.linked.meter.records("plausibility") == []
    finally:
        rt.stop.set()
        rt.master.join(5)
        rt.shutdown()


def test_agent_slave_view_counts_every_purchase(tmp_path):
    # 03330201 is the number of top-ups ever; the event log keeps only ten.
    rt = _runtime(tmp_path, None)
    rt.boot()
    try:
        for i in range(12):
            rt.feed(TopUp(100, "t%d" % i, W + i, 1000 * i))
        slave = make_slave()

        def purchases(view):
            reply, _ = slave.handle(_frame(M.read_request(slave.address, 0x03330201)), view, W + 20, 20000)
            return M.read_reply(_frame(reply), slave.address, 0x03330201)

        assert purchases(rt.linked.meter) == to_bcd(12, 2)
    finally:
        rt.shutdown()


def _frame(raw):
    from agent.dlt645 import frame as F

    frames = F.Parser().feed(raw)
    assert len(frames) == 1
    return frames[0]
