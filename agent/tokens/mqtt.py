"""MQTT top-up and command tokens: format, MAC and the replay window.

Wire format: ``body || tag``.  ``body`` is canonical MessagePack (see
agent/codec/msgpack.py) of a map with one-letter keys:

====  =========================================================  ==========
key   meaning                                                    kinds
====  =========================================================  ==========
v     format version, 1                                          all
m     meter id (str)                                             all
s     sequence, 1 .. 2**64-1, increasing per meter               all
k     kind: "topup" or "command"                                 all
i     issue time, wall seconds                                   all
x     expiry, wall seconds (>= i)                                all
r     key revision the token was MAC'd with                      all
a     amount in minor units (1 .. MAX_AMOUNT)                    topup
c     command name                                               command
p     command arguments (map with str keys)                      command
====  =========================================================  ==========

``tag`` is the first 16 bytes (128 bits) of HMAC-SHA256 under the meter's
token key, over the body bytes exactly as received: nothing is re-encoded
before checking, and the body must be the canonical encoding of its value
so one token has exactly one byte string.
"""

from agent import crypto, results
from agent.codec import msgpack
from agent.commands import NAMES

VERSION = 1
TAG_LEN = 16
MAX_TOKEN = 2048  # bytes: bounds the work an unauthenticated payload costs
MAX_AMOUNT = 10**13  # minor units: 1e9 currency units, far above any top-up
SEQ_MAX = (1 << 64) - 1
WINDOW = 64
# Largest step above the highest sequence seen.  A head-end issues each
# meter's sequences one by one, so a meter never sees a jump near this; an
# authentic token far ahead (2**64-1) would otherwise become the new
# highest and make every later token too_old for ever.
MAX_JUMP = 1 << 20
_WMASK = (1 << WINDOW) - 1
U32 = 0xFFFFFFFF
TIME_MAX = (1 << 63) - 1

TOPUP = "topup"
COMMAND = "command"
KINDS = (TOPUP, COMMAND)

# Commands a token may carry: the core's (agent/commands.py), of which the
# shell turns set_clock into an event, plus key_change, which the token layer
# handles itself.
KEY_CHANGE = "key_change"
SET_CLOCK = "set_clock"
COMMANDS = NAMES + (KEY_CHANGE,)

_COMMON = ("i", "k", "m", "r", "s", "v", "x")
_FIELDS = {TOPUP: _COMMON + ("a",), COMMAND: _COMMON + ("c", "p")}


def token_key(meter_key):
    """The MAC key for tokens, from the meter key of one revision."""
    return crypto.subkey(meter_key, "token-mac")


def wrap_key(meter_key):
    """The key that seals a new meter key inside a key-change command."""
    return crypto.subkey(meter_key, "key-wrap")


class Token:
    """A parsed MQTT token (fields named after their meaning)."""

    __slots__ = ("meter", "seq", "kind", "issued", "expires", "revision", "amount", "command", "args", "source")

    def __init__(self, meter, seq, kind, issued, expires, revision, amount=0, command=None, args=None):
        self.meter = meter
        self.seq = seq
        self.kind = kind
        self.issued = issued
        self.expires = expires
        self.revision = revision
        self.amount = amount
        self.command = command
        self.args = args
        self.source = "mqtt"

    @property
    def ref(self):
        """Identifies the token in acknowledgements and event records."""
        return "mqtt:%d" % self.seq

    def fields(self):
        """The token as a plain dict (for printing and logging)."""
        d = {
            "meter": self.meter,
            "seq": self.seq,
            "kind": self.kind,
            "issued": self.issued,
            "expires": self.expires,
            "revision": self.revision,
        }
        if self.kind == TOPUP:
            d["amount"] = self.amount
        else:
            d["command"] = self.command
            d["args"] = self.args
        return d

    def __repr__(self):
        return "Token(%r)" % (self.fields(),)


