"""Our DL/T 645 slave and master against the independent PyPI package `dlt645`.

Its client reads our slave over TCP, over ``socket://`` (pyserial) and over
real ptys; its server answers our master the same ways.  It has no 0x1C
or balance DIs, so those frames are built with its ``DLT645Protocol``.
Its address strings go on the wire in string order: meter 123456781012 is
``"121078563412"`` to it.  Ptys use parity N (its even parity fails there).

The package deep-copies its whole data-identifier table (about 2 s) for
every client or server service, so each kind is made once per module and
given a fresh transport per test.
"""

import socket
import time

import pytest
from hypothesis import given, settings, strategies as st

import dlt645
from dlt645 import DLT645Protocol, MeterClientService, MeterServerService, RtuClient, RtuServer, TcpClient

from agent import results
from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.bcd import address_to_wire
from agent.events import Ack
from dlt645_wires import PtyPair
from hw.serial_link import LinkTimeout, SerialMaster, SerialSlave, SlaveLink, open_slave
from portable.dlt645_view import METER, TZ_MIN, View, make_slave

PKG_ADDRESS = "121078563412"  # the package's spelling of meter 123456781012
ADDR = address_to_wire(METER)

dlt645.disable_logging()


class Core:
    """Stands in for the agent loop: records events, acknowledges commands."""

    def __init__(self, code=results.ACCEPTED):
        self.code = code
        self.events = []

    def __call__(self, events):
        self.events.extend(events)
        return [Ack(e.ref, self.code, 0) for e in events if hasattr(e, "ref")]


@pytest.fixture
def slave_server():
    core = Core()
    link = SlaveLink(make_slave(), View(), core)
    server = open_slave(link, "tcp://127.0.0.1:0")
    server.core = core
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_service():
    return MeterClientService(TcpClient())


@pytest.fixture
def pkg_client(client_service):
    """The package's client service; tests give it a transport with ``connect_to``."""

    def connect_to(transport):
        client_service.client = transport
        client_service.address = bytearray(6)
        return client_service

    yield connect_to
    client_service.client.disconnect()


@pytest.fixture
def ptys():
    pair = PtyPair()
    yield pair
    pair.close()


