"""Canonical MessagePack: one byte string per value, on both runtimes.

Hand-written because MicroPython has no msgpack package; the output is
byte-identical to ``msgpack.packb(value, use_bin_type=True)`` of the same
value with its dicts built in sorted key order (proved by the hypothesis
tests in tests/test_codec_msgpack.py).  The same code runs on CPython too,
so the strict decoder that was fuzzed is the one devices run.

Supported values: None, bool, int (-2**63 .. 2**64-1), bytes/bytearray
(bin), str (utf-8 str), list/tuple (array; decoded as list) and dict whose
keys are all str, all int or all bytes (written sorted, so the encoding
does not depend on a runtime's dict order).  Floats, ext types and
anything else are refused with ValueError.

``unpack`` never raises anything but ValueError on bad input: trailing
bytes, truncation, unsupported type bytes, nesting deeper than
``max_depth``, lengths that run past the end of the data, invalid utf-8,
duplicate or unhashable map keys.  ``canonical=True`` also refuses any
encoding ``pack`` would not have produced (non-minimal widths, unsorted
keys), for data that is hashed or MAC'd as bytes.
"""

MAX_DEPTH = 32
INT_MIN = -(1 << 63)
UINT_MAX = (1 << 64) - 1


def be_bytes(n, size):
    """``n`` as ``size`` big-endian bytes (int.to_bytes and struct 'Q' vary across ports)."""
    out = bytearray(size)
    i = size - 1
    while i >= 0:
        out[i] = n & 0xFF
        n >>= 8
        i -= 1
    return bytes(out)


def _pack_int(n, out):
    if n < INT_MIN or n > UINT_MAX:
        raise ValueError("msgpack: integer %d is outside the 64-bit range" % n)
    if n >= 0:
        if n < 0x80:
            out.append(bytes((n,)))
        elif n <= 0xFF:
            out.append(b"\xcc" + be_bytes(n, 1))
        elif n <= 0xFFFF:
            out.append(b"\xcd" + be_bytes(n, 2))
        elif n <= 0xFFFFFFFF:
            out.append(b"\xce" + be_bytes(n, 4))
        else:
            out.append(b"\xcf" + be_bytes(n, 8))
    elif n >= -32:
        out.append(bytes((n + 256,)))
    elif n >= -0x80:
        out.append(b"\xd0" + be_bytes(n + 0x100, 1))
    elif n >= -0x8000:
        out.append(b"\xd1" + be_bytes(n + 0x10000, 2))
    elif n >= -0x80000000:
        out.append(b"\xd2" + be_bytes(n + 0x100000000, 4))
    else:
        out.append(b"\xd3" + be_bytes(n + 0x10000000000000000, 8))


def _pack_len(n, fix_base, fix_max, c8, c16, c32, what, out):
    if n <= fix_max and fix_base is not None:
        out.append(bytes((fix_base | n,)))
    elif n <= 0xFF and c8 is not None:
        out.append(bytes((c8, n)))
    elif n <= 0xFFFF:
        out.append(bytes((c16,)) + be_bytes(n, 2))
    elif n <= 0xFFFFFFFF:
        out.append(bytes((c32,)) + be_bytes(n, 4))
    else:
        raise ValueError("msgpack: %s of length %d is too long" % (what, n))


def _key_kind(k):
    if isinstance(k, bool):
        return None
    if isinstance(k, str):
        return "str"
    if isinstance(k, int):
        return "int"
    if isinstance(k, (bytes, bytearray)):
        return "bytes"
    return None


def _sorted_keys(d):
    kinds = set()
    for k in d:
        kind = _key_kind(k)
        if kind is None:
            raise ValueError("msgpack: map key %r is not a str, int or bytes" % (k,))
        kinds.add(kind)
    if len(kinds) > 1:
        raise ValueError("msgpack: map keys mix types (%s); use one type" % ", ".join(sorted(kinds)))
    return sorted(d)


def _pack(obj, out, depth, max_depth):
    if depth > max_depth:
        raise ValueError("msgpack: nesting deeper than %d" % max_depth)
    if obj is None:
        out.append(b"\xc0")
    elif obj is True:
        out.append(b"\xc3")
    elif obj is False:
        out.append(b"\xc2")
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _pack_len(len(raw), 0xA0, 31, 0xD9, 0xDA, 0xDB, "str", out)
        out.append(raw)
    elif isinstance(obj, (bytes, bytearray)):
        _pack_len(len(obj), None, -1, 0xC4, 0xC5, 0xC6, "bin", out)
        out.append(bytes(obj))
    elif isinstance(obj, (list, tuple)):
        _pack_len(len(obj), 0x90, 15, None, 0xDC, 0xDD, "array", out)
        for item in obj:
            _pack(item, out, depth + 1, max_depth)
    elif isinstance(obj, dict):
        keys = _sorted_keys(obj)
        _pack_len(len(keys), 0x80, 15, None, 0xDE, 0xDF, "map", out)
        for k in keys:
            _pack(k, out, depth + 1, max_depth)
            _pack(obj[k], out, depth + 1, max_depth)
    elif isinstance(obj, float):
        raise ValueError("msgpack: floats are not allowed (use integers), got %r" % (obj,))
    else:
        raise ValueError("msgpack: cannot encode a %s" % type(obj).__name__)


