"""Operators' figures, all from the service's file: what ``GET /api/v1/figures`` answers.

- **remote cut and reconnect success per day** (UTC date the command was
  issued): ``trip`` commands (cut) and ``close_direct`` commands
  (reconnect) sent to their meter at least once, against those a relay
  record confirms: a ``trip`` (``close``) record with the reason
  ``command_trip`` (``command_close_direct``) from that meter at or after
  the command was issued, each record confirming one command, and no
  ``relay_failed`` record from the meter within ``RELAY_CHECK_S`` after it
  (the relay did not follow).  A command to a relay already in place
  changes nothing and is not confirmed: it counts as a failure of the
  operator's list, which is what the figure is for;
- **top-up to restore latency**: for each ``close`` record with the reason
  ``credit_restored``, the time since the newest top-up request for that
  meter before it (seconds; p50, p90, worst);
- meters offline, open deliveries, notifications the webhook has not
  taken yet after trying, and theft suspects (``headend.analytics`` over
  the settled days, ``headend.settlement``).
"""

import datetime

from . import analytics
from .delivery import OPEN
from .settlement import day_of

RELAY_CHECK_S = 600
SKEW_S = 5  # a meter's clock may be a little behind the service's
REMOTE = {"cut": ("trip", "trip", "command_trip"), "reconnect": ("close_direct", "close", "command_close_direct")}


def _utc_date(wall):
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).date().isoformat()


def percentile(values, pct):
    """Nearest-rank percentile of ``values`` (ints), None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, (len(s) * pct + 99) // 100 - 1)]


def _relay_records(shadow, since):
    with shadow.lock:
        return shadow.db.execute(
            "SELECT meter, kind, reason, wall FROM events WHERE kind IN ('trip', 'close', 'relay_failed')"
            " AND wall>=? ORDER BY wall, rowid", (since - SKEW_S,)).fetchall()


def remote_success(queue, records, first, last):
    """Per UTC day in ``first``..``last`` (ISO dates): cut and reconnect commands sent and confirmed."""
    days = {}
    used = set()
    failed = {}
    for meter, kind, reason, wall in records:
        if kind == "relay_failed":
            failed.setdefault(meter, []).append(wall)
    for row in queue.items():
        date = _utc_date(row["created"])
        which = [k for k, v in REMOTE.items() if v[0] == row["command"]]
        if row["kind"] != "command" or not which or not row["sends"] or not first <= date <= last:
            continue
        name = which[0]
        _, kind, reason = REMOTE[name]
        confirmed = False
        for i, (meter, k, r, wall) in enumerate(records):
            if (meter, k, r) == (row["meter"], kind, reason) and wall >= row["created"] - SKEW_S and i not in used:
                used.add(i)
                confirmed = not any(wall <= f <= wall + RELAY_CHECK_S for f in failed.get(meter, ()))
                break
        d = days.setdefault(date, {"date": date, "cut": {"sent": 0, "confirmed": 0},
                                   "reconnect": {"sent": 0, "confirmed": 0}})
        d[name]["sent"] += 1
        d[name]["confirmed"] += confirmed
    for d in days.values():
        for name in REMOTE:
            c = d[name]
            c["success_pm"] = c["confirmed"] * 1000 // c["sent"] if c["sent"] else None
    return [days[k] for k in sorted(days)]


def restore_latency(queue, records, first, last):
    """Top-up request to ``credit_restored`` reconnection, seconds: count, p50, p90, worst."""
    topups = {}
    for row in queue.items():
        if row["kind"] == "topup":
            topups.setdefault(row["meter"], []).append(row["created"])
    out = []
    for meter, kind, reason, wall in records:
        if kind != "close" or reason != "credit_restored" or not first <= _utc_date(wall) <= last:
            continue
        before = [t for t in topups.get(meter, ()) if t <= wall + SKEW_S]
        if before:
            out.append(max(0, wall - max(before)))
    return {"count": len(out), "p50_s": percentile(out, 50), "p90_s": percentile(out, 90),
            "worst_s": max(out) if out else None}


def figures(service, first, last, now):
    """The figures for ISO dates ``first``..``last`` (inclusive) as a JSON-ready dict."""
    since = day_of(first) * 86400
    records = _relay_records(service.shadow, since)
    offline = [r["meter"] for r in service.shadow.meters() if r["status"] != "online"]
    pending = service.queue.items(status=OPEN)
    failing = [{"id": n["dedup"], "meter_id": n["meter"], "kind": n["kind"], "attempts": n["attempts"],
                "last_error": n["last_error"]}
               for n in service.outbox.rows() if n["delivered_at"] is None and n["attempts"] > 0]
    found = analytics.suspects(service.settlement.analytics_rows(day_of(first), day_of(last)))
    return {
        "from": first, "to": last, "at": now,
        "remote": remote_success(service.queue, records, first, last),
        "topup_restore_latency": restore_latency(service.queue, records, first, last),
        "meters_offline": {"count": len(offline), "meters": offline},
        "pending_deliveries": {"count": len(pending),
                               "oldest_created": min(r["created"] for r in pending) if pending else None},
        "failing_notifications": {"count": len(failing), "notifications": failing},
        "theft_suspects": [dict(s, meter_id=s.pop("id")) for s in found if s["suspect"]],
    }
