"""DL/T 645 slave reads against a stand-in meter view, on CPython and MicroPython.

Plain asserts, no pytest (see tests/mpy_runner.py).
"""

from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.bcd import from_bcd, to_bcd

from portable.dlt645_view import ADDR, METER, WALL, View, ask, make_slave, read, value

def test_worked_example_reply_from_the_slave():
    slave = make_slave()
    slave.preamble = 0
    v = View()
    v.energy_wh = 1234560
    reply, _ = slave.handle(F.decode_one(M.read_request(METER, 0x00010000)), v, WALL, 0)
    assert reply == bytes.fromhex("68121078563412689108333334338967453 3D416".replace(" ", ""))


def test_read_address_with_wildcard_and_own_address():
    slave = make_slave()
    fr, _ = ask(slave, M.read_address_request())
    assert M.address_reply(fr) == METER
    fr, _ = ask(slave, F.encode(ADDR, F.READ_ADDRESS))
    assert M.address_reply(fr) == METER


def test_other_address_and_replies_get_no_answer():
    slave = make_slave()
    fr, ev = ask(slave, M.read_request("000000000001", 0x00010000))
    assert fr is None and ev == []
    fr, ev = ask(slave, F.encode(ADDR, 0x91, bytes(8)))
    assert fr is None and ev == []
    fr, ev = ask(slave, F.encode(F.BROADCAST, F.READ, bytes(4)))
    assert fr is None and ev == []
    assert slave.ignored == 3


def test_energy_registers():
    slave = make_slave()
    assert M.energy_wh(value(slave, 0x00000000)) == 1234560
    assert M.energy_wh(value(slave, 0x00010000)) == 1234560
    assert M.energy_wh(value(slave, 0x00020000)) == 0
    assert [M.energy_wh(value(slave, 0x00010000 | (r << 8))) for r in (1, 2, 3, 4)] == [
        100000, 300000, 500000, 334560]
    assert M.energy_block_wh(value(slave, 0x0001FF00)) == [1234560, 100000, 300000, 500000, 334560]
    # wildcard reads work too
    fr = read(slave, 0x00010000, address="AAAAAAAAAAAA")
    assert M.energy_wh(M.read_reply(fr, METER, 0x00010000)) == 1234560


def test_energy_rolls_over_like_a_register():
    slave = make_slave()
    v = View()
    v.energy_wh = 1000000000 + 12340
    assert M.energy_wh(value(slave, 0x00010000, v)) == 12340


def test_unknown_data_is_no_such_data():
    slave = make_slave()
    for di in (0x00010500, 0x00030000, 0x02010100, 0x0506013F, 0x05060103, 0x00010001):
        fr = read(slave, di)
        assert fr.control == 0xD1 and fr.data == bytes((F.ERR_NO_DATA,)), hex(di)
        try:
            M.read_reply(fr, METER, di)
        except M.ReplyError as exc:
            assert exc.err == F.ERR_NO_DATA and "no such data" in str(exc)
        else:
            raise AssertionError("no ReplyError")


def test_balances_in_cents_without_floats():
    slave = make_slave()
    v = View()
    v.balance = 1234567  # 123.4567 CNY -> 123.45 shown (never more than there is)
    assert value(slave, 0x00900200, v) == to_bcd(12345, 4)
    assert value(slave, 0x00900201, v) == to_bcd(0, 4)
    v.balance = -50001  # 5.0001 CNY of overdraft used -> 5.01 owed (never less)
    assert value(slave, 0x00900200, v) == to_bcd(0, 4)
    assert value(slave, 0x00900201, v) == to_bcd(501, 4)
    assert M.money_minor(value(slave, 0x00900201, v)) == 50100
    v.balance = 10 ** 13  # beyond 999999.99 CNY: clamped, not wrapped
    assert value(slave, 0x00900200, v) == to_bcd(99999999, 4)


def test_money_limits():
    slave = make_slave()
    got = [M.money_minor(value(slave, 0x04001000 + i)) for i in (1, 2, 3, 4, 5)]
    assert got == [200000, 100000, 50000, 99990000, 10000]


def test_status_word3_bits():
    slave = make_slave()
    v = View()

    def word():
        d = value(slave, 0x04000503, v)
        return d[0] | (d[1] << 8)

    assert word() == 0x0200  # closed, money prepaid
    v.relay_position = False
    v.relay_closed = False
    v.alarm_level = 2
    assert word() == 0x0200 | 0x10 | 0x40 | 0x80
    v.relay_position = None  # no feedback contact: assume it followed the command
    assert word() & 0x10
    v.relay_closed = True
    v.alarm_level = 0
    v.relay_state = "guarantee"
    v.payment_mode = "postpaid"
    assert word() == 0x1000


def test_daily_freezes():
    slave = make_slave()
    # time of the last daily freeze: YYMMDDhhmm -> 2023-11-15 00:00 local
    assert value(slave, 0x05060001) == bytes((0x00, 0x00, 0x15, 0x11, 0x23))
    assert value(slave, 0x05060002) == bytes((0x00, 0x00, 0x14, 0x11, 0x23))
    assert M.energy_block_wh(value(slave, 0x05060101)) == [1200000, 100000, 290000, 480000, 330000]
    assert M.energy_block_wh(value(slave, 0x05060102))[0] == 1100000


def test_trip_close_and_purchase_records():
    slave = make_slave()
    assert from_bcd(value(slave, 0x1D000001)) == 1
    assert from_bcd(value(slave, 0x1E000001)) == 2
    trip = value(slave, 0x1D000101)
    assert len(trip) == 18
    assert trip[0:6] == bytes((0x20, 0x13, 0x05, 0x15, 0x11, 0x23))  # 05:13:20
    assert from_bcd(trip[6:10]) == 12345678
    assert M.energy_wh(trip[10:14]) == 1230000
    assert M.energy_wh(value(slave, 0x1E000102)[10:14]) == 0
    assert read(slave, 0x1D000102).control == 0xD1
    assert from_bcd(value(slave, 0x03330201)) == 1
    assert M.money_minor(value(slave, 0x03330301)) == 1000000
    assert value(slave, 0x03330101) == bytes((0x13, 0x04, 0x15, 0x11, 0x23))


def test_broken_view_gives_other_error_not_a_crash():
    slave = make_slave()
    v = View()
    v.daily_freezes = None
    fr = read(slave, 0x05060101, v)
    assert fr.control == 0xD1 and fr.data == bytes((F.ERR_OTHER,))
    assert slave.errors == 1 and "TypeError" in slave.last_error


def test_address_defaults_to_meter_id():
    slave = make_slave(address=None)
    fr, _ = ask(slave, M.read_address_request())
    assert M.address_reply(fr) == METER
