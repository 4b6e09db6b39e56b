"""Fixed msgpack vectors (made with the `msgpack` package) that must hold on both runtimes."""

from agent.codec.msgpack import pack, unpack

VECTORS = [
    (None, b"\xc0"),
    (True, b"\xc3"),
    (False, b"\xc2"),
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\xcc\x80"),
    (255, b"\xcc\xff"),
    (256, b"\xcd\x01\x00"),
    (65536, b"\xce\x00\x01\x00\x00"),
    (4294967296, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
    (18446744073709551615, b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff"),
    (-1, b"\xff"),
    (-32, b"\xe0"),
    (-33, b"\xd0\xdf"),
    (-129, b"\xd1\xff\x7f"),
    (-32769, b"\xd2\xff\xff\x7f\xff"),
    (-2147483649, b"\xd3\xff\xff\xff\xff\x7f\xff\xff\xff"),
    (-9223372036854775808, b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00"),
    ("", b"\xa0"),
    ("\u00e9t\u00e9", b"\xa5\xc3\xa9t\xc3\xa9"),
    ("x" * 32, b"\xd9\x20" + b"x" * 32),
    (b"", b"\xc4\x00"),
    (b"\x00\xff", b"\xc4\x02\x00\xff"),
    ([], b"\x90"),
    ([1, [2, None]], b"\x92\x01\x92\x02\xc0"),
    (list(range(16)), b"\xdc\x00\x10" + bytes(range(16))),
    ({}, b"\x80"),
    ({"b": 1, "a": [True], "c": {"z": b"\x01"}}, b"\x83\xa1a\x91\xc3\xa1b\x01\xa1c\x81\xa1z\xc4\x01\x01"),
    ({3: "c", 1: "a", -2: "m"}, b"\x83\xfe\xa1m\x01\xa1a\x03\xa1c"),
]


def test_codec_vectors_pack():
    for value, raw in VECTORS:
        assert pack(value) == raw, (value, pack(value), raw)


def test_codec_vectors_unpack():
    for value, raw in VECTORS:
        assert unpack(raw) == value, (raw, unpack(raw), value)
        assert unpack(raw, canonical=True) == value


def test_codec_dict_order_independent():
    a = {}
    b = {}
    names = ["k%d" % i for i in range(40)]
    for n in names:
        a[n] = len(n)
    for n in reversed(names):
        b[n] = len(n)
    assert pack(a) == pack(b)


def test_codec_rejects_with_valueerror():
    bad = [b"", b"\xc0\x00", b"\xcd\x01", b"\xa5ab", b"\xdd\xff\xff\xff\xff", b"\xcb" + bytes(8),
           b"\xc1", b"\xa2\xff\xfe", b"\x82\x01\x01\x01\x02", b"\x91" * 40 + b"\x00"]
    for raw in bad:
        try:
            unpack(raw)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (raw,))
    for value in [1.5, 2 ** 64, {1: 1, "a": 2}]:
        try:
            pack(value)
        except ValueError:
            continue
        raise AssertionError("packed %r" % (value,))
