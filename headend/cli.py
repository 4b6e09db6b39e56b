"""``pmeter`` subcommands of the head-end: keys, vend, token decode, batch.

``register(subparsers)`` adds them to the pmeter argparse parser; each
sets ``handler`` to a function that takes the parsed namespace and returns the
exit code (0 ok, 1 refused/failed, 2 bad input, with a message naming the
argument).  ``main(argv)`` runs them standalone: ``python -m headend.cli``.
"""

import argparse
import binascii
import json
import os
import sys
import time

from agent import results
from agent.tokens import TokenGuard, keypad, mqtt

from . import batch, check_meter_id, format_amount, keys, parse_amount, vend
from .ledger import Ledger

DEFAULT_MASTER = "pmeter-master.key"
DEFAULT_LEDGER = "pmeter-ledger.sqlite"


class BadInput(Exception):
    """A command-line argument was wrong: exit code 2."""

    def __init__(self, arg, problem):
        Exception.__init__(self, "%s: %s" % (arg, problem))


def _common(p, ledger=True):
    p.add_argument(
        "--master",
        default=os.environ.get("PMETER_MASTER", DEFAULT_MASTER),
        help="master key file (default $PMETER_MASTER or %s)" % DEFAULT_MASTER,
    )
    if ledger:
        p.add_argument(
            "--ledger",
            default=os.environ.get("PMETER_LEDGER", DEFAULT_LEDGER),
            help="SQLite ledger of issued tokens (default $PMETER_LEDGER or %s)" % DEFAULT_LEDGER,
        )


