"""hw.serial_link: our master and slave over TCP, socket:// and real ptys."""

import socket
import time

import pytest

from agent import results
from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.events import Ack
from dlt645_wires import PtyPair
from hw.serial_link import LinkTimeout, SerialMaster, SerialSlave, SlaveLink, TcpSlaveServer, open_slave, parse_hostport
from portable.dlt645_view import METER, TZ_MIN, View, make_slave

PASSWORD = bytes((0x02, 0x12, 0x34, 0x56))


class Core:
    """Records events; acknowledges with ``code`` (or not at all when None)."""

    def __init__(self, code=results.ACCEPTED):
        self.code = code
        self.events = []

    def __call__(self, events):
        self.events.extend(events)
        if self.code is None:
            return []
        return [Ack(e.ref, self.code, 0) for e in events if hasattr(e, "ref")]


def _serve(core=None, view=None):
    link = SlaveLink(make_slave(), view or View(), core or Core())
    return link, TcpSlaveServer(link, "127.0.0.1", 0).start()


def test_master_and_slave_over_socket_url():
    link, server = _serve()
    try:
        with SerialMaster("socket://127.0.0.1:%d" % server.port, timeout=2) as m:
            assert m.read_address() == METER
            assert m.read_energy_wh(METER) == 1234560
            assert M.energy_block_wh(m.read(METER, 0x0001FF00)) == [1234560, 100000, 300000, 500000, 334560]
            assert M.money_minor(m.read(METER, 0x00900200)) == 1234500
            fr, data = m.request(M.control_request(METER, PASSWORD, 0x3A, int(time.time()) + 60, TZ_MIN), F.CONTROL, METER)
            assert fr.control == 0x9C and data == b""
            with pytest.raises(M.ReplyError) as err:
                m.request(M.control_request(METER, b"\x02\x00\x00\x00", 0x3A, int(time.time()) + 60, TZ_MIN), F.CONTROL, METER)
            assert err.value.err == F.ERR_PASSWORD
        assert [e.name for e in link.dispatch.events] == ["guarantee_on"]
    finally:
        server.stop()


def test_control_without_an_ack_gets_no_reply():
    link, server = _serve(Core(code=None))
    try:
        with SerialMaster("socket://127.0.0.1:%d" % server.port, timeout=0.3, retries=0) as m:
            with pytest.raises(LinkTimeout):
                m.request(M.control_request(METER, PASSWORD, 0x1A, int(time.time()) + 60, TZ_MIN), F.CONTROL, METER)
    finally:
        server.stop()


def test_a_failing_core_does_not_kill_the_server():
    def broken(events):
        raise RuntimeError("core exploded")

    link, server = _serve(broken)
    try:
        with SerialMaster("socket://127.0.0.1:%d" % server.port, timeout=0.3, retries=0) as m:
            with pytest.raises(LinkTimeout):
                m.request(M.control_request(METER, PASSWORD, 0x1A, int(time.time()) + 60, TZ_MIN), F.CONTROL, METER)
            assert m.read_energy_wh(METER) == 1234560
    finally:
        server.stop()


def test_garbage_and_truncated_frames_over_tcp():
    link, server = _serve()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            rng = __import__("random").Random(645)
            s.sendall(bytes(rng.randrange(256) for _ in range(5000)))
            # a truncated header that asks for 100 bytes, then the line goes quiet
            s.sendall(b"\x68" + bytes(6) + b"\x68\x11\x64")
            time.sleep(0.8)
            s.sendall(M.read_request(METER, 0x00010000))
            parser = F.Parser()
            deadline = time.monotonic() + 3
            frames = []
            while not frames and time.monotonic() < deadline:
                frames = parser.feed(s.recv(1024))
            assert M.energy_wh(M.read_reply(frames[0], METER, 0x00010000)) == 1234560
        assert link.slave.errors == 0
    finally:
        server.stop()


def test_several_clients_at_once():
    link, server = _serve()
    try:
        masters = [SerialMaster("socket://127.0.0.1:%d" % server.port, timeout=2) for _ in range(3)]
        for m in masters:
            assert m.read_energy_wh(METER) == 1234560
        for m in masters:
            m.close()
    finally:
        server.stop()


@pytest.mark.parametrize("parity", ["N", "E"])
def test_master_and_slave_over_ptys(parity):
    pair = PtyPair()
    link = SlaveLink(make_slave(), View(), Core())
    slave = SerialSlave(link, pair.a, baud=9600, parity=parity, reply_delay_ms=20).start()
    try:
        assert slave.opened.wait(5)
        with SerialMaster(pair.b, baud=9600, parity=parity, timeout=2) as m:
            assert m.read_energy_wh(METER) == 1234560
            assert m.read_address() == METER
    finally:
        slave.stop()
        pair.close()


def test_serial_slave_retries_a_missing_device_and_stops():
    link = SlaveLink(make_slave(), View(), Core())
    slave = SerialSlave(link, "/dev/does-not-exist-645", retry_s=0.05).start()
    time.sleep(0.2)
    assert not slave.opened.is_set()
    slave.stop()
    assert not slave._thread.is_alive()


def test_open_slave_endpoints():
    link = SlaveLink(make_slave(), View(), Core())
    server = open_slave(link, "tcp://127.0.0.1:0")
    try:
        assert isinstance(server, TcpSlaveServer) and server.port > 0
    finally:
        server.stop()
    assert parse_hostport("[::1]:8645", "x") == ("::1", 8645)
    for bad in ("localhost", "host:", ":80", "host:port", "host:70000"):
        with pytest.raises(ValueError) as err:
            parse_hostport(bad, "dlt645.device")
        assert "dlt645.device" in str(err.value)
