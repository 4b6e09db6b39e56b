"""DL/T 645 frame codec, parser and BCD helpers, on CPython and MicroPython.

Plain asserts, no pytest: tests/mpy_runner.py runs this on the MicroPython
unix port (tests/test_dlt645_portable.py) and pytest collects it natively.
"""

from agent.dlt645 import frame as F
from agent.dlt645 import bcd, clock

REQUEST = bytes.fromhex("FEFEFEFE68121078563412681104333334 33E816".replace(" ", ""))
REPLY = bytes.fromhex("6812107856341268910833333433896745 33D416".replace(" ", ""))
METER = "123456781012"


def _raises(fn, *args):
    try:
        fn(*args)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("no ValueError from %r%r" % (fn, args))


def test_worked_example_request_byte_for_byte():
    addr = bcd.address_to_wire(METER)
    assert addr == bytes.fromhex("121078563412")
    assert F.encode(addr, F.READ, bytes.fromhex("00000100")) == REQUEST


def test_worked_example_reply_byte_for_byte():
    addr = bcd.address_to_wire(METER)
    data = bytes.fromhex("00000100") + bcd.to_bcd(123456, 4)
    assert F.encode(addr, 0x91, data, 0) == REPLY
    fr = F.decode_one(REPLY)
    assert fr.address == addr and fr.control == 0x91 and fr.is_reply and not fr.is_abnormal
    assert bcd.from_bcd(fr.data[4:]) == 123456


def test_parser_whole_frame_byte_by_byte_and_with_garbage():
    p = F.Parser()
    out = []
    for b in b"\x00\x68\x16\xfe" + REQUEST + b"\x12" + REPLY:
        out.extend(p.feed(bytes((b,))))
    assert [f.control for f in out] == [0x11, 0x91]
    assert out[0].data == bytes.fromhex("00000100")
    assert p.pending() == 0


def test_parser_many_frames_in_one_chunk():
    p = F.Parser()
    frames = p.feed(REQUEST * 3 + REPLY[:5])
    assert len(frames) == 3
    assert p.pending() == 5
    assert len(p.feed(REPLY[5:])) == 1


def test_parser_rejects_bad_checksum_terminator_and_length():
    bad_cs = bytearray(REPLY)
    bad_cs[-2] ^= 1
    bad_end = bytearray(REPLY)
    bad_end[-1] = 0x17
    p = F.Parser()
    assert p.feed(bytes(bad_cs)) == []
    assert p.feed(bytes(bad_end)) == []
    assert p.rejected >= 2
    too_long = b"\x68" + b"\x11" * 6 + b"\x68\x11" + bytes((201,)) + b"\x00" * 203
    assert p.feed(too_long) == []
    # a good frame after all that is still found
    assert len(p.feed(REPLY)) == 1


def test_parser_timeout_recovers_frame_swallowed_by_truncated_one():
    p = F.Parser()
    # a header announcing 100 data bytes, then silence, then a real request
    stalled = b"\x68" + bytes.fromhex("121078563412") + b"\x68\x11" + bytes((100,))
    assert p.feed(stalled + REQUEST) == []
    frames = p.timeout()
    assert len(frames) == 1 and frames[0].function == F.READ
    assert p.timeout() == []


def test_encode_limits():
    addr = bcd.address_to_wire(METER)
    assert len(F.encode(addr, 0x91, bytes(200), 0)) == 212
    assert "data" in _raises(F.encode, addr, 0x91, bytes(201))
    assert "address" in _raises(F.encode, b"\x00", 0x11, b"")


def test_bcd_round_trip_and_rejection():
    assert bcd.to_bcd(12345678, 4) == bytes((0x78, 0x56, 0x34, 0x12))
    assert bcd.from_bcd(bytes((0x78, 0x56, 0x34, 0x12))) == 12345678
    assert "not BCD" in _raises(bcd.from_bcd, bytes((0x1A,)), "energy")
    assert "energy" in _raises(bcd.from_bcd, bytes((0x00, 0xF0)), "energy")
    assert "fit" in _raises(bcd.to_bcd, 100, 1)
    assert "non-negative" in _raises(bcd.to_bcd, -1, 1)
    assert bcd.is_bcd(b"\x99\x00") and not bcd.is_bcd(b"\xaa")


def test_address_helpers():
    assert bcd.address_from_wire(bcd.address_to_wire(METER)) == METER
    assert bcd.address_to_wire("AAAAAAAAAAAA") == F.WILDCARD
    assert bcd.address_to_wire("999999999999") == F.BROADCAST
    assert "12 digits" in _raises(bcd.address_to_wire, "1234")
    assert "decimal" in _raises(bcd.address_to_wire, "12345678101x")
    assert bcd.hex_to_bytes("02123456") == bytes((2, 0x12, 0x34, 0x56))
    assert "hex" in _raises(bcd.hex_to_bytes, "+1234567", "password")


def test_clock_fields_round_trip():
    tz = 480 * 60
    wall = 1700000000  # 2023-11-15 06:13:20 local (UTC+8)
    wire = clock.encode_time(wall, tz, "YYMMDDhhmmss")
    assert wire == bytes((0x20, 0x13, 0x06, 0x15, 0x11, 0x23))
    assert clock.decode_time(wire, tz) == wall
    assert clock.encode_time(wall, tz, "YYMMDDWW") == bytes((0x03, 0x15, 0x11, 0x23))  # Wednesday
    assert "not a date" in _raises(clock.decode_time, bytes((0, 0, 0, 0x31, 0x02, 0x24)), tz)
    assert "valid" in _raises(clock.decode_time, bytes((0x60, 0, 0, 1, 1, 0x24)), tz)
    assert "BCD" in _raises(clock.decode_time, bytes((0x0A, 0, 0, 1, 1, 0x24)), tz)
