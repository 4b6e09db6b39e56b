"""Daily settlement: each meter's days from the daily freezes it reports, checked exactly.

A meter's daily freeze event (``agent.meter``) carries, at the freeze
instant, its energy register, per-rate energy (sharp, peak, flat, valley),
balance, and ``chg``: the money it has charged for energy ever.  Between two
consecutive freezes of one outbox epoch (in the meter's own record order)
the day's figures are the differences, and the credits are the meter's
accepted ``topup`` events in between.  The check, in integers:

    closing balance == opening balance + credits - charge

A difference (``mismatch``, minor units) means the balance moved by money
neither charged nor credited (a balance set by command, a lost record, a
faulty meter): the day is stored with it and a ``settlement_mismatch``
notification goes out once (``headend.notify``), never hidden.  The first
freeze of a meter (or of a new epoch, after a lost store) opens the
settlement: it settles no day.  A freeze that fills several missed days
(``days`` > 1, the meter was off over midnight) settles them as one row,
dated by the last.

Rows live in the table ``settlements`` of the ledger's SQLite file;
``bills`` reads them with monthly statements, ``csv_text`` exports them.
"""

import csv
import datetime
import io
import json

from . import format_amount

SCHEMA = """
CREATE TABLE IF NOT EXISTS settlements (
    meter TEXT NOT NULL, day INTEGER NOT NULL, days INTEGER NOT NULL, epoch INTEGER NOT NULL, rec INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL, rates TEXT NOT NULL, charge INTEGER NOT NULL, credits INTEGER NOT NULL,
    opening INTEGER NOT NULL, closing INTEGER NOT NULL, chg INTEGER NOT NULL, mismatch INTEGER NOT NULL,
    cut_s INTEGER NOT NULL, covers INTEGER NOT NULL, flags INTEGER NOT NULL, PRIMARY KEY (meter, day));
"""
COLUMNS = ("day", "days", "epoch", "rec", "energy_wh", "rates", "charge", "credits", "opening", "closing", "chg",
           "mismatch", "cut_s", "covers", "flags")
# Records read besides freezes and top-ups: what the theft analytics needs per day.
OTHER_KINDS = ("trip", "close", "cover_open", "plausibility")
CSV_COLUMNS = ("meter_id", "date", "days", "energy_wh", "sharp_wh", "peak_wh", "flat_wh", "valley_wh", "charge",
               "credits", "opening_balance", "closing_balance", "meter_charged_total", "mismatch")
EPOCH_DATE = datetime.date(1970, 1, 1)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def date_of(day):
    """The ISO date of local day number ``day`` (days since 1970-01-01)."""
    return (EPOCH_DATE + datetime.timedelta(days=day)).isoformat()


def day_of(text):
    """Local day number of an ISO date ``YYYY-MM-DD``; ValueError for people."""
    try:
        return (datetime.date.fromisoformat(text) - EPOCH_DATE).days
    except (TypeError, ValueError):
        raise ValueError("must be a date YYYY-MM-DD, got %r" % (text,))


def _freeze(data):
    """The checked fields of a daily freeze's data, or None (a meter without them, or garbage)."""
    if not isinstance(data, dict):
        return None
    rates = data.get("rates")
    if not (isinstance(rates, list) and len(rates) == 4 and all(_int(r) for r in rates)):
        return None
    if not all(_int(data.get(k)) for k in ("day", "days", "energy_wh", "balance", "chg")):
        return None
    return data


