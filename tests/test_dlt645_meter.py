"""The DL/T 645 slave serving the real core (agent.meter.Meter) as its view."""

from agent import config
from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.config import SCHEMA as DLT645_SCHEMA
from agent.dlt645.slave import Slave
from agent.events import Ack, Boot, Pulses, TopUp
from agent.meter import SCHEMA, Meter

METER = "123456781012"
PASSWORD = bytes((0x02, 0x12, 0x34, 0x56))
WALL = 1767225600 + 10 * 3600  # 2026-01-01 18:00 at UTC+8


def _setup():
    meter = Meter(config.validate({"meter": {"id": METER, "constant": 1000},
                                   "account": {"opening_balance": 500000}}, SCHEMA))
    meter.handle(Boot(WALL, 0))
    meter.handle(Pulses(2000, WALL + 60, 60000))  # 2 kWh
    slave = Slave(config.validate({"password": "02123456", "control": True}, DLT645_SCHEMA), 480)
    return meter, slave


def _ask(slave, meter, raw, wall=WALL + 120, mono=120000):
    reply, events = slave.handle(F.decode_one(raw), meter, wall, mono)
    for ev in events:
        for action in meter.handle(ev):
            if isinstance(action, Ack):
                reply = slave.ack(action) or reply
    return F.decode_one(reply) if reply else None, events


def test_reads_from_the_real_meter():
    meter, slave = _setup()
    assert M.address_reply(_ask(slave, meter, M.read_address_request())[0]) == METER
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x00010000))
    assert M.energy_wh(M.read_reply(fr, METER, 0x00010000)) == meter.energy_wh == 2000
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x0001FF00))
    block = M.energy_block_wh(M.read_reply(fr, METER, 0x0001FF00))
    assert block == [2000] + [w // 10 * 10 for w in meter.rate_energy_wh]
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x00900200))
    assert M.money_minor(M.read_reply(fr, METER, 0x00900200)) == meter.balance // 100 * 100
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x04000503))
    word = M.read_reply(fr, METER, 0x04000503)
    assert word[1] & 0x03 == 0x02  # money prepaid
    for di in (0x04001001, 0x04001002, 0x04001003, 0x04001004, 0x04001005):
        fr, _ = _ask(slave, meter, M.read_request(METER, di))
        assert not fr.is_abnormal


def test_control_trip_goes_through_the_core_and_is_recorded():
    meter, slave = _setup()
    raw = M.control_request(METER, PASSWORD, 0x1A, WALL + 3600, 480)
    fr, events = _ask(slave, meter, raw)
    assert [e.name for e in events] == ["trip"]
    assert fr.control == 0x9C
    assert meter.relay_closed is False
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x04000503))
    assert M.read_reply(fr, METER, 0x04000503)[0] & 0x40  # relay command state: trip
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x1D000001))
    assert M.read_reply(fr, METER, 0x1D000001) == bytes((1, 0, 0))
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x1D000101))
    assert len(M.read_reply(fr, METER, 0x1D000101)) == 18
    # guarantee on, then a trip is refused by the core: an abnormal reply
    fr, _ = _ask(slave, meter, M.control_request(METER, PASSWORD, 0x1C, WALL + 3600, 480))
    fr, _ = _ask(slave, meter, M.control_request(METER, PASSWORD, 0x3A, WALL + 3600, 480))
    assert fr.control == 0x9C
    fr, _ = _ask(slave, meter, M.control_request(METER, PASSWORD, 0x1A, WALL + 3600, 480))
    assert fr.control == 0xDC and fr.data == bytes((F.ERR_OTHER,))
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x04000503))
    assert M.read_reply(fr, METER, 0x04000503)[1] & 0x10  # bit12 guarantee power


def test_delayed_trip_and_purchases():
    meter, slave = _setup()
    fr, events = _ask(slave, meter, M.control_request(METER, PASSWORD, 0x1E, WALL + 3600, 480, n2=6))
    assert events[0].args == {"minutes": 30, "then": "allow"} and fr.control == 0x9C
    meter.handle(TopUp(1000000, "t1", WALL + 200, 200000))
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x03330301))
    assert M.money_minor(M.read_reply(fr, METER, 0x03330301)) == 1000000
    fr, _ = _ask(slave, meter, M.read_request(METER, 0x03330201))
    assert M.read_reply(fr, METER, 0x03330201) == bytes((1, 0))
