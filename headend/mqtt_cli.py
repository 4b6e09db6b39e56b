"""``pmeter push``, ``pmeter status`` and ``pmeter restore``: the head-end's command line over MQTT.

The options (``--config``, ``--broker``, ``--ca``, ``--cert``, ``--key``,
``--client-id``, ``--master``, ``--ledger``) and their environment
variables and config file keys are the same for every head-end command
(``headend.options``).  The ledger file holds both the issued tokens (every
sequence comes from it, shared with ``pmeter vend`` and ``pmeter batch``)
and the shadow: what the meters last reported to any of these commands.
Every argument is checked before anything is vended or sent.
Exit codes: 0 accepted/ok, 1 refused by the meter or no answer, 2 bad input.
"""

import json
import time

from . import format_amount, options
from .cli import amount_or_revend, meter_arg
from .options import BadInput, Settings

STATE_WAIT_S = 2.0  # after an accepted ack, how long push waits for the meter's new state


def register(subparsers):
    """Add ``push``, ``status`` and ``restore`` to the ``pmeter`` command."""
    names = ["master", "ledger"] + list(options.BROKER)
    p = subparsers.add_parser("push", help="vend a top-up to a meter over MQTT and wait for its ack")
    options.add(p, names)
    p.add_argument("--meter", required=True, help="12-digit meter id")
    p.add_argument("--amount", help="amount in CNY, e.g. 50.00")
    p.add_argument("--revend", metavar="REF", help="instead of --amount: pay out again a top-up the meter refused "
                   "(e.g. mqtt:7 answered over_hoarding_limit), recorded as its re-vend, at most once")
    p.add_argument("--wait", action="store_true", help="wait for the acknowledgement")
    p.add_argument("--timeout", default="30", help="seconds to wait with --wait (default 30)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_push)
    s = subparsers.add_parser("status", help="what each meter last reported, with the age of every value")
    options.add(s, names)
    s.add_argument("--meter", help="only this meter")
    s.add_argument("--refresh", action="store_true",
                   help="first collect what meters sent from the broker (their retained state and what this "
                        "client id's session queued); uses the broker options and --master")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(handler=cmd_status)
    r = subparsers.add_parser("restore", help="give a meter that lost its store its balance back from the shadow")
    options.add(r, names)
    r.add_argument("--meter", required=True, help="12-digit meter id")
    r.add_argument("--yes", action="store_true", help="send it (without: only show what would be sent)")
    r.add_argument("--timeout", default="30", help="seconds to wait for the acknowledgement (default 30)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(handler=cmd_restore)


def _cny(minor):
    return "%s CNY" % format_amount(minor) if isinstance(minor, int) and not isinstance(minor, bool) else "unknown"


def cmd_push(args):
    """Vend, publish, optionally wait; print code, balance and latency."""
    return options.run(_push, args)


def _push(args):
    meter = meter_arg(args.meter)
    amount = amount_or_revend(args)
    wait = options.timeout(args.timeout) if args.wait else 0
    if not args.wait:
        options.timeout(args.timeout)  # checked even when unused: a typo is still an error
    st = Settings(args)
    if st.service("service", "queue") and args.revend is None:
        return _push_queued(args, st, meter, amount, wait)
    conn = options.Connection(st)
    code = conn.start()
    if code is not None:
        return code
    head = conn.head
    try:
        if args.revend is not None:
            try:
                ref, ack, secs = head.push_revend(meter, args.revend, wait=wait)
            except ValueError as e:
                raise BadInput("--revend", str(e))
            amount = head.ledger.token(meter, "mqtt", int(ref.split(":")[1]))["amount"]
        else:
            ref, ack, secs = head.push_topup(meter, amount, wait=wait)
        if ack is not None and ack["b"].get("code") == "accepted":
            # The meter publishes its state with the ack: have it in the
            # shadow, so pmeter status shows the balance and relay it led to.
            bal = ack["b"].get("bal")
            head.wait_state(meter, lambda body: body.get("bal") == bal, STATE_WAIT_S)
    finally:
        conn.stop()
    out = {"meter": meter, "ref": ref, "amount": amount, "code": None, "balance": None, "latency_ms": None,
           "revend_of": args.revend}
    if ack is not None:
        out.update(code=ack["b"].get("code"), balance=ack["b"].get("bal"), latency_ms=round(secs * 1000, 1))
    if args.json:
        print(json.dumps(out, sort_keys=True))
    elif not args.wait:
        print("sent %s: %s to meter %s (published once; a meter offline now never receives it)"
              % (ref, _cny(amount), meter))
    elif ack is None:
        print(_no_ack(meter, wait, ref))
    else:
        print("%s %s: balance %s, round trip %.1f ms" % (ref, out["code"], _cny(out["balance"]), secs * 1000))
        if out["code"] != "accepted":
            print(_refusal_hint(meter, ref, out["code"]))
    if not args.wait:
        return 0
    return 0 if out["code"] == "accepted" else 1


def _push_queued(args, st, meter, amount, wait):
    # [service] queue: the running service delivers (headend.delivery).
    from .delivery import FINAL, Queue

    master = st.master()
    shadow = st.shadow()
    try:
        q = Queue(shadow.ledger)
        row, _ = q.topup(master, meter, amount, st.service("service", "ttl_s"), source="push")
        if wait:
            row = q.wait(row["id"], wait)
    finally:
        shadow.close()
    out = {"meter": meter, "ref": row["ref"], "amount": amount, "code": row["code"], "balance": row["balance"],
           "status": row["status"], "delivery_id": row["id"], "revend_of": None}
    if args.json:
        print(json.dumps(out, sort_keys=True))
    elif row["status"] in FINAL:
        print("%s %s (%s): balance %s" % (row["ref"], row["status"], row["code"] or "no answer", _cny(row["balance"])))
        if row["status"] == "refused":
            print(_refusal_hint(meter, row["ref"], row["code"]))
    else:
        print("%s %s: %s to meter %s (delivery %d; the head-end service delivers it while the meter is online and "
              "re-sends it after each of its births until it is applied or expires)"
              % (row["ref"], row["status"], _cny(amount), meter, row["id"]))
    if not args.wait:
        return 0
    return 0 if row["status"] == "applied" else 1


def _refusal_hint(meter, ref, code):
    if code == "already_used":
        return ("ALARM: the meter had already used the sequence of %s for another token (a lost or replaced "
                "ledger?): this credit was NOT applied. Re-vend it: pmeter push --meter %s --revend %s --wait"
                % (ref, meter, ref))
    return ("the credit was not applied; once the meter can take it: pmeter push --meter %s --revend %s --wait"
            % (meter, ref))


def _no_ack(meter, wait, ref):
    return ("no acknowledgement from meter %s within %g s (ref %s). The command was published once and is not "
            "re-sent: if the meter is offline it never receives it; if it is online it may still apply it. "
            "pmeter status --meter %s --refresh shows its answer once it comes; do not vend again before."
            % (meter, wait, ref, meter))


def cmd_status(args):
    """Print what each meter last reported (and the reconciliation)."""
    return options.run(_status, args)


def _age(now, t):
    if not isinstance(t, int) or isinstance(t, bool):
        return "never"
    d = max(0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if d >= size:
            return "%d %s ago" % (d // size, unit)
    return "%d s ago" % d


def _status(args):
    meter = meter_arg(args.meter) if args.meter is not None else None
    st = Settings(args)
    if args.refresh:
        st.ledger_path(create=False)
        conn = options.Connection(st)
        code = conn.start()
        if code is not None:
            return code
        time.sleep(STATE_WAIT_S)  # retained states and the session's queue arrive right after subscribing
        conn.stop()
    shadow = st.shadow(create=False)
    try:
        rows = shadow.meters(meter)
        if meter and not rows:
            return options.fail("meter %s: nothing received from it yet in %s" % (meter, st.get("ledger")), 1)
        now = int(time.time())
        for row in rows:
            row["reconcile"] = shadow.reconcile(row["meter"], now)
    finally:
        shadow.close()
    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return 0
    for row in rows:
        print(_status_text(row, now))
    return 0


def _status_text(row, now):
    st = row["state"] or {}
    rec = row["reconcile"]
    energy = st.get("wh")
    when = ("state sealed %s" % _age(now, row["state_t"])) if row["state"] else "no state received yet"
    lines = [
        "meter %s" % row["meter"],
        "  status   %-22s (%s)" % (row["status"] or "unknown",
                                   "received %s" % _age(now, row["status_t"]) if row["status"] else "none received yet"),
        "  balance  %-22s (%s)" % (_cny(st.get("bal")), when),
        "  relay    %-22s (%s)" % (st.get("relay") or "unknown", when),
        "  energy   %-22s (%s)" % ("%d Wh" % energy if isinstance(energy, int) else "unknown", when),
        "  issued   %s, applied %s, pending %s" % (_cny(rec["issued"]), _cny(rec["applied"]),
                                                   ", ".join(rec["pending"]) or "none"),
        "  last heard from %s" % _age(now, row["seen"]),
    ]
    problems = rec["problems"]
    lines.append("  problems: %s" % ("none" if not problems else ""))
    lines.extend("    %s: %s" % (p["code"], p["message"]) for p in problems)
    return "\n".join(lines)


def cmd_restore(args):
    """Restore a lost meter's balance from the shadow (set_credit, authenticated)."""
    return options.run(_restore, args)


def _restore(args):
    meter = meter_arg(args.meter)
    wait = options.timeout(args.timeout)
    st = Settings(args)
    shadow = st.shadow(create=False)
    try:
        plan = shadow.restore_plan(meter)
    except ValueError as e:
        return options.fail("cannot restore: %s" % e, 1)
    finally:
        shadow.close()
    text = ("meter %s lost its store at %d; last good balance %s (state of %d) + credits applied after it %s "
            "+ change since the loss %s = %s" % (meter, plan["lost_since"], _cny(plan["good_balance"]),
                                                 plan["good_t"], _cny(plan["credits_after_good"]),
                                                 _cny(plan["since_loss"]), _cny(plan["amount"])))
    if not args.yes:
        if args.json:
            print(json.dumps(dict(plan, sent=False), sort_keys=True))
        else:
            print(text)
            print("not sent: add --yes to set the meter's balance to %s" % _cny(plan["amount"]))
        return 0
    conn = options.Connection(st)
    code = conn.start()
    if code is not None:
        return code
    try:
        plan, ref, ack, secs = conn.head.restore(meter, wait=wait)
    except ValueError as e:
        return options.fail("cannot restore: %s" % e, 1)
    finally:
        conn.stop()
    out = dict(plan, sent=True, ref=ref, code=ack["b"]["code"] if ack else None,
               balance=ack["b"]["bal"] if ack else None)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    elif ack is None:
        print(text)
        print(_no_ack(meter, wait, ref))
    else:
        print(text)
        print("%s %s: balance %s" % (ref, out["code"], _cny(out["balance"])))
    return 0 if out["code"] == "accepted" else 1