def pack(obj, max_depth=MAX_DEPTH):
    """Encode ``obj`` as canonical MessagePack bytes (ValueError if unsupported)."""
    out = []
    _pack(obj, out, 0, max_depth)
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos", "max_depth")

    def __init__(self, data, max_depth):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def take(self, n, what):
        end = self.pos + n
        if end > len(self.data):
            raise ValueError(
                "msgpack: %s needs %d bytes at offset %d but only %d remain"
                % (what, n, self.pos, len(self.data) - self.pos)
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, n, what):
        v = 0
        for b in self.take(n, what):
            v = (v << 8) | b
        return v

    def sint(self, n, what):
        v = self.uint(n, what)
        top = 1 << (8 * n - 1)
        return v - (top << 1) if v & top else v


def _check_count(r, n, per_item, what):
    # Every element takes at least one byte: refuse impossible counts now,
    # before looping over billions of phantom items.
    remaining = len(r.data) - r.pos
    if n * per_item > remaining:
        raise ValueError(
            "msgpack: %s claims %d items at offset %d but only %d bytes remain"
            % (what, n, r.pos, remaining)
        )


def _str(r, n):
    raw = r.take(n, "str")
    try:
        return bytes(raw).decode("utf-8")
    except MemoryError:
        raise
    except Exception:
        raise ValueError("msgpack: str at offset %d is not valid utf-8" % (r.pos - n))


def _array(r, n, depth):
    _check_count(r, n, 1, "array")
    return [_unpack(r, depth + 1) for _ in range(n)]


def _map(r, n, depth):
    _check_count(r, n, 2, "map")
    out = {}
    for _ in range(n):
        at = r.pos
        k = _unpack(r, depth + 1)
        if isinstance(k, (list, dict)):
            raise ValueError("msgpack: map key at offset %d is not a str, int or bytes" % at)
        if k in out:
            raise ValueError("msgpack: duplicate map key %r at offset %d" % (k, at))
        out[k] = _unpack(r, depth + 1)
    return out


def _unpack(r, depth):
    if depth > r.max_depth:
        raise ValueError("msgpack: nesting deeper than %d at offset %d" % (r.max_depth, r.pos))
    at = r.pos
    t = r.uint(1, "type byte")
    if t < 0x80:
        return t
    if t >= 0xE0:
        return t - 0x100
    if t < 0x90:
        return _map(r, t & 0x0F, depth)
    if t < 0xA0:
        return _array(r, t & 0x0F, depth)
    if t < 0xC0:
        return _str(r, t & 0x1F)
    if t == 0xC0:
        return None
    if t == 0xC2:
        return False
    if t == 0xC3:
        return True
    if 0xC4 <= t <= 0xC6:
        n = r.uint(1 << (t - 0xC4), "bin length")
        return bytes(r.take(n, "bin"))
    if 0xCC <= t <= 0xCF:
        return r.uint(1 << (t - 0xCC), "uint")
    if 0xD0 <= t <= 0xD3:
        return r.sint(1 << (t - 0xD0), "int")
    if 0xD9 <= t <= 0xDB:
        return _str(r, r.uint(1 << (t - 0xD9), "str length"))
    if t == 0xDC or t == 0xDD:
        return _array(r, r.uint(2 if t == 0xDC else 4, "array length"), depth)
    if t == 0xDE or t == 0xDF:
        return _map(r, r.uint(2 if t == 0xDE else 4, "map length"), depth)
    if t == 0xCA or t == 0xCB:
        raise ValueError("msgpack: float at offset %d is not allowed" % at)
    raise ValueError("msgpack: unsupported type byte 0x%02x at offset %d" % (t, at))


def unpack(data, max_depth=MAX_DEPTH, canonical=False):
    """Decode exactly one value from ``data`` (bytes); ValueError if invalid.

    ``canonical=True`` also requires ``data`` to be exactly what ``pack``
    produces for the decoded value.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("msgpack: expected bytes, got a %s" % type(data).__name__)
    data = bytes(data)
    r = _Reader(data, max_depth)
    obj = _unpack(r, 0)
    if r.pos != len(data):
        raise ValueError(
            "msgpack: %d trailing bytes after the value at offset %d" % (len(data) - r.pos, r.pos)
        )
    if canonical:
        try:
            again = pack(obj, max_depth)
        except ValueError as e:
            raise ValueError("msgpack: not canonical: %s" % e)
        if again != data:
            raise ValueError("msgpack: not the canonical encoding of its value")
    return obj
