"""Minting tokens: MQTT token bytes and OpenPAYGO keypad digits.

Every token goes through the ledger, which hands out the sequence (or
keypad count) and records what was issued, in one transaction.
"""

import os

from agent import crypto
from agent.tokens import MONEY_SCALE, key_change_args, keypad, mqtt

from . import check_meter_id, keys

DEFAULT_TTL = 7 * 86400  # a top-up not delivered within a week is void

# set_credit (set the balance: the head-end's restore of a lost store) is a
# core command; older token layers did not list it, so it is added here.
COMMANDS = tuple(c for c in mqtt.COMMANDS if c != mqtt.KEY_CHANGE)


def topup(ledger, master, meter_id, amount, wall, ttl=DEFAULT_TTL, operator=None, within=None):
    """An MQTT top-up of ``amount`` minor units: (seq, token bytes).

    ``within(seq, token bytes)`` runs inside the ledger's issuing
    transaction (on ``ledger.db``): what it writes commits with the token,
    and if it raises nothing is issued (the delivery queue's idempotency keys).
    """
    check_meter_id(meter_id)
    if not isinstance(amount, int) or amount < 1 or amount > mqtt.MAX_AMOUNT:
        raise ValueError("amount must be 1..%d minor units" % mqtt.MAX_AMOUNT)
    return _mqtt(ledger, master, meter_id, wall, ttl, operator, mqtt.TOPUP, amount=amount, within=within)


def revend(ledger, master, meter_id, refused_ref, wall, ttl=DEFAULT_TTL, operator=None):
    """Pay out again, as a new MQTT top-up, the credit of top-up ``refused_ref``
    the meter refused (e.g. ``over_hoarding_limit``): (seq, token bytes).

    The ledger records the new token as the re-vend of the old one, at most
    once per refused token, in the same transaction that checks the refusal
    (ValueError for people when it is not re-vendable).
    """
    check_meter_id(meter_id)
    return _mqtt(ledger, master, meter_id, wall, ttl, operator, mqtt.TOPUP, revend_of=refused_ref)


def command(ledger, master, meter_id, name, args, wall, ttl=DEFAULT_TTL, operator=None, within=None):
    """An MQTT management command: (seq, token bytes); ``within`` as in ``topup``."""
    check_meter_id(meter_id)
    if name not in COMMANDS:
        raise ValueError("command %r: not one of %s" % (name, ", ".join(COMMANDS)))
    return _mqtt(ledger, master, meter_id, wall, ttl, operator, mqtt.COMMAND, command=name, args=dict(args or {}),
                 within=within)


def key_change(ledger, master, meter_id, wall, ttl=DEFAULT_TTL, operator=None, nonce=None):
    """A key-change command to the next revision: (seq, token bytes, new revision)."""
    check_meter_id(meter_id)
    old = ledger.revision(meter_id)
    new = old + 1
    args = key_change_args(
        keys.meter_key(master, meter_id, old),
        meter_id,
        new,
        keys.meter_key(master, meter_id, new),
        nonce if nonce is not None else os.urandom(crypto.NONCE_LEN),
    )
    seq, tok = _mqtt(
        ledger, master, meter_id, wall, ttl, operator, mqtt.COMMAND, command=mqtt.KEY_CHANGE, args=args, new_revision=new
    )
    return seq, tok, new


def _mqtt(ledger, master, meter_id, wall, ttl, operator, kind, amount=0, command=None, args=None, new_revision=None,
          revend_of=None, within=None):
    out = {}

    def make(seq, rev, amount):
        t = mqtt.Token(meter_id, seq, kind, wall, wall + ttl, rev, amount=amount, command=command, args=args)
        out["bytes"] = mqtt.encode(t, keys.meter_key(master, meter_id, rev))
        if within is not None:
            within(seq, out["bytes"])
        return out["bytes"].hex(), seq

    seq, _ = ledger.issue(
        meter_id,
        "mqtt",
        make,
        kind=kind,
        amount=amount,
        command=command,
        args=args,
        issued=wall,
        expires=wall + ttl,
        operator=operator,
        new_revision=new_revision,
        revend_of=revend_of,
    )
    return seq, out["bytes"]


def keypad_value(amount, divider):
    """The OpenPAYGO value for ``amount`` minor units; ValueError if not exact."""
    unit = MONEY_SCALE // divider
    if amount % unit:
        raise ValueError(
            "amount must be a multiple of %d minor units (keypad divider %d)" % (unit, divider)
        )
    return amount // unit


def keypad_raw(amount, kind, divider=1, extended=False):
    """The raw OpenPAYGO value a keypad token of ``kind`` carries; ValueError if impossible."""
    if kind in (keypad.ADD, keypad.SET):
        value = keypad_value(amount, divider)
        top = keypad.MAX_VALUE_EXT if extended else keypad.MAX_VALUE
        if value < 0 or value > top:
            raise ValueError(
                "amount too large for one keypad token: at most %d x %d minor units" % (top, MONEY_SCALE // divider)
            )
        return value
    if kind in (keypad.DISABLE_PAYG, keypad.COUNTER_SYNC):
        return keypad.raw_for(kind, 0)
    raise ValueError("keypad token kind %r unknown" % (kind,))


def keypad_token(ledger, master, meter_id, amount, wall, kind=keypad.ADD, divider=1, extended=False, operator=None, restricted=False):
    """Keypad digits for ``amount`` minor units: (count, digits).

    ``kind`` is keypad.ADD or SET (with an amount) or DISABLE_PAYG /
    COUNTER_SYNC (amount ignored); ``restricted`` gives digits 1-4 only.
    """
    check_meter_id(meter_id)
    value = keypad_raw(amount, kind, divider, extended)
    if kind not in (keypad.ADD, keypad.SET):
        amount = 0
    chain = keypad.Chain(keys.keypad_key(master, meter_id), None, extended)

    def make(count, rev, _amount):
        n = keypad.next_count(count, kind)
        return chain.token(value, n, restricted), n

    return ledger.issue(
        meter_id, "keypad", make, kind="topup" if kind == keypad.ADD else kind, amount=amount, issued=wall, operator=operator
    )
