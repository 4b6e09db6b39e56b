"""DL/T 645 slave control, time and freeze frames, on CPython and MicroPython.

Plain asserts, no pytest (see tests/mpy_runner.py).
"""

from agent import results
from agent.events import Ack, Command, SetClock
from agent.dlt645 import frame as F
from agent.dlt645 import master as M

from portable.dlt645_view import ADDR, METER, PASSWORD, TZ_MIN, WALL, ask, make_slave

def _control(n1, expiry=WALL + 600, password=PASSWORD, n2=0, address=METER):
    return M.control_request(address, password, n1, expiry, TZ_MIN, n2)


def test_control_becomes_command_and_replies_after_ack():
    slave = make_slave()
    for n1, name in ((0x1A, "trip"), (0x1B, "close_allowed"), (0x1C, "close_direct"),
                     (0x2A, "alarm_on"), (0x2B, "alarm_off"), (0x3A, "guarantee_on"),
                     (0x3B, "guarantee_off")):
        fr, events = ask(slave, _control(n1))
        assert fr is None
        assert len(events) == 1 and isinstance(events[0], Command)
        cmd = events[0]
        assert (cmd.name, cmd.args, cmd.wall, cmd.mono) == (name, {}, WALL, 5000)
        reply = F.decode_one(slave.ack(Ack(cmd.ref, results.ACCEPTED, 0)))
        assert reply.control == 0x9C and reply.data == b"" and reply.address == ADDR
        assert slave.ack(Ack(cmd.ref, results.ACCEPTED, 0)) is None  # answered once


def test_delayed_trip_then_close():
    slave = make_slave()
    _, events = ask(slave, _control(0x1D, n2=12))
    assert events[0].name == "trip_then_close"
    assert events[0].args == {"minutes": 60, "then": "close"}
    _, events = ask(slave, _control(0x1E, n2=3))
    assert events[0].args == {"minutes": 15, "then": "allow"}
    fr, events = ask(slave, _control(0x1D, n2=0))
    assert fr.control == 0xDC and events == []


def test_core_refusal_is_an_abnormal_reply():
    slave = make_slave()
    _, events = ask(slave, _control(0x1A))
    reply = F.decode_one(slave.ack(Ack(events[0].ref, results.REFUSED, 0)))
    assert reply.control == 0xDC and reply.data == bytes((F.ERR_OTHER,))


def test_control_rejections():
    slave = make_slave()
    cases = (
        (_control(0x1A, password=bytes((0x02, 0x12, 0x34, 0x57))), F.ERR_PASSWORD),
        (_control(0x1A, password=bytes((0x04, 0x12, 0x34, 0x56))), F.ERR_PASSWORD),
        (_control(0x1A, password=bytes((0x98, 0x12, 0x34, 0x56))), F.ERR_PASSWORD),
        (_control(0x1A, expiry=WALL - 1), F.ERR_OTHER),
        (_control(0x55), F.ERR_OTHER),
        (_control(0x1A, address="AAAAAAAAAAAA"), F.ERR_PASSWORD),
        (F.encode(ADDR, F.CONTROL, PASSWORD + bytes(4)), F.ERR_OTHER),  # too short
        (F.encode(ADDR, F.CONTROL, PASSWORD + bytes(6) + b"\x99\x99\xaa\x00\x01\x01"), F.ERR_OTHER),
    )
    for raw, err in cases:
        fr, events = ask(slave, raw)
        assert events == []
        assert fr.control == 0xDC and fr.data == bytes((err,)), (raw, fr)


def test_wrong_passwords_lock_control_for_the_day():
    slave = make_slave(password_tries=2)
    bad = bytes((0x02, 0, 0, 0))
    for _ in range(2):
        fr, _ = ask(slave, _control(0x1A, password=bad))
        assert fr.data == bytes((F.ERR_PASSWORD,))
    fr, events = ask(slave, _control(0x1A))
    assert events == [] and fr.data == bytes((F.ERR_PASSWORD,))
    # the next local day the right password works again
    fr, events = ask(slave, _control(0x1A, expiry=WALL + 86400 + 600), wall=WALL + 86400)
    assert fr is None and events[0].name == "trip"


def test_control_disabled_by_config():
    slave = make_slave(control=False)
    fr, events = ask(slave, _control(0x1A))
    assert events == [] and fr.data == bytes((F.ERR_PASSWORD,))


def test_broadcast_time_sets_clock_once_a_day_within_limits():
    slave = make_slave()
    fr, events = ask(slave, M.time_broadcast(WALL + 90, TZ_MIN))
    assert fr is None
    assert len(events) == 1 and isinstance(events[0], SetClock)
    assert (events[0].wall, events[0].mono, events[0].source) == (WALL + 90, 5000, "dlt645")
    # a second one the same day is ignored
    assert ask(slave, M.time_broadcast(WALL + 30, TZ_MIN)) == (None, [])
    slave = make_slave()
    assert ask(slave, M.time_broadcast(WALL + 3600, TZ_MIN)) == (None, [])  # step too big
    near_midnight = WALL - 22400 + 60  # 00:01 local
    assert ask(slave, M.time_broadcast(near_midnight + 10, TZ_MIN), wall=near_midnight) == (None, [])
    assert ask(slave, F.encode(F.BROADCAST, F.BROADCAST_TIME, bytes(6))) == (None, [])
    slave = make_slave(time_sync_max_s=0)
    assert ask(slave, M.time_broadcast(WALL + 90, TZ_MIN)) == (None, [])


def test_freeze_broadcast_and_addressed():
    slave = make_slave()
    fr, events = ask(slave, M.freeze_broadcast())
    assert fr is None and [e.name for e in events] == ["freeze"]
    assert slave.ack(Ack(events[0].ref, results.ACCEPTED, 0)) is None  # broadcast: never answered
    fr, events = ask(slave, F.encode(ADDR, F.FREEZE, b"\x99\x99\x99\x99"))
    assert fr is None and events[0].name == "freeze"
    assert F.decode_one(slave.ack(Ack(events[0].ref, results.ACCEPTED, 0))).control == 0x96
    fr, events = ask(slave, F.encode(ADDR, F.FREEZE, b"\x00\x00\x99\x99"))
    assert fr.control == 0xD6 and events == []


def test_refused_functions():
    slave = make_slave()
    for fn, err in ((F.WRITE, F.ERR_PASSWORD), (F.CLEAR_METER, F.ERR_PASSWORD),
                    (F.CHANGE_BAUD, F.ERR_BAUD), (F.READ_MORE, F.ERR_NO_DATA), (0x03, F.ERR_OTHER)):
        fr, events = ask(slave, F.encode(ADDR, fn, bytes(4)))
        assert events == [] and fr.control == fn | 0xC0 and fr.data == bytes((err,))


def test_pending_acks_are_bounded():
    slave = make_slave()
    refs = []
    for _ in range(20):
        refs.append(ask(slave, _control(0x2A))[1][0].ref)
    assert len(slave.pending) == 8
    assert slave.ack(Ack(refs[0], results.ACCEPTED, 0)) is None
    assert slave.ack(Ack(refs[-1], results.ACCEPTED, 0)) is not None
