"""Recharge tokens and management commands: the meter's gatekeeper.

``TokenGuard`` decides, for every MQTT token or keypad code, one result
code from agent/results.py and holds the durable anti-replay state:

    code, token = guard.check(payload, wall)        # changes nothing
    if code == results.ACCEPTED:
        ... feed token to the core (TopUp / Command) ...
        guard.accept(token)                         # marks it used
        store.commit(meter.snapshot(), guard.snapshot())   # atomically
        ... only now acknowledge ...

Keypad codes: ``guard.check_keypad(digits, wall, mono)``.  A wrong entry
(result BAD_MAC) advances the lockout, which is state: commit
``guard.snapshot()`` before taking the next keypad entry, or a power cycle
between guesses would forget it.

Token kinds the caller handles: "topup" (``amount`` minor units),
"set_credit" (keypad SET: set the balance to ``amount``), "command"
(``command``, ``args``; "key_change" is applied by ``accept`` itself and
"set_clock" carries ``args["wall"]``), "sync" (keypad counter sync: no
effect on the meter).
"""

import binascii

from agent import config, crypto, results
from agent.tokens import keypad as _keypad
from agent.tokens import mqtt
from agent.link.replay import check_pair, merge_window
from agent.tokens.lockout import Lockout

MONEY_SCALE = 10000
SNAPSHOT_VERSION = 1


def _hex_key(length):
    def check(value):
        if len(value) != 2 * length:
            return "must be %d hex digits, got %d characters" % (2 * length, len(value))
        try:
            binascii.unhexlify(value)
        except ValueError:
            return "must be hex digits (0-9, a-f)"
        return None

    return check


def _divider_ok(value):
    if value < 1 or MONEY_SCALE % value:
        return "must divide %d (so token values map to whole minor units), got %d" % (MONEY_SCALE, value)
    return None


SCHEMA = {
    "key": config.Field(config.STR, check=_hex_key(32), doc="meter key at `revision`, 64 hex digits (pmeter keys derive)"),
    "revision": config.Field(config.INT, 0, config.between(0, 0xFFFFFFFF), doc="key revision of `key`"),
    "keypad_key": config.Field(config.STR, None, _hex_key(16), doc="OpenPAYGO secret, 32 hex digits; absent = no keypad"),
    "keypad_starting_code": config.Field(
        config.INT, None, config.between(0, 999999999), doc="OpenPAYGO starting code (default: derived from the key)"
    ),
    "keypad_divider": config.Field(
        config.INT, 1, _divider_ok, doc="token value units per currency unit (1: 1 unit = 1.0000)"
    ),
}


class KeypadToken:
    """An accepted-looking keypad code, in the same shape as mqtt.Token."""

    __slots__ = ("kind", "amount", "command", "args", "count", "digits", "decoded", "source")

    def __init__(self, kind, amount, decoded, command=None, args=None):
        self.kind = kind
        self.amount = amount
        self.command = command
        self.args = args
        self.decoded = decoded
        self.count = decoded.count
        self.digits = decoded.digits
        self.source = "keypad"

    @property
    def ref(self):
        return "keypad:%d" % self.count

    def fields(self):
        d = {"kind": self.kind, "count": self.count, "openpaygo": self.decoded.kind, "value": self.decoded.value}
        if self.kind in ("topup", "set_credit"):
            d["amount"] = self.amount
        if self.command is not None:
            d["command"] = self.command
            d["args"] = self.args
        return d

    def __repr__(self):
        return "KeypadToken(%r)" % (self.fields(),)


def _u(v, name, top):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > top:
        raise ValueError("token guard snapshot: field %s out of range" % name)
    return v


