"""SipHash-2-4 (64-bit output), the PRF of OpenPAYGO Token.

Hand-written because MicroPython has no SipHash; proved equal to the
``siphash`` package the ``openpaygo`` reference uses (tests/test_tokens_keypad.py)
and to the reference vectors of the SipHash paper (tests/portable).
"""

M64 = 0xFFFFFFFFFFFFFFFF


def _le64(b, off):
    return (
        b[off]
        | (b[off + 1] << 8)
        | (b[off + 2] << 16)
        | (b[off + 3] << 24)
        | (b[off + 4] << 32)
        | (b[off + 5] << 40)
        | (b[off + 6] << 48)
        | (b[off + 7] << 56)
    )


def key_words(key):
    """Split a 16-byte key into the two little-endian 64-bit words."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes, got %d" % len(key))
    return _le64(key, 0), _le64(key, 8)


def _rounds(v0, v1, v2, v3, n):
    for _ in range(n):
        v0 = (v0 + v1) & M64
        v1 = ((v1 << 13) | (v1 >> 51)) & M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & M64
        v2 = (v2 + v3) & M64
        v3 = ((v3 << 16) | (v3 >> 48)) & M64
        v3 ^= v2
        v0 = (v0 + v3) & M64
        v3 = ((v3 << 21) | (v3 >> 43)) & M64
        v3 ^= v0
        v2 = (v2 + v1) & M64
        v1 = ((v1 << 17) | (v1 >> 47)) & M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & M64
    return v0, v1, v2, v3


def siphash24_words(k0, k1, msg):
    """SipHash-2-4 of ``msg`` (bytes) under key words ``k0``, ``k1``; an int."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    n = len(msg)
    full = n - (n % 8)
    off = 0
    while off < full:
        m = _le64(msg, off)
        v3 ^= m
        v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
        v0 ^= m
        off += 8
    last = (n & 0xFF) << 56
    shift = 0
    while off < n:
        last |= msg[off] << shift
        shift += 8
        off += 1
    v3 ^= last
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
    v0 ^= last
    v2 ^= 0xFF
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


def siphash24(key, msg):
    """SipHash-2-4 of ``msg`` under the 16-byte ``key``, as an int."""
    k0, k1 = key_words(key)
    return siphash24_words(k0, k1, msg)


def siphash24_word(k0, k1, m):
    """SipHash-2-4 of one 8-byte message given as its little-endian word ``m``.

    Unrolled by hand: this is the OpenPAYGO chain step, the decoder's inner loop.
    """
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573 ^ m
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 ^= m
    v3 ^= 0x0800000000000000  # final block: just the length (8) in the top byte
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 ^= 0x0800000000000000
    v2 ^= 0xFF
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    v0 = (v0 + v1) & M64
    v1 = ((v1 << 13) | (v1 >> 51)) & M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & M64
    v2 = (v2 + v3) & M64
    v3 = ((v3 << 16) | (v3 >> 48)) & M64 ^ v2
    v0 = (v0 + v3) & M64
    v3 = ((v3 << 21) | (v3 >> 43)) & M64 ^ v0
    v2 = (v2 + v1) & M64
    v1 = ((v1 << 17) | (v1 >> 47)) & M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & M64
    return v0 ^ v1 ^ v2 ^ v3


def bswap32(n):
    """Byte-reverse a 32-bit int."""
    return ((n & 0xFF) << 24) | ((n & 0xFF00) << 8) | ((n >> 8) & 0xFF00) | (n >> 24)