def register(subparsers):
    """Add the keys, vend, token and batch subcommands to ``subparsers``."""
    p = subparsers.add_parser("keys", help="master key and per-meter keys")
    ks = p.add_subparsers(dest="keys_command", metavar="{init,derive}")
    ks.required = True
    q = ks.add_parser("init", help="create the master key file (mode 0600)")
    _common(q, ledger=False)
    q.set_defaults(handler=cmd_keys_init)
    q = ks.add_parser("derive", help="print a meter's token config section (provisioning)")
    _common(q, ledger=False)
    q.add_argument("--meter", required=True, help="meter id, 12 digits")
    q.add_argument("--revision", default="0", help="key revision (default 0)")
    q.add_argument("--divider", default="1", help="keypad value divider (default 1)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_keys_derive)

    p = subparsers.add_parser("vend", help="issue a top-up token")
    _common(p)
    p.add_argument("--meter", required=True, help="meter id, 12 digits")
    p.add_argument("--amount", required=True, help="money, e.g. 50.00 (at most 4 decimals)")
    p.add_argument("--keypad", action="store_true", help="OpenPAYGO digits to type instead of an MQTT payload")
    p.add_argument("--extended", action="store_true", help="12-digit extended keypad token")
    p.add_argument("--set", action="store_true", help="keypad SET (set the credit) instead of ADD")
    p.add_argument("--restricted", action="store_true", help="digits 1-4 only, for 4-key keypads (15 or 20 digits)")
    p.add_argument("--divider", default="1", help="keypad value divider configured on the meter (default 1)")
    p.add_argument("--ttl", default=str(vend.DEFAULT_TTL), help="seconds the MQTT token stays valid")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_vend)

    p = subparsers.add_parser("token", help="inspect tokens")
    ts = p.add_subparsers(dest="token_command", metavar="{decode}")
    ts.required = True
    q = ts.add_parser("decode", help="decode a token with given key material and print its fields and result")
    _common(q, ledger=False)
    q.add_argument("token", help="MQTT token as hex, or keypad digits")
    q.add_argument("--meter", required=True, help="meter id, 12 digits")
    q.add_argument("--key", help="meter key, 64 hex digits (instead of deriving from --master)")
    q.add_argument("--revision", default="0", help="meter's key revision (default 0)")
    q.add_argument("--count", default="0", help="keypad: the meter's last accepted count (default 0)")
    q.add_argument("--divider", default="1", help="keypad value divider (default 1)")
    q.add_argument("--wall", help="check expiry at this Unix time (default now)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_token_decode)

    p = subparsers.add_parser("batch", help="one command to every meter of a CSV")
    _common(p)
    p.add_argument("--csv", required=True, help="CSV file with meter ids (column meter_id, or the first column)")
    p.add_argument("--command", required=True, dest="batch_command", help="command name, e.g. set_mode")
    p.add_argument("--arg", action="append", default=[], help="command argument NAME=VALUE (repeatable)")
    p.add_argument("--ttl", default=str(vend.DEFAULT_TTL), help="seconds the tokens stay valid")
    p.add_argument("--out", help="write the result table as CSV to this file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_batch)


def _int(value, arg, low, high):
    try:
        n = int(value, 10)
    except (TypeError, ValueError):
        raise BadInput(arg, "must be an integer, got %r" % (value,))
    if n < low or n > high:
        raise BadInput(arg, "must be %d..%d, got %d" % (low, high, n))
    return n


def _meter(value):
    try:
        return check_meter_id(value)
    except ValueError as e:
        raise BadInput("--meter", str(e))


def _divider(value):
    d = _int(value, "--divider", 1, 10000)
    if 10000 % d:
        raise BadInput("--divider", "must divide 10000, got %d" % d)
    return d


def _master(args):
    try:
        return keys.load_master(args.master)
    except keys.KeyFileError as e:
        raise BadInput("--master", str(e))


def _run(func, args):
    try:
        return func(args)
    except BadInput as e:
        sys.stderr.write("pmeter: error: %s\n" % e)
        return 2


def _print(args, data, lines):
    if getattr(args, "json", False):
        print(json.dumps(data, sort_keys=True, default=_jsonable))
    else:
        for line in lines:
            print(line)


def _jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    raise TypeError(repr(v))


def cmd_keys_init(args):
    return _run(_keys_init, args)


def _keys_init(args):
    try:
        keys.init_master(args.master)
    except keys.KeyFileError as e:
        raise BadInput("--master", str(e))
    print("created master key file %s (mode 0600): back it up offline" % args.master)
    return 0


def cmd_keys_derive(args):
    return _run(_keys_derive, args)


def _keys_derive(args):
    meter = _meter(args.meter)
    rev = _int(args.revision, "--revision", 0, 0xFFFFFFFF)
    div = _divider(args.divider)
    prov = keys.provision(_master(args), meter, rev, div)
    _print(args, prov, ["%s = %s" % (k, json.dumps(prov[k])) for k in sorted(prov)])
    return 0


def cmd_vend(args):
    return _run(_vend, args)


def _vend(args):
    meter = _meter(args.meter)
    try:
        amount = parse_amount(args.amount)
    except ValueError as e:
        raise BadInput("--amount", str(e))
    if amount <= 0:
        raise BadInput("--amount", "must be more than zero")
    ttl = _int(args.ttl, "--ttl", 60, 10 * 365 * 86400)
    div = _divider(args.divider)
    if (args.extended or args.set or args.restricted) and not args.keypad:
        raise BadInput("--extended/--set/--restricted", "only apply with --keypad")
    kind = keypad.SET if args.set else keypad.ADD
    if args.keypad:
        try:
            vend.keypad_raw(amount, kind, div, args.extended)
        except ValueError as e:
            raise BadInput("--amount", str(e))
    master = _master(args)
    wall = int(time.time())
    ledger = Ledger(args.ledger)
    try:
        if args.keypad:
            count, digits = vend.keypad_token(ledger, master, meter, amount, wall, kind, div, args.extended, restricted=args.restricted)
            data = {"meter": meter, "amount": amount, "count": count, "digits": digits, "kind": kind}
            grouped = " ".join(digits[i : i + 3] for i in range(0, len(digits), 3))
            _print(args, data, ["%s  (meter %s, %s %s, count %d)" % (grouped, meter, kind, format_amount(amount), count)])
        else:
            seq, tok = vend.topup(ledger, master, meter, amount, wall, ttl)
            data = {"meter": meter, "amount": amount, "seq": seq, "token": tok.hex(), "expires": wall + ttl}
            _print(args, data, [tok.hex()])
    finally:
        ledger.close()
    return 0


def cmd_token_decode(args):
    return _run(_token_decode, args)


OLD_WALK = 100000  # counts below the window the decoder looks through (~2 s)


def _below_window(state, text):
    """True if keypad ``text`` is a code of the chain below ``state``'s window (walked from count 0)."""
    n = len(text)
    token = keypad.from_restricted(text) if n in (15, 20) else int(text)
    if token is None:
        return False
    chain = state.ext_chain if n in (12, 20) else state.chain
    m = chain.modulus()
    base = token % m
    code = chain.first(base)
    for _ in range(min(OLD_WALK, max(0, state.last - keypad.SYNC_BELOW + 1))):
        if code - code % m + base == token:
            return True
        code = chain.next(code)
    return False


def _token_decode(args):
    meter = _meter(args.meter)
    rev = _int(args.revision, "--revision", 0, 0xFFFFFFFF)
    count = _int(args.count, "--count", 0, 1 << 40)
    div = _divider(args.divider)
    wall = _int(args.wall, "--wall", 0, mqtt.TIME_MAX) if args.wall is not None else int(time.time())
    text = args.token.strip().replace(" ", "")
    # 9 / 12 digits, or 15 / 20 restricted digits (1-4) for 4-key keypads
    is_keypad = text.isdigit() and len(text) in (9, 12, 15, 20)
    if args.key is not None:
        try:
            key = binascii.unhexlify(args.key)
        except (binascii.Error, ValueError):
            raise BadInput("--key", "must be hex digits")
        if len(key) != (16 if is_keypad else 32):
            raise BadInput("--key", "must be %d hex digits for this token" % (32 if is_keypad else 64))
        mkey, kkey = (bytes(32), key) if is_keypad else (key, None)
    else:
        master = _master(args)
        mkey = keys.meter_key(master, meter, rev)
        kkey = keys.keypad_key(master, meter)
    if is_keypad:
        state = keypad.KeypadState(kkey)
        state.last = count
        if count:
            state.used = 1  # the last accepted count is used, as on the meter
        d = state.decode(text)
        if d == keypad.INVALID and _below_window(state, text):
            d = keypad.USED  # the meter refuses those as used (it remembers the codes it accepted)
        code = {
            keypad.MALFORMED: results.MALFORMED,
            keypad.INVALID: results.BAD_MAC,
            keypad.USED: results.ALREADY_USED,
            keypad.OLD: results.TOO_OLD,
        }.get(d, results.ACCEPTED) if not isinstance(d, keypad.Decoded) else results.ACCEPTED
        data = {"format": "keypad", "result": code}
        if isinstance(d, keypad.Decoded):
            unit = 10000 // div
            data.update(kind=d.kind, value=d.value, count=d.count, amount=d.value * unit)
    else:
        try:
            raw = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise BadInput("token", "neither keypad digits (9, 12, 15 or 20) nor hex bytes")
        guard = TokenGuard(meter, mkey, rev)
        code, _ = guard.check(raw, wall)
        data = {"format": "mqtt", "result": code}
        try:
            tok, _, _ = mqtt.parse(raw)
            data.update(tok.fields())
        except ValueError as e:
            data["error"] = str(e)
    _print(args, data, ["%s: %s" % (k, json.dumps(data[k], default=_jsonable)) for k in sorted(data)])
    return 0 if data["result"] == results.ACCEPTED else 1


def cmd_batch(args):
    return _run(_batch, args)


def _parse_arg(text):
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise BadInput("--arg", "expected NAME=VALUE, got %r" % text)
    if value.lstrip("-").isdigit():
        return name, int(value)
    if value in ("true", "false"):
        return name, value == "true"
    return name, value


def _batch(args):
    name = args.batch_command
    if name not in mqtt.COMMANDS or name == mqtt.KEY_CHANGE:
        raise BadInput("--command", "unknown command %r (known: %s)" % (name, ", ".join(mqtt.COMMANDS[:-1])))
    cargs = dict(_parse_arg(a) for a in args.arg)
    ttl = _int(args.ttl, "--ttl", 60, 10 * 365 * 86400)
    try:
        with open(args.csv, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput("--csv", "cannot read %s: %s" % (args.csv, e))
    master = _master(args)
    ledger = Ledger(args.ledger)
    try:
        rows = batch.run(ledger, master, text, name, cargs, int(time.time()), ttl)
    finally:
        ledger.close()
    if args.out:
        import csv

        with open(args.out, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["line", "meter_id", "status", "seq", "error", "token"])
            w.writeheader()
            for r in rows:
                w.writerow(r)
    lines = ["%-6s %-14s %-9s %-6s %s" % ("line", "meter_id", "status", "seq", "error")]
    for r in rows:
        lines.append("%-6s %-14s %-9s %-6s %s" % (r["line"], r["meter_id"], r["status"], r["seq"] or "", r["error"] or ""))
    ok = sum(1 for r in rows if r["status"] == "issued")
    lines.append("%d issued, %d rejected" % (ok, len(rows) - ok))
    _print(args, {"results": rows, "issued": ok, "rejected": len(rows) - ok}, lines)
    return 0 if ok == len(rows) else 1


def main(argv=None):
    """Standalone entry: ``python -m headend.cli SUBCOMMAND ...``."""
    parser = argparse.ArgumentParser(prog="pmeter")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
