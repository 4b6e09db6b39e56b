"""``pmeter`` subcommands of the head-end: keys, vend, token decode, batch.

``register(subparsers)`` adds them to the pmeter argparse parser; each
sets ``handler`` to a function that takes the parsed namespace and returns the
exit code (0 ok, 1 refused/failed, 2 bad input, with a message naming the
argument).  Options common to every head-end command (``--config``,
``--master``, ``--ledger``, the broker's) are ``headend.options``.
``main(argv)`` runs them standalone: ``python -m headend.cli``.
"""

import argparse
import binascii
import json
import os
import sys
import time

from agent import results
from agent.tokens import TokenGuard, keypad, mqtt

from . import batch, check_meter_id, format_amount, keys, options, parse_amount, vend
from .options import BadInput, Settings

MAX_TTL = 10 * 365 * 86400


def register(subparsers):
    """Add the keys, vend, token and batch subcommands to ``subparsers``."""
    p = subparsers.add_parser("keys", help="master key and per-meter keys")
    ks = p.add_subparsers(dest="keys_command", metavar="{init,derive}")
    ks.required = True
    q = ks.add_parser("init", help="create the master key file (mode 0600)")
    options.add(q, ["master"])
    q.set_defaults(handler=cmd_keys_init)
    q = ks.add_parser("derive", help="print a meter's [tokens] and [link] tables for its agent config (provisioning)")
    options.add(q, ["master"])
    q.add_argument("--meter", required=True, help="meter id, 12 digits")
    q.add_argument("--revision", default="0", help="key revision (default 0)")
    q.add_argument("--divider", default="1", help="keypad value divider (default 1)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--out", help="write the agent's keys file here (mode 0600, never overwritten) instead of printing it")
    q.set_defaults(handler=cmd_keys_derive)

    p = subparsers.add_parser("vend", help="issue a top-up token")
    options.add(p, ["master", "ledger"])
    p.add_argument("--meter", required=True, help="meter id, 12 digits")
    p.add_argument("--amount", help="money in CNY, e.g. 50.00 (at most 4 decimals)")
    p.add_argument("--revend", metavar="REF", help="instead of --amount: pay out again the credit of a top-up the meter "
                   "refused (e.g. mqtt:7 answered over_hoarding_limit); recorded as its re-vend, at most once")
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
    options.add(q, ["master"])
    q.add_argument("token", help="MQTT token as hex, or keypad digits")
    q.add_argument("--meter", required=True, help="meter id, 12 digits")
    q.add_argument("--meter-key", help="the meter's token key (64 hex digits) or keypad key (32), instead of "
                   "deriving it from --master")
    q.add_argument("--revision", default="0", help="meter's key revision (default 0)")
    q.add_argument("--count", default="0", help="keypad: the meter's last accepted count (default 0)")
    q.add_argument("--divider", default="1", help="keypad value divider (default 1)")
    q.add_argument("--wall", help="check expiry at this Unix time (default now)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=cmd_token_decode)

    p = subparsers.add_parser("batch", help="one command to every meter of a CSV, delivered over MQTT")
    options.add(p, ["master", "ledger"] + list(options.BROKER))
    p.add_argument("--csv", required=True, help="CSV file with meter ids (column meter_id, or the first column)")
    p.add_argument("--command", required=True, dest="batch_command", help="command name, e.g. set_mode")
    p.add_argument("--arg", action="append", default=[],
                   help="command argument NAME=VALUE (repeatable; VALUE an integer, true/false, JSON or text)")
    p.add_argument("--ttl", default=str(vend.DEFAULT_TTL), help="seconds the commands stay valid")
    p.add_argument("--timeout", default="30", help="seconds to wait for the meters' answers (default 30)")
    p.add_argument("--out", help="also write the result table as CSV to this file")
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


def meter_arg(value):
    """``--meter``: a 12-digit meter id; BadInput otherwise."""
    try:
        return check_meter_id(value)
    except ValueError as e:
        raise BadInput("--meter", str(e))


def _divider(value):
    d = _int(value, "--divider", 1, 10000)
    if 10000 % d:
        raise BadInput("--divider", "must divide 10000, got %d" % d)
    return d


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
    return options.run(_keys_init, args)


def _keys_init(args):
    st = Settings(args)
    path = st.get("master")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(st.source("master"), "folder %s does not exist" % folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(st.source("master"), "cannot create %s: permission denied in %s" % (path, folder))
    try:
        keys.init_master(path)
    except keys.KeyFileError as e:
        raise BadInput(st.source("master"), str(e))
    except OSError as e:
        raise BadInput(st.source("master"), "cannot create %s: %s" % (path, e.strerror or e))
    print("created master key file %s (mode 0600): back it up offline" % path)
    return 0


def cmd_keys_derive(args):
    return options.run(_keys_derive, args)


def _keys_derive(args):
    meter = meter_arg(args.meter)
    rev = _int(args.revision, "--revision", 0, 0xFFFFFFFF)
    div = _divider(args.divider)
    prov = keys.provision(Settings(args).master(), meter, rev, div)
    text = keys.keys_file_text(meter, prov)
    if args.out:
        try:
            keys.create_private(args.out, text.encode())
        except (keys.KeyFileError, OSError) as e:
            raise BadInput("--out", str(e))
        print(args.out)
        return 0
    _print(args, prov, [text.rstrip("\n")])
    return 0


def cmd_vend(args):
    return options.run(_vend, args)


def _vend(args):
    meter = meter_arg(args.meter)
    amount = amount_or_revend(args)
    ttl = _int(args.ttl, "--ttl", 60, MAX_TTL)
    div = _divider(args.divider)
    if (args.extended or args.set or args.restricted) and not args.keypad:
        raise BadInput("--extended/--set/--restricted", "only apply with --keypad")
    if args.revend is not None and args.keypad:
        raise BadInput("--revend", "re-vends an MQTT top-up: not with --keypad")
    kind = keypad.SET if args.set else keypad.ADD
    if args.keypad:
        try:
            vend.keypad_raw(amount, kind, div, args.extended)
        except ValueError as e:
            raise BadInput("--amount", str(e))
    st = Settings(args)
    master = st.master()
    wall = int(time.time())
    ledger = st.ledger()
    try:
        if args.keypad:
            count, digits = vend.keypad_token(ledger, master, meter, amount, wall, kind, div, args.extended, restricted=args.restricted)
            data = {"meter": meter, "amount": amount, "count": count, "digits": digits, "kind": kind}
            grouped = " ".join(digits[i : i + 3] for i in range(0, len(digits), 3))
            _print(args, data, ["%s  (meter %s, %s %s CNY, count %d)" % (grouped, meter, kind, format_amount(amount), count)])
            return 0
        if args.revend is not None:
            try:
                seq, tok = vend.revend(ledger, master, meter, args.revend, wall, ttl)
            except ValueError as e:
                raise BadInput("--revend", str(e))
            amount = ledger.token(meter, "mqtt", seq)["amount"]
        else:
            seq, tok = vend.topup(ledger, master, meter, amount, wall, ttl)
        data = {"meter": meter, "amount": amount, "seq": seq, "token": tok.hex(), "expires": wall + ttl,
                "revend_of": args.revend}
        _print(args, data, [tok.hex()])
    finally:
        ledger.close()
    return 0


def amount_or_revend(args):
    """The ``--amount`` in minor units, or None with ``--revend``; BadInput unless exactly one is given."""
    if (args.amount is None) == (args.revend is None):
        raise BadInput("--amount", "give either --amount or --revend REF")
    return amount_arg(args.amount) if args.amount is not None else None


def amount_arg(text, arg="--amount"):
    """Money in CNY ("50.00") as minor units, at most one token's worth; BadInput naming ``arg``."""
    try:
        amount = parse_amount(text)
    except ValueError as e:
        raise BadInput(arg, str(e))
    if amount <= 0:
        raise BadInput(arg, "must be more than zero")
    if amount > mqtt.MAX_AMOUNT:
        raise BadInput(arg, "at most %s CNY in one token, got %s" % (format_amount(mqtt.MAX_AMOUNT), text))
    return amount


def cmd_token_decode(args):
    return options.run(_token_decode, args)


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
    meter = meter_arg(args.meter)
    rev = _int(args.revision, "--revision", 0, 0xFFFFFFFF)
    count = _int(args.count, "--count", 0, 1 << 40)
    div = _divider(args.divider)
    wall = _int(args.wall, "--wall", 0, mqtt.TIME_MAX) if args.wall is not None else int(time.time())
    text = args.token.strip().replace(" ", "")
    # 9 / 12 digits, or 15 / 20 restricted digits (1-4) for 4-key keypads
    is_keypad = text.isdigit() and len(text) in (9, 12, 15, 20)
    if args.meter_key is not None:
        try:
            key = binascii.unhexlify(args.meter_key)
        except (binascii.Error, ValueError):
            raise BadInput("--meter-key", "must be hex digits")
        if len(key) != (16 if is_keypad else 32):
            raise BadInput("--meter-key", "must be %d hex digits for this token" % (32 if is_keypad else 64))
        mkey, kkey = (bytes(32), key) if is_keypad else (key, None)
    else:
        master = Settings(args).master()
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
    return options.run(_batch, args)


def _parse_arg(text):
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise BadInput("--arg", "expected NAME=VALUE, got %r" % text)
    if value.lstrip("-").isdigit() and value.isascii():
        return name, int(value)
    if value in ("true", "false"):
        return name, value == "true"
    if value[:1] in ("{", "["):
        try:
            return name, json.loads(value)
        except ValueError as e:
            raise BadInput("--arg", "%s: not valid JSON: %s" % (name, e))
    return name, value


def _writable_file(path, arg):
    # Checked before anything is issued; the file is written only at the end.
    if os.path.isdir(path):
        raise BadInput(arg, "%s is a folder" % path)
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise BadInput(arg, "%s: not writable (permission denied)" % path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(arg, "%s: folder %s does not exist" % (path, folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(arg, "%s: cannot create a file in %s (permission denied)" % (path, folder))


BATCH_COLUMNS = ("line", "meter_id", "ref", "result", "balance")


def _batch(args):
    # Everything is checked before anything is issued or sent.
    name = args.batch_command
    cargs = dict(_parse_arg(a) for a in args.arg)
    if name not in vend.COMMANDS:
        raise BadInput("--command", batch.check_command(name, cargs))
    problem = batch.check_command(name, cargs)
    if problem is not None:
        raise BadInput("--arg", problem)
    ttl = _int(args.ttl, "--ttl", 60, MAX_TTL)
    timeout = options.timeout(args.timeout)
    try:
        with open(args.csv, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadInput("--csv", "cannot read %s: %s" % (args.csv, e.strerror or e))
    except UnicodeDecodeError:
        raise BadInput("--csv", "%s is not a UTF-8 text file" % args.csv)
    try:
        rows = batch.plan(text)
    except ValueError as e:
        raise BadInput("--csv", "%s: %s" % (args.csv, e))
    if args.out:
        _writable_file(args.out, "--out")
    st = Settings(args)
    if st.service("service", "queue"):
        out = _batch_queued(st, rows, name, cargs, ttl, timeout)
    else:
        out = _batch_direct(st, rows, name, cargs, timeout)
        if isinstance(out, int):
            return out
    ok = sum(1 for r in out if r["result"] == results.ACCEPTED)
    pending = sum(1 for r in out if r["result"] == "pending")
    summary = {"accepted": ok, "refused": len(out) - ok - pending, "pending": pending}
    lines = ["%-6s %-14s %-12s %-20s %s" % ("line", "meter_id", "ref", "result", "balance CNY")]
    for r in out:
        lines.append("%-6s %-14s %-12s %-20s %s" % (r["line"], r["meter_id"], r["ref"], r["result"], r["balance"] or "-"))
    lines.append("%d accepted, %d refused, %d pending" % (ok, summary["refused"], pending))
    if pending and st.service("service", "queue"):
        lines.append("pending: no answer within %g s. The head-end service keeps each command queued and sends it "
                     "when its meter comes online, until it is applied or expires (pmeter status)." % timeout)
    elif pending:
        lines.append("pending: no answer within %g s. Each command was published once and is not re-sent: a meter "
                     "offline now never receives it; one online may still answer (the next head-end command with "
                     "this client id records it; see pmeter status)." % timeout)
    code = 0 if ok == len(out) else 1
    if args.out:
        import csv

        try:
            with open(args.out, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, BATCH_COLUMNS)
                w.writeheader()
                for r in out:
                    w.writerow(r)
        except OSError as e:
            lines.append("could not write %s: %s (the table above is the result)" % (args.out, e.strerror or e))
            code = 1
    _print(args, dict(summary, results=out), lines)
    return code


def _batch_direct(st, rows, name, cargs, timeout):
    # Publish once to each meter and collect the acks: the result rows, or an exit code.
    conn = options.Connection(st)
    code = conn.start()
    if code is not None:
        return code
    head = conn.head
    out = []
    try:
        wall = int(time.time())
        for line, meter_id in rows:
            ref = head.send_command(meter_id, name, cargs, wall, operator="batch")
            out.append({"line": line, "meter_id": meter_id, "ref": ref, "result": "pending", "balance": None})
        acks = head.wait_acks([(r["meter_id"], r["ref"]) for r in out], timeout)
    finally:
        conn.stop()
    for r in out:
        ack = acks.get((r["meter_id"], r["ref"]))
        if ack is not None:
            r["result"] = ack["b"].get("code")
            bal = ack["b"].get("bal")
            r["balance"] = format_amount(bal) if isinstance(bal, int) else None
    return out


def _batch_queued(st, rows, name, cargs, ttl, timeout):
    # [service] queue: enqueue for the running service (headend.delivery), wait for the answers.
    from .delivery import Queue

    master = st.master()
    shadow = st.shadow()
    out = []
    try:
        q = Queue(shadow.ledger)
        for line, meter_id in rows:
            row, _ = q.command(master, meter_id, name, cargs, ttl, source="batch")
            out.append({"line": line, "meter_id": meter_id, "ref": row["ref"], "result": "pending", "balance": None,
                        "id": row["id"]})
        deadline = time.monotonic() + timeout
        for r in out:
            row = q.wait(r.pop("id"), max(0.0, deadline - time.monotonic()))
            if row["code"] is not None and row["status"] in ("applied", "refused"):
                r["result"] = row["code"]
                r["balance"] = format_amount(row["balance"]) if isinstance(row["balance"], int) else None
            elif row["status"] == "expired":
                r["result"] = "expired"
    finally:
        shadow.close()
    return out


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