class Settlement:
    """Settles days from the shadow's events into ``settlements`` (the ledger's connection and lock)."""

    def __init__(self, shadow, outbox=None):
        self.shadow = shadow
        self.ledger = shadow.ledger
        self.outbox = outbox
        with self.ledger.lock:
            self.ledger.db.executescript(SCHEMA)

    def listen(self, meter, leaf, fields, retained=False):
        """HeadEnd listener: a daily freeze settles the meter's new days."""
        body = fields.get("b")
        if leaf == "evt" and isinstance(body, dict) and body.get("kind") == "freeze":
            self.settle(meter)

    def _records(self, meter):
        # The meter's daily freezes, accepted top-ups and relay, cover and
        # plausibility records, in its own record order.
        with self.shadow.lock:
            return self.shadow.db.execute(
                "SELECT epoch, seq, kind, wall, body FROM events WHERE meter=? AND seq IS NOT NULL AND"
                " ((kind='freeze' AND reason='daily') OR (kind='topup' AND reason='accepted') OR kind IN (%s))"
                " ORDER BY epoch, seq" % ",".join("?" * len(OTHER_KINDS)), (meter,) + OTHER_KINDS).fetchall()

    def settle(self, meter):
        """Compute and store every day ``meter``'s freezes settle; notify new mismatches. The new rows."""
        prev = None
        credits = cut_s = covers = flags = 0
        cut_at = None  # wall of the trip while the supply is cut
        rows = []
        for epoch, rec, kind, wall, body in self._records(meter):
            data = json.loads(body).get("data")
            wall = wall if _int(wall) else 0
            if kind == "topup":
                if isinstance(data, dict) and _int(data.get("amount")):
                    credits += data["amount"]
            elif kind == "trip":
                cut_at = wall if cut_at is None else cut_at
            elif kind == "close":
                cut_s += max(0, wall - cut_at) if cut_at is not None else 0
                cut_at = None
            elif kind == "cover_open":
                covers += 1
            elif kind == "plausibility":
                flags += 1
            f = _freeze(data) if kind == "freeze" else None
            if f is None:
                continue
            if cut_at is not None:  # cut over midnight: the rest of the day counts
                cut_s += max(0, wall - cut_at)
                cut_at = wall
            if prev is not None and prev[0] == epoch:
                p = prev[1]
                charge = f["chg"] - p["chg"]
                rows.append((meter, f["day"] - 1, f["days"], epoch, rec, f["energy_wh"] - p["energy_wh"],
                             json.dumps([a - b for a, b in zip(f["rates"], p["rates"])]), charge, credits,
                             p["balance"], f["balance"], f["chg"], f["balance"] - (p["balance"] + credits - charge),
                             cut_s, covers, flags))
            prev = (epoch, f)
            credits = cut_s = covers = flags = 0
        new = []
        with self.ledger.lock:
            for row in rows:
                # A day recomputed from records that came late replaces its row.
                cur = self.ledger.db.execute(
                    "INSERT INTO settlements VALUES (%s) ON CONFLICT (meter, day) DO UPDATE SET %s WHERE (%s) IS NOT (%s)"
                    % (",".join("?" * (len(COLUMNS) + 1)), ", ".join("%s=excluded.%s" % (c, c) for c in COLUMNS),
                       ", ".join(COLUMNS), ", ".join("excluded." + c for c in COLUMNS)), row)
                if cur.rowcount:
                    new.append(dict(zip(COLUMNS, row[1:])))
        for r in new:
            if r["mismatch"] and self.outbox is not None:
                dedup = "settlement/%s/%d" % (meter, r["day"])
                # The body of the meters' notifications (headend.notify.classify).
                self.outbox.add(dedup, meter, "settlement_mismatch",
                                {"id": dedup, "kind": "settlement_mismatch", "meter_id": meter, "event": "settlement",
                                 "reason": "balance_not_explained", "wall": None, "data": problem(meter, r)})
        return new

    def _select(self, what, args, first, last, order):
        # SELECT ``what`` (ending in a WHERE clause) of days ``first``..``last`` (None: open).
        sql = "SELECT " + what
        if first is not None:
            sql, args = sql + " AND day>=?", args + [first]
        if last is not None:
            sql, args = sql + " AND day<=?", args + [last]
        with self.ledger.lock:
            return self.ledger.db.execute(sql + " ORDER BY " + order, args).fetchall()

    def days(self, meter, first=None, last=None):
        """Stored days of ``meter`` (local day numbers ``first``..``last``, inclusive), oldest first."""
        rows = self._select("%s FROM settlements WHERE meter=?" % ", ".join(COLUMNS), [meter], first, last, "day")
        return [dict(zip(COLUMNS, r), rates=json.loads(r[5])) for r in rows]

    def analytics_rows(self, first=None, last=None):
        """Every meter's settled days as ``headend.analytics`` rows: {meter: [row in FIELDS order]}.

        The service reads no separate register, so ``register_wh`` is the
        freeze's own energy (the deviation rules stay quiet); energy used
        while cut and power-down time are not known here (0).
        """
        rows = self._select("meter, day, energy_wh, cut_s, covers, flags, closing FROM settlements WHERE 1=1", [],
                            first, last, "meter, day")
        out = {}
        for meter, day, wh, cut_s, covers, flags, closing in rows:
            out.setdefault(meter, []).append([day, wh, wh, cut_s, 0, covers, flags, 0, closing])
        return out

    def bills(self, meter, first=None, last=None):
        """``meter``'s bill: days, monthly statements and problems (mismatches), as JSON-ready dicts."""
        self.settle(meter)  # freezes received before the settlement table existed, or out of order
        days = self.days(meter, first, last)
        months = {}
        for d in days:
            m = months.get(date_of(d["day"])[:7])
            if m is None:
                m = months[date_of(d["day"])[:7]] = {"month": date_of(d["day"])[:7], "days": 0, "energy_wh": 0,
                                                     "rates_wh": [0, 0, 0, 0], "charge": 0, "credits": 0,
                                                     "opening": d["opening"], "mismatch": 0}
            m["days"] += d["days"]
            m["energy_wh"] += d["energy_wh"]
            m["rates_wh"] = [a + b for a, b in zip(m["rates_wh"], d["rates"])]
            m["charge"] += d["charge"]
            m["credits"] += d["credits"]
            m["mismatch"] += d["mismatch"]
            m["closing"] = d["closing"]
        return {"meter_id": meter, "days": [day_view(d) for d in days],
                "months": [_money_view(months[k], ("charge", "credits", "opening", "closing", "mismatch"))
                           for k in sorted(months)],
                "problems": [problem(meter, d) for d in days if d["mismatch"]]}


