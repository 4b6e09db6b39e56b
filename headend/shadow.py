"""The head-end's shadow of the fleet, in SQLite, and its reconciliation.

Three sources, never mixed up:

- credit **issued**: the token ledger (``headend.ledger.Ledger``), the one
  place sequences come from (``pmeter vend``, ``pmeter push``, commands,
  restore); the shadow keeps no ledger or sequence table of its own;
- credit **applied**: the meters' ``topup`` events, stored once per
  (meter, outbox epoch, outbox ``q``) and counted once per token
  reference, i.e. per (meter, token sequence).  The epoch comes from the
  meter's birth message: a meter that lost its store restarts ``q`` at 1
  under a new epoch;
- the **balance**: the meters' retained state snapshots.

Tables: ``shadow`` (latest status, birth, state, the reconciliation
baseline and the lost-store flag per meter), ``events`` (every event and
ack, de-duplicated by (meter, q)), ``states`` (recent state snapshots:
what a restore after a lost store is computed from).

``reconcile`` names the discrepancies; ``restore_plan`` computes the
balance to give back to a meter that lost its store.
"""

import json
import sqlite3
import threading

from agent import results

from .ledger import Ledger, parse_ref, set_up_schema

APPLY_TIMEOUT_S = 3600  # a top-up not applied an hour after issue is reported
STATES_KEPT = 200  # state snapshots kept per meter

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    meter TEXT NOT NULL, epoch INTEGER NOT NULL, q INTEGER NOT NULL, seq INTEGER, kind TEXT, reason TEXT,
    wall INTEGER, body TEXT, PRIMARY KEY (meter, epoch, q));
