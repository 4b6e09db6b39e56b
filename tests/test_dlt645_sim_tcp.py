"""``pmeter sim run --dlt645 tcp://HOST:PORT``: a simulated meter read and controlled over TCP.

The command runs as a real process; the independent PyPI package
``dlt645`` and pyserial's ``socket://`` (through our master) talk to it
the way a tester's concentrator or handheld would.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import dlt645
from dlt645 import DLT645Protocol, MeterClientService, TcpClient

from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.bcd import address_to_wire
from agent.dlt645.clock import encode_time
from hw.serial_link import SerialMaster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PMETER = [sys.executable, "-m", "pmeter"]
METER = "100000000001"  # meter 0 of the embedded demo configuration
ADDR = address_to_wire(METER)
PASSWORD = bytes((0x02, 0, 0, 0))  # the simulator's control password, 02000000 (sim.dlt645_tcp.SIM_PASSWORD)
TZ_MIN = 480
TRIP, CLOSE_DIRECT = 0x1A, 0x1C

dlt645.disable_logging()


class SimProcess:
    """``pmeter sim run --dlt645 tcp://127.0.0.1:0`` in the background."""

    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            PMETER + ["sim", "run", "--dlt645", "tcp://127.0.0.1:0"] + list(extra),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines = []
        self.port = None
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("no banner; stderr: %s" % self.proc.stderr.read())
            self.lines.append(line)
            if "DL/T 645 slave on tcp://127.0.0.1:" in line:
                self.port = int(line.split("tcp://127.0.0.1:")[1].split()[0])

    def stop(self):
        """SIGTERM; returns (exit code, every stdout line, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, self.lines + out.splitlines(True), err


@pytest.fixture
def sim():
    s = SimProcess()
    yield s
    s.stop()


def _control(n1):
    expiry = int(time.time()) + 3600
    data = PASSWORD + bytes(4) + bytes((n1, 0)) + encode_time(expiry, TZ_MIN * 60, "YYMMDDhhmmss")
    return DLT645Protocol.build_frame(ADDR, 0x1C, data)


def _status3(master):
    return master.read(METER, 0x04000503)


def test_the_package_reads_and_controls_the_simulated_meter(sim):
    client = MeterClientService(TcpClient("127.0.0.1", sim.port, timeout=2))
    try:
        assert client.read_address().value == ADDR.hex()
        assert client.read_00(0x00010000).value >= 0
        reply = client.client.send_request(DLT645Protocol.build_frame(ADDR, 0x11, bytes((0x00, 0x02, 0x90, 0x00))))
        balance = M.money_minor(M.read_reply(F.decode_one(bytes(reply)), METER, 0x00900200))
        assert 490000 < balance <= 500000  # 50 CNY opening balance, a few seconds of 1 kW charged
        trip = DLT645Protocol.deserialize(bytes(client.client.send_request(_control(TRIP))))
        assert trip.ctrl_code == 0x9C
    finally:
        client.client.disconnect()
    with SerialMaster("socket://127.0.0.1:%d" % sim.port, timeout=2) as m:
        assert _status3(m)[0] & 0x40  # relay command state: trip
    code, lines, err = sim.stop()
    assert code == 0, err
    text = "".join(lines)
    assert "event trip command_trip" in text and "command dlt645-1: result accepted" in text
    assert "relay tripped_command" in lines[-1]


def test_pyserial_socket_url_master_reads_and_closes(sim):
    with SerialMaster("socket://127.0.0.1:%d" % sim.port, timeout=2) as m:
        assert m.read_address() == METER
        assert m.read_energy_wh(METER) >= 0
        for n1, tripped in ((TRIP, True), (CLOSE_DIRECT, False)):
            fr, _ = m.request(M.control_request(METER, PASSWORD, n1, int(time.time()) + 3600, TZ_MIN), F.CONTROL, METER)
            assert fr.control == 0x9C
            assert bool(_status3(m)[0] & 0x40) == tripped
        # a wrong password changes nothing: an abnormal reply, relay still closed
        with pytest.raises(M.ReplyError):
            m.request(M.control_request(METER, bytes((0x02, 9, 9, 9)), TRIP, int(time.time()) + 3600, TZ_MIN), F.CONTROL, METER)
        assert not _status3(m)[0] & 0x40
    code, lines, _ = sim.stop()
    assert code == 0 and "relay connected" in lines[-1]


@pytest.mark.parametrize("args, message", [
    (["--dlt645", "udp://127.0.0.1:8645"], "--dlt645: 'udp://127.0.0.1:8645' must look like tcp://HOST:PORT"),
    (["--dlt645", "tcp://127.0.0.1:99999"], "--dlt645: '127.0.0.1:99999' must look like tcp://HOST:PORT"),
    (["--dlt645", "tcp://127.0.0.1:0", "--meters", "3"], "--meters cannot be combined with --dlt645"),
    (["--dlt645", "tcp://127.0.0.1:0", "--live", "mqtt://127.0.0.1:1883"], "--live cannot be combined with --dlt645"),
    (["--dlt645", "tcp://127.0.0.1:0", "--runtime", "micropython"], "--runtime cannot be combined with --dlt645"),
])
def test_bad_dlt645_arguments_exit_2(args, message):
    r = subprocess.run(PMETER + ["sim", "run"] + args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_a_port_in_use_is_refused_by_name():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run(PMETER + ["sim", "run", "--dlt645", "tcp://127.0.0.1:%d" % port], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--dlt645: cannot listen on 127.0.0.1:%d" % port in r.stderr


def test_the_meter_comes_from_the_config_file(tmp_path):
    config = tmp_path / "meter.toml"
    config.write_text('[meter]\nid = "123456781012"\nconstant = 1000\n\n[account]\nopening_balance = 1230000\n')
    s = SimProcess("--config", str(config), "--feedback")
    try:
        assert "simulated meter 123456781012:" in s.lines[-1] and "balance 123.0000 CNY" in s.lines[-1]
        with SerialMaster("socket://127.0.0.1:%d" % s.port, timeout=2) as m:
            assert m.read_address() == "123456781012"
            assert 1220000 < M.money_minor(m.read("123456781012", 0x00900200)) <= 1230000  # a few seconds of 1 kW
    finally:
        code, _, err = s.stop()
    assert code == 0, err
