"""``pmeter push``, ``pmeter status`` and ``pmeter restore``: the head-end's command line.

Connection settings come from options or the environment (PMETER_BROKER,
PMETER_CA, PMETER_CERT, PMETER_KEY, PMETER_MASTER_KEY_FILE, PMETER_SHADOW,
PMETER_LEDGER).  The ledger is the same file ``pmeter vend`` and ``pmeter
batch`` use: every sequence comes from it.
Exit codes: 0 accepted/ok, 1 refused by the meter or no answer, 2 bad input.
"""

import argparse
import json
import os
import sys

MONEY_SCALE = 10000
MAX_AMOUNT = 10**13


def parse_amount(text):
    """'50.00' -> 500000 minor units (headend.parse_amount), naming --amount on error."""
    from headend import parse_amount as _parse

    try:
        value = _parse(text)
    except ValueError as e:
        raise ValueError("--amount: %s" % e)
    if value <= 0 or value > MAX_AMOUNT:
        raise ValueError("--amount must be above 0 and at most %d, got %r" % (MAX_AMOUNT // MONEY_SCALE, text))
    return value


def _fail(msg, code=2):
    print("pmeter: %s" % msg, file=sys.stderr)
    return code


def _meter_id(text):
    if len(text) != 12 or not text.isdigit():
        raise argparse.ArgumentTypeError("--meter must be the 12-digit meter id, got %r" % text)
    return text


def _connection_args(p):
    p.add_argument("--broker", default=os.environ.get("PMETER_BROKER", "127.0.0.1:8883"),
                   help="broker HOST:PORT (TLS) [PMETER_BROKER]")
    p.add_argument("--ca", default=os.environ.get("PMETER_CA"), help="CA certificate (PEM) [PMETER_CA]")
    p.add_argument("--cert", default=os.environ.get("PMETER_CERT"), help="head-end client certificate [PMETER_CERT]")
    p.add_argument("--key", default=os.environ.get("PMETER_KEY"), help="head-end client key [PMETER_KEY]")
    p.add_argument("--master-key-file", default=os.environ.get("PMETER_MASTER_KEY_FILE"),
                   help="file holding the master key in hex [PMETER_MASTER_KEY_FILE]")
    p.add_argument("--client-id", default=os.environ.get("PMETER_CLIENT_ID", "headend-cli"),
                   help="MQTT client id; its persistent session collects what meters send between runs. "
                        "Processes running at the same time need different ids [PMETER_CLIENT_ID]")


def _shadow_arg(p):
    p.add_argument("--shadow", default=os.environ.get("PMETER_SHADOW", "pmeter-shadow.db"),
                   help="SQLite shadow database [PMETER_SHADOW]")
    p.add_argument("--ledger", default=os.environ.get("PMETER_LEDGER", "pmeter-ledger.sqlite"),
                   help="SQLite ledger of issued tokens, shared with pmeter vend [PMETER_LEDGER]")


def _open_shadow(args):
    from headend.ledger import Ledger
    from headend.shadow import Shadow

    return Shadow(args.shadow, Ledger(args.ledger))


def _connect(args):
    """(HeadEnd, None) or (None, exit code) after checking the connection options."""
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        return None, _fail("--broker must be HOST:PORT, got %r" % args.broker)
    for name in ("ca", "cert", "key", "master_key_file"):
        path = getattr(args, name)
        if not path or not os.path.isfile(path):
            return None, _fail("--%s: no such file %r" % (name.replace("_", "-"), path))
    try:
        master = bytes.fromhex(open(args.master_key_file).read().strip())
    except ValueError:
        return None, _fail("--master-key-file must hold the master key in hex")
    from headend.link import Fleet, HeadEnd
    from hw.mqtt_paho import TLS

    try:
        fleet = Fleet(master)
    except ValueError as e:
        return None, _fail("--master-key-file: %s" % e)
    head = HeadEnd(fleet, _open_shadow(args), host, int(port), tls=TLS(args.ca, args.cert, args.key),
                   client_id=args.client_id)
    try:
        head.start()
    except Exception as e:
        return None, _fail("cannot reach the broker at %s: %s" % (args.broker, e), 1)
    return head, None


def register(subparsers):
    """Add ``push``, ``status`` and ``restore`` to the ``pmeter`` command."""
    p = subparsers.add_parser("push", help="vend a top-up to a meter over MQTT and wait for its ack")
    p.add_argument("--meter", required=True, type=_meter_id, help="12-digit meter id")
    p.add_argument("--amount", required=True, help="amount in currency units, e.g. 50.00")
    p.add_argument("--wait", action="store_true", help="wait for the acknowledgement")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait with --wait")
    p.add_argument("--json", action="store_true", help="print JSON")
    _connection_args(p)
    _shadow_arg(p)
    p.set_defaults(handler=cmd_push)
    s = subparsers.add_parser("status", help="show the head-end's shadow of the fleet")
    s.add_argument("--meter", type=_meter_id, help="only this meter")
    s.add_argument("--json", action="store_true", help="print JSON")
    _shadow_arg(s)
    s.set_defaults(handler=cmd_status)
    r = subparsers.add_parser("restore", help="give a meter that lost its store its balance back from the shadow")
    r.add_argument("--meter", required=True, type=_meter_id, help="12-digit meter id")
    r.add_argument("--yes", action="store_true", help="send it (without: only show what would be sent)")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the acknowledgement")
    r.add_argument("--json", action="store_true", help="print JSON")
    _connection_args(r)
    _shadow_arg(r)
    r.set_defaults(handler=cmd_restore)


def cmd_push(args):
    """Vend, publish, optionally wait; print code, balance and latency."""
    try:
        amount = parse_amount(args.amount)
    except ValueError as e:
        return _fail(str(e))
    head, code = _connect(args)
    if head is None:
        return code
    try:
        ref, ack, secs = head.push_topup(args.meter, amount, wait=args.timeout if args.wait else 0)
    finally:
        head.stop()
    out = {"meter": args.meter, "ref": ref, "amount": amount, "code": None, "balance": None,
           "latency_ms": None}
    if ack is not None:
        out.update(code=ack["b"]["code"], balance=ack["b"]["bal"], latency_ms=round(secs * 1000, 1))
    if args.json:
        print(json.dumps(out, sort_keys=True))
    elif not args.wait:
        print("sent %s: %s to meter %s" % (ref, args.amount, args.meter))
    elif ack is None:
        print("no acknowledgement from meter %s within %.0f s (ref %s; the meter applies it at most once "
              "when it comes back)" % (args.meter, args.timeout, ref))
    else:
        bal = out["balance"]
        print("%s %s: balance %s, round trip %.1f ms" % (ref, out["code"],
              "%d.%04d" % divmod(bal, MONEY_SCALE) if isinstance(bal, int) and bal >= 0 else bal, secs * 1000))
    if not args.wait:
        return 0
    return 0 if out["code"] == "accepted" else 1


def cmd_status(args):
    """Print the shadow (and reconciliation) of one meter or all."""
    if not os.path.isfile(args.shadow):
        return _fail("--shadow: no such file %r" % args.shadow)
    import time

    shadow = _open_shadow(args)
    rows = shadow.meters(args.meter)
    if args.meter and not rows:
        return _fail("meter %s is not in the shadow %s" % (args.meter, args.shadow), 1)
    for row in rows:
        row["reconcile"] = shadow.reconcile(row["meter"], int(time.time()))
    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return 0
    for row in rows:
        st = row["state"] or {}
        rec = row["reconcile"]
        print("%s  %-7s  balance %-12s  relay %-16s  energy %s Wh  issued %s  applied %s  %s" % (
            row["meter"], row["status"] or "?", st.get("bal"), st.get("relay"), st.get("wh"),
            rec["issued"], rec["applied"], "; ".join(p["message"] for p in rec["problems"]) or "ok"))
    return 0


def _money(v):
    return "%s%d.%04d" % (("-",) + divmod(-v, MONEY_SCALE)) if v < 0 else "%d.%04d" % divmod(v, MONEY_SCALE)


def cmd_restore(args):
    """Restore a lost meter's balance from the shadow (set_credit, authenticated)."""
    if not os.path.isfile(args.shadow):
        return _fail("--shadow: no such file %r" % args.shadow)
    shadow = _open_shadow(args)
    try:
        plan = shadow.restore_plan(args.meter)
    except ValueError as e:
        return _fail("cannot restore: %s" % e, 1)
    finally:
        shadow.close()
    text = ("meter %s lost its store at %d; last good balance %s (state of %d) + credits applied after it %s "
            "+ change since the loss %s = %s" % (args.meter, plan["lost_since"], _money(plan["good_balance"]),
                                                 plan["good_t"], _money(plan["credits_after_good"]),
                                                 _money(plan["since_loss"]), _money(plan["amount"])))
    if not args.yes:
        if args.json:
            print(json.dumps(dict(plan, sent=False), sort_keys=True))
        else:
            print(text)
            print("not sent: add --yes to set the meter's balance to %s" % _money(plan["amount"]))
        return 0
    head, code = _connect(args)
    if head is None:
        return code
    try:
        plan, ref, ack, secs = head.restore(args.meter, wait=args.timeout)
    except ValueError as e:
        head.stop()
        return _fail("cannot restore: %s" % e, 1)
    head.stop()
    out = dict(plan, sent=True, ref=ref, code=ack["b"]["code"] if ack else None,
               balance=ack["b"]["bal"] if ack else None)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    elif ack is None:
        print(text)
        print("no acknowledgement from meter %s within %.0f s (ref %s)" % (args.meter, args.timeout, ref))
    else:
        print(text)
        print("%s %s: balance %s" % (ref, out["code"], _money(out["balance"]) if isinstance(out["balance"], int)
                                     else out["balance"]))
    return 0 if out["code"] == "accepted" else 1