class TokenGuard:
    """Verifies tokens for one meter and remembers which were used."""

    __slots__ = ("meter_id", "key", "revision", "_mac", "window", "keypad", "lockout", "divider")

    def __init__(self, meter_id, key, revision=0, keypad_key=None, starting_code=None, divider=1):
        if len(key) != 32:
            raise ValueError("meter key must be 32 bytes")
        self.meter_id = meter_id
        self.window = mqtt.Window()
        self.lockout = Lockout()
        self.divider = divider
        self.keypad = _keypad.KeypadState(keypad_key, starting_code) if keypad_key is not None else None
        self._set_key(bytes(key), revision)

    @classmethod
    def from_config(cls, meter_id, section):
        """A guard from a validated ``tokens`` config section (see SCHEMA)."""
        kk = section.get("keypad_key")
        return cls(
            meter_id,
            binascii.unhexlify(section["key"]),
            section["revision"],
            binascii.unhexlify(kk) if kk else None,
            section.get("keypad_starting_code"),
            section.get("keypad_divider", 1),
        )

    def _set_key(self, key, revision):
        self.key = key
        self.revision = revision
        self._mac = crypto.HmacKey(mqtt.token_key(key))

    # ----------------------------------------------------------- MQTT

    def check(self, data, wall):
        """Verify MQTT token bytes at wall time ``wall``: (code, Token or None).

        Changes nothing; ``accept`` the token once its effect is applied.
        """
        try:
            token, raw, tag = mqtt.parse(data)
        except Exception:  # ValueError, or a decoder bug: refuse, never crash the meter
            return results.MALFORMED, None
        if token.meter != self.meter_id:
            return results.WRONG_METER, None
        if token.revision != self.revision:
            return results.WRONG_KEY_REVISION, None
        if not mqtt.mac_ok(raw, tag, self._mac):
            return results.BAD_MAC, None
        verdict = self.window.verdict(token.seq)
        if verdict != results.ACCEPTED:
            return verdict, token
        if wall > token.expires:
            return results.EXPIRED, token
        if token.kind == mqtt.COMMAND:
            if token.command not in mqtt.COMMANDS:
                return results.UNKNOWN_COMMAND, token
            if token.command == mqtt.KEY_CHANGE and self._unwrap(token) is None:
                return results.BAD_ARGUMENT, token
            if token.command == mqtt.SET_CLOCK:
                w = token.args.get("wall")
                if not isinstance(w, int) or isinstance(w, bool) or w < 0 or w > mqtt.TIME_MAX:
                    return results.BAD_ARGUMENT, token
        return results.ACCEPTED, token

    def _unwrap(self, token):
        # -> (revision, key) of a key-change command, or None if it is bad.
        args = token.args
        rev = args.get("revision")
        sealed = args.get("key")
        if not isinstance(rev, int) or isinstance(rev, bool) or rev <= self.revision or rev > mqtt.U32:
            return None
        if not isinstance(sealed, (bytes, bytearray)):
            return None
        try:
            key = crypto.unseal(mqtt.wrap_key(self.key), sealed, key_change_aad(self.meter_id, rev))
        except ValueError:
            return None
        if len(key) != 32:
            return None
        return rev, key

    def accept(self, token):
        """Mark ``token`` (from a check that said ACCEPTED) as used; returns a code.

        Returns ALREADY_USED (and changes nothing) if it was used meanwhile.
        A key change takes effect here: later tokens need the new revision;
        the replay memory is kept.
        """
        if token.source == "keypad":
            verdict = self.keypad._verdict(token.decoded.kind, token.count)
            if verdict is not None:
                return results.ALREADY_USED if verdict == _keypad.USED else results.TOO_OLD
            self.keypad.accept(token.decoded)
            self.lockout.right()
            return results.ACCEPTED
        verdict = self.window.verdict(token.seq)
        if verdict != results.ACCEPTED:
            return verdict
        new = None
        if token.kind == mqtt.COMMAND and token.command == mqtt.KEY_CHANGE:
            new = self._unwrap(token)
            if new is None:
                return results.BAD_ARGUMENT
        self.window.mark(token.seq)
        if new is not None:
            self._set_key(new[1], new[0])
        return results.ACCEPTED

    # --------------------------------------------------------- keypad

    def check_keypad(self, digits, wall, mono):
        """Check a code typed on the keypad: (code, KeypadToken or None).

        Changes only the lockout (on a wrong entry); ``accept`` applies the
        rest.  ``wall`` is unused today (OpenPAYGO tokens carry no time) and
        kept so the keypad and MQTT paths look alike.
        """
        if self.keypad is None:
            return results.REFUSED, None
        if self.lockout.remaining_ms(mono) > 0:
            return results.LOCKED_OUT, None
        try:
            d = self.keypad.decode(digits)
        except Exception:  # never let a keypad entry crash the meter
            d = _keypad.MALFORMED
        if d == _keypad.MALFORMED:
            return results.MALFORMED, None
        if d == _keypad.INVALID:
            self.lockout.wrong(mono)
            return results.BAD_MAC, None
        if d == _keypad.USED:
            return results.ALREADY_USED, None
        if d == _keypad.OLD:
            return results.TOO_OLD, None
        return results.ACCEPTED, self._keypad_token(d)

    def _keypad_token(self, d):
        amount = d.value * (MONEY_SCALE // self.divider)
        if d.kind == _keypad.ADD:
            return KeypadToken("topup", amount, d)
        if d.kind == _keypad.SET:
            return KeypadToken("set_credit", amount, d)
        if d.kind == _keypad.DISABLE_PAYG:
            return KeypadToken("command", 0, d, "set_mode", {"mode": "postpaid"})
        return KeypadToken("sync", 0, d)

    def keypad_lock_ms(self, mono):
        """Milliseconds the keypad stays locked (0 = open), for the display."""
        return self.lockout.remaining_ms(mono)

    def work(self, budget):
        """Idle-time upkeep (keypad checkpoint table); returns hashes spent."""
        if self.keypad is None:
            return 0
        return self.keypad.work(budget)

    # ------------------------------------------------------- snapshot

    def snapshot(self):
        """Plain data to commit with the meter's state (msgpack-able)."""
        return {
            "kp": self.keypad.snapshot() if self.keypad is not None else None,
            "ky": self.key,
            "lo": self.lockout.snapshot(),
            "m": self.meter_id,
            "r": self.revision,
            "v": SNAPSHOT_VERSION,
            "w": self.window.snapshot(),
        }

    def restore(self, snap):
        """Load a ``snapshot()``; ValueError (nothing changed) if it does not fit."""
        if not isinstance(snap, dict) or snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError("token guard snapshot: not a version %d snapshot" % SNAPSHOT_VERSION)
        if snap.get("m") != self.meter_id:
            raise ValueError("token guard snapshot belongs to meter %r, not %r" % (snap.get("m"), self.meter_id))
        key = snap.get("ky")
        if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
            raise ValueError("token guard snapshot: key must be 32 bytes")
        rev = _u(snap.get("r"), "r", mqtt.U32)
        if rev < self.revision:
            raise config.ConfigError("tokens.revision", "is %d, but the meter's stored key is of revision %d: "
                                     "configure the key it has, or send it a key change" % (self.revision, rev))
        window = mqtt.Window()
        window.restore(snap.get("w"))
        lockout = Lockout()
        lockout.restore(snap.get("lo"))
        kp = snap.get("kp")
        self._keypad_fits(kp is not None, kp.get("s") if isinstance(kp, dict) else None)
        if kp is not None:
            self.keypad.restore(kp)  # validates everything before changing anything
        self.window = window
        self.lockout = lockout
        self._set_key(bytes(key), rev)


    def _keypad_fits(self, stored, start):
        # A keypad whose used codes are stored must still be configured, with
        # the same chain: else every old code would be accepted again.  (A
        # keypad cannot be added in place either: its stored state would be
        # a guess.)
        if stored and self.keypad is None:
            raise config.ConfigError("tokens.keypad_key", "is not set, but this meter's stored state has a keypad "
                                     "(its used codes): put the key back")
        if not stored and self.keypad is not None:
            raise config.ConfigError("tokens.keypad_key", "is set, but this meter's stored state has no keypad: "
                                     "remove the key, or start the meter on a new data directory")
        if stored and start != self.keypad.chain.start:
            raise config.ConfigError("tokens.keypad_starting_code", "the keypad key or starting code differs from "
                                     "the one this meter's keypad codes were made with: put the old ones back")

    # -------------------------------------------------------- marks

    def marks(self):
        """High-water marks for the store's marks record (small, msgpack-able)."""
        kp = self.keypad
        return {"k": [kp.chain.start, kp.last, kp.used] if kp is not None else None,
                "w": [self.window.high, self.window.mask]}

    def raise_marks(self, marks):
        """Raise the token window and the keypad's used counts to ``marks`` (never lowers).

        ValueError if ``marks`` is damaged, ConfigError if its keypad does not
        fit the configured one; nothing changed then.
        """
        if not isinstance(marks, dict):
            raise ValueError("token marks: must be a map")
        high, mask = check_pair(marks.get("w"), "token marks field 'w'")
        k = marks.get("k")
        if k is not None:
            if not isinstance(k, list) or len(k) != 3:
                raise ValueError("token marks field 'k': must be [start, last, used]")
            last, used = check_pair(k[1:], "token marks field 'k'")
        self._keypad_fits(k is not None, k[0] if k is not None else None)
        self.window.high, self.window.mask = merge_window(self.window.high, self.window.mask, high, mask, mqtt.WINDOW)
        if k is not None:
            self._raise_keypad(last, used)

    def _raise_keypad(self, last, used):
        kp = self.keypad
        kp.last, kp.used = merge_window(kp.last, kp.used, last, used, _keypad.WINDOW)

    def supersede(self, seq, keypad_count=None):
        """Every token up to ``seq`` (and keypad count ``keypad_count``) counts as used.

        For the head-end's restore of a lost state: the balance it sets
        accounts for every token issued before it.
        """
        self.window.high, self.window.mask = merge_window(self.window.high, self.window.mask, seq,
                                                          (1 << mqtt.WINDOW) - 1, mqtt.WINDOW)
        if self.keypad is not None and isinstance(keypad_count, int) and not isinstance(keypad_count, bool) \
                and keypad_count > 0:
            self._raise_keypad(keypad_count, _keypad.MASK)


def key_change_aad(meter_id, revision):
    """What a sealed key-change key is bound to: the meter and new revision."""
    return b"pmeter key-change " + meter_id.encode() + b" " + str(revision).encode()


def key_change_args(old_key, meter_id, new_revision, new_key, nonce):
    """Arguments of a key_change command (head-end side)."""
    sealed = crypto.seal(mqtt.wrap_key(old_key), nonce, new_key, key_change_aad(meter_id, new_revision))
    return {"key": sealed, "revision": new_revision}
