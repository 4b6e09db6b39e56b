"""DL/T 645 master request builders, reply decoders and the pulse cross-check.

Plain asserts, no pytest (see tests/mpy_runner.py).
"""

from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.bcd import address_to_wire, to_bcd

METER = "123456781012"
ADDR = address_to_wire(METER)


def _reply(control, data, address=ADDR):
    return F.decode_one(F.encode(address, control, data))


def _raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError("no %s" % exc_type.__name__)


def test_read_request_matches_worked_example():
    assert M.read_request(METER, 0x00010000).hex() == "fefefefe681210785634126811043333343" "3e816"


def test_read_reply_checks_function_address_and_di():
    good = _reply(0x91, bytes.fromhex("00000100") + to_bcd(123456, 4))
    assert M.energy_wh(M.read_reply(good, METER, 0x00010000)) == 1234560
    assert "echo" in str(_raises(ValueError, M.read_reply, good, METER, 0x00000000))
    assert "not the meter" in str(_raises(ValueError, M.read_reply, good, "000000000001", 0x00010000))
    request = _reply(0x11, bytes.fromhex("00000100"))
    assert "not a reply" in str(_raises(ValueError, M.read_reply, request, METER, 0x00010000))
    err = _raises(M.ReplyError, M.read_reply, _reply(0xD1, b"\x06"), METER, 0x00010000)
    assert err.err == 6 and "no such data" in str(err) and "password" in str(err)
    bad_bcd = _reply(0x91, bytes.fromhex("000001001A000000"))
    assert "BCD" in str(_raises(ValueError, M.energy_wh, M.read_reply(bad_bcd, METER, 0x00010000)))


def test_broadcast_frames():
    fr = F.decode_one(M.time_broadcast(1700000000, 480))
    assert fr.address == F.BROADCAST and fr.control == 0x08
    assert fr.data == bytes((0x20, 0x13, 0x06, 0x15, 0x11, 0x23))  # ss mm hh DD MM YY
    assert F.decode_one(M.freeze_broadcast()).data == b"\x99\x99\x99\x99"


def test_drift_finding_is_pure_and_integer():
    assert M.drift_finding(10000, 10000, 100, 20) is None
    assert M.drift_finding(10100, 10000, 100, 0) is None
    reason, data = M.drift_finding(10101, 10000, 100, 0)
    assert reason == "register_drift" and data["drift_wh"] == 101 and data["limit_wh"] == 100
    # relative limit: 2 % of 1 MWh = 20 kWh
    assert M.drift_finding(1019000, 1000000, 100, 20) is None
    assert M.drift_finding(979000, 1000000, 100, 20)[1]["drift_wh"] == -21000


def test_cross_check_baseline_rollover_and_backwards():
    cc = M.CrossCheck(100, 0)
    assert cc.update(5000, 999999000) == []  # baseline
    assert cc.update(6000, 1000000000) == []
    # register rolls over past 999999.99 kWh: not a fault
    assert cc.update(7000, 1000) == []
    found = cc.update(9000, 1500)  # since the baseline: pulses 4000 Wh, register 2500 Wh
    assert found == [("register_drift", {"pulse_wh": 4000, "register_wh": 2500, "drift_wh": 1500, "limit_wh": 100})]
    assert cc.update(9100, 1600) == []  # re-baselined after the finding
    assert cc.update(9200, 100)[0][0] == "register_backwards"
