"""The hand-written msgpack codec against the `msgpack` package, and fuzzed."""

import msgpack as reference
import pytest
from hypothesis import given, settings, strategies as st

from agent.codec.msgpack import INT_MIN, UINT_MAX, pack, unpack

ints = st.one_of(
    st.integers(min_value=INT_MIN, max_value=UINT_MAX),
    # the width boundaries are where encoders go wrong
    st.sampled_from(
        [b + d for b in (0, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1)
         for d in (-1, 0, 1)]
        + [-b + d for b in (32, 33, 128, 129, 32768, 32769, 2**31, 2**31 + 1, 2**63) for d in (-1, 0, 1)]
    ).filter(lambda n: INT_MIN <= n <= UINT_MAX),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.binary(max_size=300),
    st.text(max_size=300),
)
keys = st.one_of(
    st.dictionaries(st.text(max_size=40), st.just(0), max_size=20).map(lambda d: list(d)),
    st.dictionaries(ints, st.just(0), max_size=20).map(lambda d: list(d)),
    st.dictionaries(st.binary(max_size=20), st.just(0), max_size=20).map(lambda d: list(d)),
)


def _maps(children):
    return st.tuples(keys, st.lists(children, min_size=0, max_size=20)).map(
        lambda kv: {k: kv[1][i % len(kv[1])] if kv[1] else None for i, k in enumerate(kv[0])}
    )


values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=20), _maps(children)),
    max_leaves=60,
)


def sorted_copy(obj):
    """The same value with every dict rebuilt in sorted key order (CPython keeps it)."""
    if isinstance(obj, dict):
        return {k: sorted_copy(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [sorted_copy(v) for v in obj]
    return obj


@settings(max_examples=250, deadline=None)
@given(values)
def test_codec_byte_identical_to_msgpack_package(value):
    ours = pack(value)
    assert ours == reference.packb(sorted_copy(value), use_bin_type=True)
    assert unpack(ours) == value
    assert unpack(ours, canonical=True) == value


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), ints, max_size=12))
def test_codec_dict_order_does_not_change_bytes(d):
    backwards = {}
    for k in sorted(d, reverse=True):
        backwards[k] = d[k]
    assert pack(d) == pack(backwards) == pack(sorted_copy(d))


def test_codec_long_lengths_match_package():
    for value in ["x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 70000, b"y" * 255, b"y" * 256,
                  b"y" * 70000, list(range(15)), list(range(16)), list(range(70000)),
                  {("k%05d" % i): i for i in range(15)}, {("k%05d" % i): i for i in range(16)},
                  {("k%05d" % i): i for i in range(70000)}]:
        assert pack(value) == reference.packb(value, use_bin_type=True)
        assert unpack(pack(value)) == value


def test_codec_tuple_packs_as_array():
    assert pack((1, "a")) == pack([1, "a"]) == reference.packb([1, "a"])
    assert unpack(pack((1, "a"))) == [1, "a"]


@pytest.mark.parametrize(
    "value, words",
    [
        (1.5, "float"),
        ({"a": 1.0}, "float"),
        (2**64, "64-bit"),
        (-(2**63) - 1, "64-bit"),
        ({1: 1, "a": 2}, "mix"),
        ({(1,): 1}, "key"),
        ({True: 1}, "key"),
        (object(), "cannot encode"),
        ({1, 2}, "cannot encode"),
    ],
)
def test_codec_pack_refuses_unsupported(value, words):
    with pytest.raises(ValueError, match=words):
        pack(value)


def test_codec_pack_refuses_deep_nesting():
    v = 0
    for _ in range(40):
        v = [v]
    with pytest.raises(ValueError, match="nesting"):
        pack(v)
    assert unpack(pack(v, max_depth=64), max_depth=64) == v


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "type byte"),
        (b"\xc0\xc0", "trailing"),
        (b"\xcd\x01", "uint"),
        (b"\xa5abc", "str"),
        (b"\xc4\x05ab", "bin"),
        (b"\xc6\xff\xff\xff\xff", "bin"),
        (b"\xdd\xff\xff\xff\xff", "array claims"),
        (b"\xdf\xff\xff\xff\xff\x00", "map claims"),
        (b"\xcb" + b"\x00" * 8, "float"),
        (b"\xca" + b"\x00" * 4, "float"),
        (b"\xc1", "unsupported"),
        (b"\xd4\x01\x00", "unsupported"),
        (b"\xc7\x01\x01\x00", "unsupported"),
        (b"\xa2\xff\xfe", "utf-8"),
        (b"\x82\x01\x01\x01\x02", "duplicate"),
        (b"\x81\x90\x01", "key"),
        (b"\x81\x80\x01", "key"),
        (b"\x91" * 40 + b"\x00", "nesting"),
        ("text", "expected bytes"),
    ],
)
def test_codec_unpack_rejects_bad_input(data, words):
    with pytest.raises(ValueError, match=words):
        unpack(data)


@pytest.mark.parametrize("data", [b"\xcc\x05", b"\xd0\x05", b"\xd9\x01a", b"\x82\xa1b\x01\xa1a\x02", b"\xdc\x00\x00"])
def test_codec_canonical_mode_rejects_non_minimal(data):
    unpack(data)  # valid msgpack
    with pytest.raises(ValueError, match="canonical"):
        unpack(data, canonical=True)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64))
def test_codec_fuzz_unpack_only_valueerror(data):
    try:
        value = unpack(data)
    except ValueError:
        return
    # whatever we accept, the package decodes to the same value
    assert reference.unpackb(data, raw=False, strict_map_key=False) == value


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_codec_fuzz_mutated_valid_encodings(value, data):
    raw = bytearray(pack(value))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)):]
        else:
            raw.insert(data.draw(st.integers(0, len(raw))), data.draw(st.integers(0, 255)))
    try:
        got = unpack(bytes(raw))
    except ValueError:
        return
    assert reference.unpackb(bytes(raw), raw=False, strict_map_key=False) == got
