"""BCD helpers for DL/T 645: values little-endian, addresses low byte first.

Every multi-byte DL/T 645 field travels low byte first; a byte holds two
decimal digits (high nibble tens).  A nibble above 9 is not BCD and is
rejected with ``ValueError`` naming the field, never silently decoded.
"""


def to_bcd(value, nbytes, field="value"):
    """Non-negative int ``value`` -> ``nbytes`` of little-endian BCD.

    Raises ValueError when the value is negative or needs more digits.
    """
    if not isinstance(value, int) or value < 0:
        raise ValueError("%s: %r is not a non-negative integer" % (field, value))
    out = bytearray(nbytes)
    for i in range(nbytes):
        low = value % 10
        value //= 10
        high = value % 10
        value //= 10
        out[i] = (high << 4) | low
    if value:
        raise ValueError("%s: does not fit in %d BCD digits" % (field, 2 * nbytes))
    return bytes(out)


def from_bcd(data, field="value"):
    """Little-endian BCD bytes -> int; ValueError on a non-BCD nibble."""
    value = 0
    for i in range(len(data) - 1, -1, -1):
        b = data[i]
        high = b >> 4
        low = b & 0x0F
        if high > 9 or low > 9:
            raise ValueError("%s: byte %d is 0x%02X, not BCD" % (field, i, b))
        value = value * 100 + high * 10 + low
    return value


def is_bcd(data):
    """True when every nibble of ``data`` is a decimal digit."""
    for b in data:
        if (b >> 4) > 9 or (b & 0x0F) > 9:
            return False
    return True


def byte_to_bcd(n):
    """0..99 -> one BCD byte."""
    return ((n // 10) << 4) | (n % 10)


def address_to_wire(text):
    """Meter address as printed (12 digits) -> 6 wire bytes, low byte first.

    ``"123456781012"`` -> ``12 10 78 56 34 12``.  ``"AAAAAAAAAAAA"`` (the
    wildcard) and ``"999999999999"`` (broadcast) pass through as well.
    """
    if not isinstance(text, str) or len(text) != 12:
        raise ValueError("address: %r must be 12 digits" % (text,))
    out = bytearray(6)
    for i in range(6):
        pair = text[10 - 2 * i : 12 - 2 * i]
        if pair in ("AA", "aa"):
            out[i] = 0xAA
            continue
        if pair[0] not in "0123456789" or pair[1] not in "0123456789":
            raise ValueError("address: %r must be 12 decimal digits" % (text,))
        out[i] = (int(pair[0]) << 4) | int(pair[1])
    return bytes(out)


def address_from_wire(data):
    """6 wire bytes -> the address as printed (``AA`` bytes stay ``AA``)."""
    parts = []
    for i in range(5, -1, -1):
        parts.append("%02X" % data[i])
    return "".join(parts)


def hex_to_bytes(text, field="value"):
    """Even-length hex string -> bytes in string order (ValueError naming ``field``)."""
    if not isinstance(text, str) or len(text) % 2:
        raise ValueError("%s: %r must be an even number of hex digits" % (field, text))
    for ch in text:
        if ch not in "0123456789abcdefABCDEF":
            raise ValueError("%s: %r must be hex digits" % (field, text))
    out = bytearray(len(text) // 2)
    for i in range(len(out)):
        out[i] = int(text[2 * i : 2 * i + 2], 16)
    return bytes(out)
