"""Fuzzing the DL/T 645 parser and slave: nothing raises, nothing stray is answered."""

from hypothesis import given, settings, strategies as st

from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.bcd import address_to_wire
from portable.dlt645_view import METER, WALL, View, make_slave

ADDR = address_to_wire(METER)
OTHER = address_to_wire("000000000001")
VALID = [
    M.read_request(METER, 0x00010000),
    M.read_request("AAAAAAAAAAAA", 0x0001FF00),
    M.read_address_request(),
    F.encode(ADDR, 0x91, bytes(8), 0),
    M.time_broadcast(WALL, 480),
]


def _chunks(data, cuts):
    points = sorted(set(c % (len(data) + 1) for c in cuts))
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 10000), max_size=20))
def test_parser_never_raises_and_ignores_chunking(data, cuts):
    whole = F.Parser()
    expected = whole.feed(data)
    split = F.Parser()
    got = []
    for chunk in _chunks(data, cuts):
        got.extend(split.feed(chunk))
    assert got == expected
    assert split.pending() == whole.pending() <= 211  # never more than one frame's worth
    for fr in got + split.timeout():
        # every frame delivered is well-formed: it re-encodes to bytes found in the input
        assert fr.encode(0) in data
        assert len(fr.address) == 6 and len(fr.data) <= F.MAX_DATA


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=40), st.sampled_from(VALID)), min_size=1, max_size=5),
    st.lists(st.integers(0, 10000), max_size=20),
)
def test_frames_hidden_in_garbage_are_all_found(parts, cuts):
    stream = b"".join(g + f for g, f in parts)
    p = F.Parser()
    got = []
    for chunk in _chunks(stream, cuts):
        got.extend(p.feed(chunk))
    got.extend(p.timeout())
    wanted = [F.decode_one(f) for _, f in parts]
    # in order, as a subsequence (garbage could in theory hold a frame of its own)
    it = iter(got)
    assert all(any(w == g for g in it) for w in wanted)


addresses = st.sampled_from([ADDR, OTHER, F.WILDCARD, F.BROADCAST, b"\xaa\xaa\xaa\xaa\x34\x12", b"\xaa\xaa\xaa\xaa\x34\x13"])


PASSWORD = bytes((0x02, 0x12, 0x34, 0x56))
payloads = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=12, max_size=12).map(lambda b: PASSWORD + b),  # control frames that pass the password
    st.tuples(st.sampled_from([0x00, 0x0001, 0x0090, 0x0400, 0x0506, 0x1D00, 0x1E00, 0x0333]),
              st.integers(0, 0xFFFF)).map(lambda t: bytes((t[1] & 0xFF, t[1] >> 8, t[0] & 0xFF, t[0] >> 8))),
)


@settings(max_examples=300, deadline=None)
@given(addresses, st.integers(0, 255), payloads, st.integers(WALL - 10**8, WALL + 10**8))
def test_slave_never_raises_and_answers_only_its_own_address(address, control, data, wall):
    slave = make_slave()
    fr = F.Frame(address, control, data)
    reply, events = slave.handle(fr, View(), wall, 0)
    assert slave.errors == 0, slave.last_error
    if address in (OTHER, b"\xaa\xaa\xaa\xaa\x34\x13") or control & 0x80:
        assert reply is None and events == []
    if address == F.BROADCAST:
        assert reply is None
    if reply is not None:
        out = F.decode_one(reply)
        assert out.address == ADDR
        assert out.control in (fr.function | 0x80, fr.function | 0xC0)
        if out.is_abnormal:
            assert len(out.data) == 1 and out.data[0] in (1, 2, 4, 8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID[:3]), st.integers(0, 10**6), st.integers(1, 255))
def test_a_corrupted_byte_is_never_answered(raw, where, flip):
    start = raw.index(b"\x68")
    i = start + where % (len(raw) - start)
    bad = bytearray(raw)
    bad[i] ^= flip
    p = F.Parser()
    frames = p.feed(bytes(bad)) + p.timeout()
    assert frames == []


@settings(max_examples=250, deadline=None)
@given(payloads.filter(lambda b: len(b) >= 4))
def test_reads_of_any_identifier_answer_or_say_no_such_data(data):
    slave = make_slave()
    reply, events = slave.handle(F.Frame(ADDR, F.READ, data), View(), WALL, 0)
    assert events == [] and slave.errors == 0, slave.last_error
    out = F.decode_one(reply)
    if out.is_abnormal:
        assert out.control == 0xD1 and out.data == bytes((F.ERR_NO_DATA,))
    else:
        assert out.control == 0x91 and out.data[:4] == data[:4] and len(out.data) > 4