def _exchange(port, raw, timeout=2.0):
    """Send raw bytes over TCP and return the first frame that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        parser = F.Parser()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames = parser.feed(s.recv(1024))
            if frames:
                return frames[0]
    raise AssertionError("no reply")


def test_package_tcp_client_reads_our_slave(slave_server, pkg_client):
    client = pkg_client(TcpClient("127.0.0.1", slave_server.port, timeout=2))
    try:
        item = client.read_address()
        assert item.value == PKG_ADDRESS
        assert client.read_00(0x00010000).value == pytest.approx(1234.56)
        assert client.read_00(0x00000000).value == pytest.approx(1234.56)
        assert [client.read_00(0x00010000 | (r << 8)).value for r in (1, 2, 3, 4)] == pytest.approx(
            [1000.0 / 10, 3000.0 / 10, 5000.0 / 10, 334.56]
        )
        assert client.read_04(0x04000503).value == "0200"
    finally:
        client.disconnect()


def test_package_client_gets_nothing_for_another_address(slave_server, pkg_client):
    client = pkg_client(TcpClient("127.0.0.1", slave_server.port, timeout=0.3))
    try:
        client.set_address("010000000000")
        assert client.client.send_request(
            DLT645Protocol.build_frame(client.address, 0x11, bytes((0, 0, 1, 0))), retries=0
        ) is None
        assert slave_server.link.slave.ignored == 1
    finally:
        client.disconnect()


def test_package_rtu_client_over_socket_url(slave_server, pkg_client):
    client = pkg_client(RtuClient("socket://127.0.0.1:%d" % slave_server.port, 2400, 8, 1, "E", 2.0))
    try:
        client.set_address(PKG_ADDRESS)
        assert client.read_00(0x00010000).value == pytest.approx(1234.56)
    finally:
        client.disconnect()


def test_package_rtu_client_over_ptys(ptys, pkg_client):
    link = SlaveLink(make_slave(), View(), Core())
    server = SerialSlave(link, ptys.a, baud=2400, parity="N", reply_delay_ms=20).start()
    assert server.opened.wait(5)
    client = pkg_client(RtuClient(ptys.b, 2400, 8, 1, "N", 2.0))
    try:
        assert client.read_address().value == PKG_ADDRESS
        assert client.read_00(0x00010000).value == pytest.approx(1234.56)
    finally:
        client.disconnect()
        server.stop()


def test_control_and_balance_frames_built_by_the_package(slave_server):
    # balance: 123.4567 CNY in the view -> 123.45 on the wire
    raw = DLT645Protocol.build_frame(ADDR, 0x11, bytes((0x00, 0x02, 0x90, 0x00)))
    fr = _exchange(slave_server.port, raw)
    assert M.money_minor(M.read_reply(fr, METER, 0x00900200)) == 1234500
    # control 0x1C trip, password 02 12 34 56, operator 0, expiry in an hour (ss mm hh DD MM YY)
    expiry = int(time.time()) + 3600
    from agent.dlt645.clock import encode_time

    data = bytes((0x02, 0x12, 0x34, 0x56)) + bytes(4) + bytes((0x1A, 0x00)) + encode_time(expiry, TZ_MIN * 60, "YYMMDDhhmmss")
    raw = DLT645Protocol.build_frame(ADDR, 0x1C, data)
    assert raw == M.control_request(METER, bytes((0x02, 0x12, 0x34, 0x56)), 0x1A, expiry, TZ_MIN)
    fr = _exchange(slave_server.port, raw)
    assert fr.control == 0x9C and fr.data == b""
    assert [e.name for e in slave_server.core.events] == ["trip"]
    # the package decodes our abnormal reply for a wrong password
    raw = DLT645Protocol.build_frame(ADDR, 0x1C, bytes((0x02, 0, 0, 0)) + data[4:])
    reply = _exchange(slave_server.port, raw)
    decoded = DLT645Protocol.deserialize(reply.encode())
    assert decoded.ctrl_code == 0xDC and bytes(decoded.data) == bytes((F.ERR_PASSWORD,))
    assert len(slave_server.core.events) == 1


def test_package_time_sync_is_ignored_because_its_fields_are_reversed(slave_server, pkg_client):
    """Its 0x08 sends YY MM DD hh mm ss; meters expect ss mm hh DD MM YY."""
    import datetime

    client = pkg_client(TcpClient("127.0.0.1", slave_server.port, timeout=1))
    try:
        assert client.broadcast_time_sync(datetime.datetime(2023, 11, 15, 6, 13, 20))
        time.sleep(0.3)
    finally:
        client.disconnect()
    assert slave_server.core.events == []  # "ss=23 mm=11 hh=15 DD=06 MM=13" is no time


@pytest.fixture(scope="module")
def server_service():
    svc = MeterServerService.new_tcp_server("127.0.0.1", 0, timeout=2)
    svc.set_address(PKG_ADDRESS)
    svc.set_00(0x00010000, 1234.56)
    return svc


@pytest.fixture
def package_server(server_service):
    assert server_service.server.start()
    yield server_service
    server_service.server.stop()


def test_our_master_reads_package_server_over_socket_url(package_server):
    with SerialMaster("socket://127.0.0.1:%d" % package_server.server.port, timeout=2) as m:
        assert m.read_energy_wh(METER) == 1234560
        assert m.read_address() == METER
        with pytest.raises(M.ReplyError) as err:
            m.read(METER, 0x00900200)  # the package has no balance DIs
        assert err.value.err & F.ERR_NO_DATA


def test_our_master_reads_package_rtu_server_over_ptys(ptys, server_service):
    rtu = RtuServer(ptys.a, 8, 1, 2400, "N", 2.0, server_service)
    assert rtu.start()
    try:
        with SerialMaster(ptys.b, baud=2400, parity="N", timeout=2) as m:
            assert m.read_energy_wh(METER) == 1234560
    finally:
        rtu.stop()


def test_our_master_times_out_cleanly(slave_server):
    with SerialMaster("socket://127.0.0.1:%d" % slave_server.port, timeout=0.3, retries=0) as m:
        with pytest.raises(LinkTimeout):
            m.read("000000000001", 0x00010000)
        assert m.read_energy_wh(METER) == 1234560  # still usable after a timeout


addresses = st.binary(min_size=6, max_size=6)


@settings(max_examples=200, deadline=None)
@given(addresses, st.integers(0, 255), st.binary(max_size=200), st.integers(0, 4))
def test_encoder_byte_identical_to_package(address, control, data, preamble):
    ours = F.encode(address, control, data, preamble)
    assert ours == bytes(DLT645Protocol.build_frame(address, control, data, preamble))
    fr = F.decode_one(ours)
    theirs = DLT645Protocol.deserialize(ours)
    assert (fr.address, fr.control, fr.data) == (bytes(theirs.addr), theirs.ctrl_code, bytes(theirs.data))