def _int_field(body, key, low, high):
    v = body[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < low or v > high:
        raise ValueError("field %s must be an integer %d..%d" % (key, low, high))
    return v


def body_of(token):
    """The body map of ``token`` (a Token), ready for canonical encoding."""
    body = {
        "i": token.issued,
        "k": token.kind,
        "m": token.meter,
        "r": token.revision,
        "s": token.seq,
        "v": VERSION,
        "x": token.expires,
    }
    if token.kind == TOPUP:
        body["a"] = token.amount
    else:
        body["c"] = token.command
        body["p"] = token.args if token.args is not None else {}
    return body


def encode(token, key):
    """Token bytes for ``token`` MAC'd with the meter key ``key`` (head-end side).

    Checks the fields the same way the meter will, so a vending tool cannot
    mint a token every meter would reject as malformed.
    """
    raw = msgpack.pack(body_of(token))
    _parse_body(raw)
    tag = crypto.hmac_sha256(token_key(key), raw)[:TAG_LEN]
    return raw + tag


def _parse_body(raw):
    # -> Token, or ValueError naming the field.
    body = msgpack.unpack(raw, max_depth=8, canonical=True)
    if not isinstance(body, dict):
        raise ValueError("token body must be a map")
    kind = body.get("k")
    if kind not in KINDS:
        raise ValueError("field k must be one of %s" % ", ".join(KINDS))
    want = _FIELDS[kind]
    for key in sorted(body):
        if key not in want:
            raise ValueError("unknown field %r for kind %s" % (key, kind))
    for key in want:
        if key not in body:
            raise ValueError("field %s is missing" % key)
    if body["v"] != VERSION or isinstance(body["v"], bool):
        raise ValueError("field v: unsupported version %r" % (body["v"],))
    meter = body["m"]
    if not isinstance(meter, str) or not meter or len(meter) > 32:
        raise ValueError("field m must be a meter id string")
    seq = _int_field(body, "s", 1, SEQ_MAX)
    issued = _int_field(body, "i", 0, TIME_MAX)
    expires = _int_field(body, "x", issued, TIME_MAX)
    revision = _int_field(body, "r", 0, U32)
    if kind == TOPUP:
        amount = _int_field(body, "a", 1, MAX_AMOUNT)
        return Token(meter, seq, kind, issued, expires, revision, amount=amount)
    command = body["c"]
    if not isinstance(command, str) or not command:
        raise ValueError("field c must be a command name")
    args = body["p"]
    if not isinstance(args, dict):
        raise ValueError("field p must be a map of arguments")
    for k in args:
        if not isinstance(k, str):
            raise ValueError("field p: argument names must be strings")
    return Token(meter, seq, kind, issued, expires, revision, command=command, args=args)


def parse(data):
    """Split and parse token bytes without checking the MAC: (Token, body, tag).

    Raises ValueError (naming the field) on anything malformed.  For the
    decoding tool and the guard; a parsed token is not yet trusted.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("token must be bytes")
    if len(data) > MAX_TOKEN:
        raise ValueError("token is %d bytes, more than %d" % (len(data), MAX_TOKEN))
    if len(data) <= TAG_LEN:
        raise ValueError("token is %d bytes, too short for a body and a tag" % len(data))
    raw = bytes(data[: len(data) - TAG_LEN])
    tag = bytes(data[len(data) - TAG_LEN :])
    return _parse_body(raw), raw, tag


def mac_ok(raw, tag, mac_key):
    """True when ``tag`` authenticates ``raw`` under ``mac_key`` (an HmacKey)."""
    return crypto.equal(mac_key.digest(raw)[:TAG_LEN], tag)


class Window:
    """Sequences seen: the highest, and a bitmask of the WINDOW below it.

    Sequence ``s`` is new when ``high < s <= high + MAX_JUMP``, or
    ``high - WINDOW < s <= high`` and its bit is clear; anything at or below
    ``high - WINDOW`` is too old, anything above ``high + MAX_JUMP`` refused.
    """

    __slots__ = ("high", "mask")

    def __init__(self, high=0, mask=0):
        self.high = high
        self.mask = mask

    def verdict(self, seq):
        """ACCEPTED, ALREADY_USED, TOO_OLD or REFUSED (too far ahead) for ``seq`` (changes nothing)."""
        if seq > self.high:
            return results.ACCEPTED if seq - self.high <= MAX_JUMP else results.REFUSED
        d = self.high - seq
        if d >= WINDOW:
            return results.TOO_OLD
        if (self.mask >> d) & 1:
            return results.ALREADY_USED
        return results.ACCEPTED

    def mark(self, seq):
        """Remember ``seq`` as used (call only when verdict() said ACCEPTED)."""
        if seq > self.high:
            shift = seq - self.high
            self.mask = (self.mask << shift) & _WMASK if shift < WINDOW else 0
            self.high = seq
        self.mask |= 1 << (self.high - seq)

    def snapshot(self):
        return {"h": self.high, "w": self.mask}

    def restore(self, snap):
        try:
            high, mask = snap["h"], snap["w"]
        except (KeyError, TypeError):
            raise ValueError("token window snapshot: missing fields")
        for v, top in ((high, SEQ_MAX), (mask, _WMASK)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > top:
                raise ValueError("token window snapshot: bad field")
        self.high = high
        self.mask = mask