CREATE TABLE IF NOT EXISTS shadow (
    meter TEXT PRIMARY KEY, status TEXT, seen INTEGER, state TEXT, state_t INTEGER, birth TEXT,
    tele TEXT, baseline TEXT, lost_since INTEGER, epoch INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS states (
    meter TEXT NOT NULL, t INTEGER NOT NULL, bal INTEGER, body TEXT NOT NULL, UNIQUE (meter, t, body));
"""

# Columns added after the first release: when the status and the telemetry
# were last received (``pmeter status`` shows the age of every value).
ADDED_COLUMNS = (("shadow", "status_t", "INTEGER"), ("shadow", "tele_t", "INTEGER"))

# The outbox epoch of events received before any birth of their meter (a
# head-end that subscribed while the meter was connected): real epochs are
# >= 0, and such an event is adopted by its epoch when it is sent again.
UNKNOWN_EPOCH = -1

# Acks that mean the token will never be applied: not a discrepancy.
FINAL_REFUSALS = (
    results.WRONG_METER,
    results.BAD_MAC,
    results.EXPIRED,
    results.MALFORMED,
    results.WRONG_KEY_REVISION,
    results.UNKNOWN_COMMAND,
    results.BAD_ARGUMENT,
    results.TOO_OLD,
)


def _json(value):
    # bytes (e.g. tokens) are not JSON: show them as hex.
    def default(o):
        if isinstance(o, (bytes, bytearray)):
            return o.hex()
        raise TypeError(repr(o))

    return json.dumps(value, sort_keys=True, default=default)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _cny(minor):
    from . import format_amount

    return "%s CNY" % format_amount(minor)


class Problem(dict):
    """One discrepancy: ``code`` (stable, for scripts) and ``message`` (for people)."""

    def __init__(self, code, message, **extra):
        dict.__init__(self, code=code, message=message, **extra)


class Shadow:
    """SQLite-backed fleet shadow (thread-safe: one lock around the connection).

    ``ledger`` is the token ledger to read issued credit from and to record
    acknowledged results in; by default the ledger tables live in the same
    SQLite file as the shadow (``path``).
    """

    def __init__(self, path=":memory:", ledger=None):
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            set_up_schema(self.db, SCHEMA, ADDED_COLUMNS)
            self.ledger = Ledger(str(path)) if ledger is None else ledger
        except BaseException:
            self.db.close()  # a damaged or foreign file: leave it as it was
            raise
        self.lock = threading.Lock()
        self.own_ledger = ledger is None

    def close(self):
        """Close the shadow (and the ledger if the shadow opened it)."""
        self.db.close()
        if self.own_ledger:
            self.ledger.close()

    # ------------------------------------------------------------ what meters send

    def record(self, meter, leaf, fields, now):
        """Store one opened message from ``meter`` (see headend.link.Fleet.open)."""
        body = fields.get("b")
        t = fields.get("t") if _int(fields.get("t")) else now
        ack = None
        floor = None
        with self.lock:
            db = self.db
            db.execute("INSERT OR IGNORE INTO shadow (meter) VALUES (?)", (meter,))
            db.execute("UPDATE shadow SET seen=? WHERE meter=?", (now, meter))
            if leaf == "status":
                db.execute("UPDATE shadow SET status=?, status_t=? WHERE meter=?", (body, now, meter))
            elif leaf == "birth":
                # Birth precedes the outbox replay on every connection (and
                # MQTT keeps one client's order): later entries are of this
                # epoch.  Until the first birth the epoch is unknown.
                if isinstance(body, dict) and _int(body.get("epoch")) and body["epoch"] >= 0:
                    db.execute("UPDATE shadow SET birth=?, epoch=? WHERE meter=?", (_json(body), body["epoch"], meter))
                if isinstance(body, dict) and _int(body.get("n")) and body["n"] > 0:
                    floor = body["n"]
            elif leaf == "state" and isinstance(body, dict):
                text = _json(body)
                db.execute("UPDATE shadow SET state=?, state_t=? WHERE meter=?", (text, t, meter))
                bal = body.get("bal") if _int(body.get("bal")) else None
                db.execute("INSERT OR IGNORE INTO states (meter, t, bal, body) VALUES (?,?,?,?)", (meter, t, bal, text))
                db.execute(
                    "DELETE FROM states WHERE meter=? AND rowid NOT IN"
                    " (SELECT rowid FROM states WHERE meter=? ORDER BY t DESC, rowid DESC LIMIT ?)",
                    (meter, meter, STATES_KEPT),
                )
                # The first balance seen (and the first after a restore or a
                # lost store) is the baseline of the balance check, once the
                # epoch its event numbers belong to is known (a retained state
                # arrives before any birth).
                epoch = self._epoch(meter)
                if epoch != UNKNOWN_EPOCH:
                    base = {"t": t, "bal": bal, "chg": body.get("chg"), "evt": body.get("evt"), "epoch": epoch}
                    db.execute("UPDATE shadow SET baseline=? WHERE meter=? AND baseline IS NULL", (_json(base), meter))
            elif leaf == "tele" and isinstance(body, dict):
                db.execute("UPDATE shadow SET tele=?, tele_t=? WHERE meter=?", (_json(body), t, meter))
            elif leaf in ("evt", "ack") and isinstance(body, dict) and _int(fields.get("q")):
                kind = body.get("kind") if leaf == "evt" else "ack"
                reason = body.get("reason") if leaf == "evt" else body.get("code")
                wall = body.get("wall") if _int(body.get("wall")) else t
                if self._insert_event(meter, fields["q"], body, kind, reason, wall):  # not a re-send
                    if kind == "state_lost":
                        self._state_lost(meter, reason, body.get("data"), wall)
                    elif leaf == "ack":
                        ack = body
        if ack is not None:
            self._ack(meter, ack, now)
        if floor is not None:
            self.ledger.raise_floor(meter, floor)

    def _epoch(self, meter):
        # Called with the lock held: the meter's current outbox epoch, or
        # UNKNOWN_EPOCH before its first birth.
        birth, epoch = self.db.execute("SELECT birth, epoch FROM shadow WHERE meter=?", (meter,)).fetchone()
        return UNKNOWN_EPOCH if birth is None else epoch

    def _insert_event(self, meter, q, body, kind, reason, wall):
        # Called with the lock held.  True when the entry is new, False for a
        # re-send: same (meter, epoch, q), or the same entry first received
        # before the meter's birth (then filed under its epoch now).
        db = self.db
        epoch = self._epoch(meter)
        text = _json(body)
        if epoch != UNKNOWN_EPOCH:
            cur = db.execute("UPDATE OR IGNORE events SET epoch=? WHERE meter=? AND epoch=? AND q=? AND body=?",
                             (epoch, meter, UNKNOWN_EPOCH, q, text))
            if cur.rowcount == 1:
                return False
        cur = db.execute(
            "INSERT OR IGNORE INTO events (meter, epoch, q, seq, kind, reason, wall, body) VALUES (?,?,?,?,?,?,?,?)",
            (meter, epoch, q, body.get("seq") if _int(body.get("seq")) else None,
             kind if isinstance(kind, str) else None, reason if isinstance(reason, str) else None, wall, text),
        )
        return cur.rowcount == 1

    def _state_lost(self, meter, reason, data, wall):
        # Called with the lock held.
        if reason == "cleared":
            self.db.execute("UPDATE shadow SET lost_since=NULL, baseline=NULL WHERE meter=?", (meter,))
            return
        since = data.get("since") if isinstance(data, dict) and _int(data.get("since")) else wall
        self.db.execute("UPDATE shadow SET lost_since=?, baseline=NULL WHERE meter=?", (since, meter))

    def _ack(self, meter, body, now):
        where = parse_ref(body.get("r"))
        code = body.get("code")
        if where is None or not isinstance(code, str):
            return
        channel, seq = where
        self.ledger.record_result(meter, channel, seq, code, now)
        if code == results.ACCEPTED:
            tok = self.ledger.token(meter, channel, seq)
            if tok is not None and tok["command"] in ("set_credit", "clear_credit"):
                # The balance was set by the head-end: a new baseline from the next state.
                with self.lock:
                    self.db.execute("UPDATE shadow SET baseline=NULL WHERE meter=?", (meter,))

    # ------------------------------------------------------------ reading

    def meters(self, meter=None):
        """Shadow rows: list of dicts (one meter when ``meter`` is given).

        ``seen`` is when anything last came from the meter, ``state_t`` when
        the meter sealed its latest state, ``status_t``/``tele_t`` when the
        status/telemetry last came (Unix seconds, None if never).
        """
        sql = "SELECT meter, status, seen, state, birth, lost_since, tele, state_t, status_t, tele_t FROM shadow"
        args = ()
        if meter is not None:
            sql += " WHERE meter=?"
            args = (meter,)
        with self.lock:
            rows = self.db.execute(sql + " ORDER BY meter", args).fetchall()
        return [{"meter": r[0], "status": r[1], "seen": r[2], "state": json.loads(r[3]) if r[3] else None,
                 "birth": json.loads(r[4]) if r[4] else None, "lost_since": r[5],
                 "tele": json.loads(r[6]) if r[6] else None, "state_t": r[7], "status_t": r[8],
                 "tele_t": r[9]} for r in rows]

    def events(self, meter, limit=100):
        """The newest ``limit`` events and acks of ``meter``, newest first, as dicts."""
        with self.lock:
            rows = self.db.execute("SELECT epoch, q, seq, kind, reason, wall, body FROM events WHERE meter=?"
                                   " ORDER BY rowid DESC LIMIT ?", (meter, limit)).fetchall()
        return [{"epoch": r[0], "q": r[1], "seq": r[2], "kind": r[3], "reason": r[4], "wall": r[5],
                 "data": json.loads(r[6]).get("data")} for r in rows]

    def applied(self, meter):
        """Credits applied by ``meter``: {ref: {"amount", "wall", "records"}} from its
        accepted ``topup`` events, one entry per token reference; ``records``
        lists the (epoch, record seq) of each event that applied it."""
        with self.lock:
            rows = self.db.execute(
                "SELECT epoch, seq, wall, body FROM events WHERE meter=? AND kind='topup' AND reason=?"
                " ORDER BY rowid", (meter, results.ACCEPTED),
            ).fetchall()
        out = {}
        for epoch, rseq, wall, body in rows:
            rseq = (epoch, rseq)
            data = json.loads(body).get("data") or {}
            ref = data.get("ref")
            entry = out.get(ref)
            if entry is None:
                out[ref] = {"amount": data.get("amount"), "wall": wall, "records": [rseq]}
            elif rseq not in entry["records"]:
                entry["records"].append(rseq)  # a second record: applied twice
        return out

    def reconcile(self, meter, now=None, timeout_s=APPLY_TIMEOUT_S):
        """Credit issued (ledger) vs applied (events) vs balance (state) for ``meter``.

        Returns a dict with ``issued``, ``applied``, ``pending`` (issued
        top-ups not applied yet), ``balance``, ``lost_since`` and
        ``problems``: a list of ``Problem`` (``code`` + ``message``):
        ``never_issued``, ``amount_mismatch``, ``applied_twice``,
        ``not_applied`` (past ``timeout_s`` since issue; needs ``now``),
        ``refused`` (answered with a refusal and not re-vended),
        ``sequence_reused`` (answered ``already_used`` but never applied),
        ``ledger_behind`` (the meter's births report sequences above the
        ledger's), ``balance_mismatch`` and ``state_lost``.
        """
        tokens = [t for t in self.ledger.tokens(meter) if t["kind"] in ("topup", "add")]
        issued = {t["ref"]: t for t in tokens}
        revended = {t["revend_of"]: t["ref"] for t in tokens if t["revend_of"] is not None}
        applied = self.applied(meter)
        with self.lock:
            row = self.db.execute("SELECT state, state_t, baseline, lost_since FROM shadow WHERE meter=?",
                                  (meter,)).fetchone()
        problems = []
        for ref in sorted(applied, key=str):
            a = applied[ref]
            tok = issued.get(ref)
            if len(a["records"]) > 1:
                problems.append(Problem("applied_twice", "credit %s applied %d times (event records %s)"
                                        % (ref, len(a["records"]), a["records"]), ref=ref))
            if tok is None:
                problems.append(Problem("never_issued", "credit %s of %s applied but never issued by this head-end"
                                        % (ref, a["amount"]), ref=ref))
            elif tok["amount"] != a["amount"]:
                problems.append(Problem("amount_mismatch", "credit %s applied as %s but issued as %s"
                                        % (ref, a["amount"], tok["amount"]), ref=ref))
        pending = []
        for ref, tok in sorted(issued.items()):
            if ref in applied or ref in revended or tok["result"] in FINAL_REFUSALS:
                continue
            if tok["result"] == results.ALREADY_USED:
                # The meter had used this sequence for another token before
                # this one was issued: the ledger was lost or replaced.  Paid
                # credit that will never apply: an alarm, never silence.
                problems.append(Problem(
                    "sequence_reused", "credit %s of %s was answered already_used but never applied: the meter "
                    "had used this sequence before (lost or replaced ledger?); re-vend it (pmeter push --meter %s "
                    "--revend %s)" % (ref, _cny(tok["amount"]), meter, ref), ref=ref))
                continue
            if tok["result"] is not None:
                problems.append(Problem(
                    "refused", "credit %s of %s refused by the meter (%s) and not re-vended: pmeter push --meter %s "
                    "--revend %s when it can be applied" % (ref, _cny(tok["amount"]), tok["result"], meter, ref),
                    ref=ref))
                continue
            pending.append(ref)
            if now is not None and now - tok["issued"] > timeout_s:
                problems.append(Problem(
                    "not_applied", "credit %s of %d issued at %d not applied after %d s (last answer: %s)"
                    % (ref, tok["amount"], tok["issued"], now - tok["issued"], tok["result"] or "none"), ref=ref))
        used, top = self.ledger.floor(meter)
        if used > top:
            problems.append(Problem(
                "ledger_behind", "the meter has used command sequences up to %d, this ledger issued only up to %d: "
                "it was lost, replaced or restored from an old backup; new tokens start above %d" % (used, top, used),
                used=used, issued=top))
        balance = None
        lost_since = None
        if row is not None:
            state = json.loads(row[0]) if row[0] else {}
            balance = state.get("bal")
            lost_since = row[3]
            if lost_since is not None:
                problems.append(Problem("state_lost", "meter lost its stored state at %d and runs on a default "
                                        "balance: restore it (pmeter restore --meter %s)" % (lost_since, meter)))
            base = json.loads(row[2]) if row[2] else None
            if base is not None and _int(balance) and _int(base.get("bal")):
                problems.extend(self._balance_check(applied, base, state, row[1] or 0))
        # A re-vend pays out a refused credit again: the money was issued once.
        return {"meter": meter, "issued": sum(t["amount"] for t in issued.values() if t["revend_of"] is None),
                "applied": sum(a["amount"] for a in applied.values() if _int(a["amount"])),
                "pending": pending, "balance": balance, "lost_since": lost_since, "problems": problems}

    @staticmethod
    def _balance_check(applied, base, state, state_t):
        # Credits the current balance holds beyond the baseline's: exactly
        # those whose event record falls between the two states' ``evt``
        # (the last record each includes); without it, by the meter's wall
        # clock, counting same-second credits in (only loosens the check).
        epoch = base.get("epoch")
        exact = _int(base.get("evt")) and _int(state.get("evt")) and state["evt"] >= base["evt"]
        credits = 0
        for a in applied.values():
            if not _int(a["amount"]):
                continue
            if exact:  # every record counts: a credit applied twice is in the balance twice
                for rec_epoch, rseq in a["records"]:
                    if rec_epoch == epoch and _int(rseq) and base["evt"] < rseq <= state["evt"]:
                        credits += a["amount"]
            elif base["t"] <= a["wall"] <= state_t:
                credits += a["amount"]
        if not exact and _int(state.get("chg")):
            state = dict(state, chg=None)  # no exact credit figure: only the upper bound below holds
        bal = state["bal"]
        chg, bchg = state.get("chg"), base.get("chg")
        if _int(chg) and _int(bchg):
            want = base["bal"] + credits - (chg - bchg)
            if bal != want:
                return [Problem("balance_mismatch", "balance %d, but the baseline %d plus credits applied %d minus "
                                "charges %d is %d" % (bal, base["bal"], credits, chg - bchg, want),
                                balance=bal, expected=want)]
            return []
        # Without the meter's charge counter, charges are only known to be >= 0.
        if bal > base["bal"] + credits:
            return [Problem("balance_mismatch", "balance %d is above the baseline %d plus credits applied %d: "
                            "credit from nowhere" % (bal, base["bal"], credits), balance=bal,
                            expected=base["bal"] + credits)]
        return []

    # ------------------------------------------------------------ restore

    def restore_plan(self, meter):
        """The balance to give back to ``meter`` after it lost its store.

        ``good`` is the last state snapshot sealed before the loss;
        ``restored = good + credits applied after it and before the loss +
        (current balance - first balance after the loss)``: the last term
        carries over what the meter charged and was credited since it
        restarted from a default balance.  Charges between ``good`` and the
        loss are unknown (the meter publishes state on every commit, so the
        gap is short) and are reported in ``unknown_since``.

        Raises ValueError (for people) when the meter is not known to have
        lost its state or no state before the loss is in the shadow.
        """
        with self.lock:
            row = self.db.execute("SELECT lost_since FROM shadow WHERE meter=?", (meter,)).fetchone()
            if row is None:
                raise ValueError("meter %s is not in the shadow" % meter)
            since = row[0]
            if since is None:
                raise ValueError("meter %s has not reported a lost store (no unresolved state_lost event)" % meter)
            good = self.db.execute("SELECT t, bal FROM states WHERE meter=? AND t<? AND bal IS NOT NULL"
                                   " ORDER BY t DESC, rowid DESC LIMIT 1", (meter, since)).fetchone()
            after = self.db.execute("SELECT t, bal FROM states WHERE meter=? AND t>=? AND bal IS NOT NULL"
                                    " ORDER BY t, rowid", (meter, since)).fetchall()
        if good is None:
            raise ValueError("meter %s: no state snapshot from before the loss at %d in the shadow: "
                             "set the balance by hand (pmeter batch --command set_credit)" % (meter, since))
        lost_window = sum(a["amount"] for a in self.applied(meter).values()
                          if _int(a["amount"]) and good[0] < a["wall"] < since)
        delta = after[-1][1] - after[0][1] if after else 0
        return {"meter": meter, "lost_since": since, "good_t": good[0], "good_balance": good[1],
                "credits_after_good": lost_window, "since_loss": delta,
                "amount": good[1] + lost_window + delta, "unknown_since": good[0]}