def _money_view(d, keys):
    out = dict(d)
    for k in keys:
        out[k + "_minor"] = d[k]
        out[k] = format_amount(d[k])
    return out


def day_view(d):
    """The JSON of one settled day."""
    out = {"date": date_of(d["day"]), "days": d["days"], "energy_wh": d["energy_wh"], "rates_wh": d["rates"],
           "meter_charged_total_minor": d["chg"], "checked": d["mismatch"] == 0}
    return _money_view(dict(out, charge=d["charge"], credits=d["credits"], opening=d["opening"],
                            closing=d["closing"], mismatch=d["mismatch"]),
                       ("charge", "credits", "opening", "closing", "mismatch"))


def problem(meter, d):
    """The problem (``headend.shadow.Problem`` form) of a day whose balance the figures do not explain."""
    return {"code": "settlement_mismatch", "meter_id": meter, "date": date_of(d["day"]),
            "mismatch_minor": d["mismatch"],
            "message": "meter %s on %s: closing balance %s, but opening %s + credits %s - charge %s = %s"
                       " (%s CNY unexplained)"
                       % (meter, date_of(d["day"]), format_amount(d["closing"]), format_amount(d["opening"]),
                          format_amount(d["credits"]), format_amount(d["charge"]),
                          format_amount(d["opening"] + d["credits"] - d["charge"]), format_amount(d["mismatch"]))}


def csv_text(meter, days):
    """Settled ``days`` (from ``Settlement.days``) as CSV with a header (money in minor units)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for d in days:
        w.writerow([meter, date_of(d["day"]), d["days"], d["energy_wh"]] + d["rates"]
                   + [d["charge"], d["credits"], d["opening"], d["closing"], d["chg"], d["mismatch"]])
    return out.getvalue()
