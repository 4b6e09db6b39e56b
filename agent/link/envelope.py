"""Sealed payloads: canonical msgpack inside ``agent.crypto.seal``.

The topic is the associated data of every seal, so a payload copied to
another meter's topic or another leaf fails authentication even before
its ``m``/``k`` fields are compared.  Two direction keys come from the
meter's link key: ``down`` (head-end -> meter) and ``up`` (meter ->
head-end), so nothing can be reflected back to its sender and the two
sides' nonces never share a key.
"""

from agent import crypto, results
from agent.codec import msgpack

MAX_PAYLOAD = 2048  # bytes on the wire for a command; bigger is refused unopened


class Reject(Exception):
    """A message refused: ``code`` from agent.results, ``why`` for people."""

    def __init__(self, code, why):
        super().__init__("%s: %s" % (code, why))
        self.code = code
        self.why = why


class LinkKeys:
    """The two direction keys of one meter's link."""

    __slots__ = ("down", "up")

    def __init__(self, link_key):
        if not isinstance(link_key, (bytes, bytearray)) or len(link_key) != crypto.KEY_LEN:
            raise ValueError("link key must be %d bytes" % crypto.KEY_LEN)
        self.down = crypto.SealKey(crypto.subkey(link_key, "link-down"))
        self.up = crypto.SealKey(crypto.subkey(link_key, "link-up"))


def link_keys(master, meter_id, revision):
    """LinkKeys of ``meter_id`` at key ``revision`` from the head-end master key."""
    return LinkKeys(crypto.derive_key(master, meter_id, revision, crypto.LINK))


class Nonces:
    """Unique 16-byte nonces: an 8-byte random prefix per boot, then a counter.

    The shell gives the prefix (``os.urandom(8)``): the core does no I/O.
    2**64 messages per boot cannot be reached.
    """

    __slots__ = ("prefix", "counter")

    def __init__(self, prefix):
        if not isinstance(prefix, (bytes, bytearray)) or len(prefix) != 8:
            raise ValueError("nonce prefix must be 8 random bytes")
        self.prefix = bytes(prefix)
        self.counter = 0

    def next(self):
        """The next nonce."""
        self.counter += 1
        c = self.counter
        tail = bytearray(8)
        for i in range(7, -1, -1):
            tail[i] = c & 0xFF
            c >>= 8
        return self.prefix + bytes(tail)


def _aad(topic):
    return topic.encode() if isinstance(topic, str) else bytes(topic)


def seal(key, nonce, topic, fields):
    """Seal the map ``fields`` for ``topic`` with ``key`` (a SealKey)."""
    return crypto.seal(key, nonce, msgpack.pack(fields), _aad(topic))


def open_map(key, topic, payload, max_payload=MAX_PAYLOAD):
    """Open a sealed map; raise Reject (code + why) on anything wrong."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise Reject(results.MALFORMED, "payload is not bytes")
    if len(payload) > max_payload:
        raise Reject(results.MALFORMED, "payload of %d bytes is over the %d-byte limit" % (len(payload), max_payload))
    try:
        plain = crypto.unseal(key, payload, _aad(topic))
    except ValueError as e:
        raise Reject(results.BAD_MAC, str(e))
    try:
        fields = msgpack.unpack(plain, canonical=True)
    except ValueError as e:
        raise Reject(results.MALFORMED, "not canonical msgpack: %s" % e)
    if not isinstance(fields, dict):
        raise Reject(results.MALFORMED, "payload is not a map")
    return fields


def need(fields, key, kinds, what):
    """``fields[key]`` if it is one of ``kinds``, else Reject naming the field."""
    if key not in fields:
        raise Reject(results.MALFORMED, "field '%s' (%s) is missing" % (key, what))
    value = fields[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        raise Reject(results.MALFORMED, "field '%s' must be %s" % (key, what))
    return value


def _tuple(kinds):
    return kinds if isinstance(kinds, tuple) else (kinds,)


# ------------------------------------------------------------ head-end side
# Portable so the same code builds test commands on both runtimes.


def seal_command(keys, nonce, topic, meter_id, n, name, args, ref, wall, expires):
    """The payload of command ``name`` (sequence ``n``) for ``topic``."""
    fields = {"a": args, "c": name, "k": "cmd", "m": meter_id, "n": n, "r": ref, "t": wall, "x": expires}
    return seal(keys.down, nonce, topic, fields)


def open_uplink(keys, topic, payload, leaf, meter_id, max_payload=65536):
    """Open a meter's message (ack/evt/tele/state/birth); Reject if wrong."""
    fields = open_map(keys.up, topic, payload, max_payload)
    if fields.get("m") != meter_id:
        raise Reject(results.WRONG_METER, "field 'm' is %r, topic says %s" % (fields.get("m"), meter_id))
    if fields.get("k") != leaf:
        raise Reject(results.MALFORMED, "field 'k' is %r, topic says %s" % (fields.get("k"), leaf))
    return fields
