"""SQLite ledger of issued tokens: the audit trail and the sequence source.

Every MQTT token takes the meter's next sequence and every keypad token its
next OpenPAYGO count inside one write transaction that also records the
token, so a sequence is never issued twice, even across restarts or with
two vending processes (UNIQUE constraints back this up).  Meters report
results (``record_result``); ``reconcile`` compares credit issued with
credit the meters say they applied (ghost vending shows up here).

It is the head-end's only source of sequences: ``pmeter vend``, ``pmeter
batch`` and the MQTT head-end (``headend.link.HeadEnd``: push, commands,
restore) all issue through it, and the shadow (``headend.shadow``) reads
credit issued from it.  A token's reference, echoed by the meter in its
acks and events, is ``ref(channel, seq)`` (``"mqtt:7"``, ``"keypad:12"``),
the same text the meter's TokenGuard gives the token.
"""

import json
import sqlite3
import threading

SCHEMA = """
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL DEFAULT 1,
    keypad_count INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('mqtt', 'keypad')),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL DEFAULT 0,
    command TEXT,
    args TEXT,
    revision INTEGER NOT NULL,
    issued INTEGER NOT NULL,
    expires INTEGER,
    token TEXT NOT NULL,
    operator TEXT,
    result TEXT,
    result_at INTEGER,
    UNIQUE (meter_id, channel, seq)
);
"""

# Columns added after the first release: (table, column, declaration).
# ``floor``: the highest command sequence a meter reported using (its
# birth); ``revend_of``: the reference of the refused top-up a token pays
# out again (each at most once).
ADDED_COLUMNS = (
    ("meters", "floor", "INTEGER NOT NULL DEFAULT 0"),
    ("tokens", "revend_of", "TEXT"),
)

# Answers after which the credit of a top-up was not applied and may be
# re-vended: refusals the meter gave for this very token.  ``already_used``
# is one too: the meter had used the sequence for another token (a lost or
# replaced ledger), so this one will never apply.
REVENDABLE = ("over_hoarding_limit", "refused", "locked_out", "expired", "already_used", "too_old",
              "wrong_key_revision")


def ref(channel, seq):
    """The reference of token ``seq`` on ``channel`` ("mqtt:7")."""
    return "%s:%d" % (channel, seq)


def parse_ref(text):
    """``(channel, seq)`` of a reference made by ``ref``, or None."""
    if not isinstance(text, str):
        return None
    channel, colon, num = text.partition(":")
    if not colon or channel not in ("mqtt", "keypad") or not num.isdigit() or not num.isascii():
        return None
    return channel, int(num)


def set_up_schema(db, schema, added_columns=(), after=()):
    """Create ``schema``'s tables, add the ``added_columns`` a file lacks, then
    run ``after``: one transaction under the write lock, so two processes
    opening a new or older file at once never both add a column."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.split(";"):
            if statement.strip():
                db.execute(statement)
        for table, column, decl in added_columns:
            if column not in [r[1] for r in db.execute("PRAGMA table_info(%s)" % table)]:
                db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, decl))
        for statement in after:
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class Ledger:
    """The ledger file (``path``; ":memory:" for tests).

    Safe to share between threads (the head-end's network worker records
    results while the caller vends): one lock around the connection.
    Several processes may open the same file: SQLite's write lock
    serialises them.
    """

    def __init__(self, path):
        self.path = str(path)
        path = self.path
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        except BaseException:
            self.db.close()
            raise
        try:
            self.db.execute("PRAGMA synchronous=FULL")
            set_up_schema(self.db, SCHEMA, ADDED_COLUMNS,
                          ("CREATE UNIQUE INDEX IF NOT EXISTS tokens_revend ON tokens (meter_id, revend_of)",))
        except BaseException:
            self.db.close()  # a damaged or foreign file: leave it as it was
            raise

    def close(self):
        """Close the file."""
        with self.lock:
            self.db.close()

    def revision(self, meter_id):
        """The meter's current key revision (0 until a key change is issued)."""
        with self.lock:
            row = self.db.execute("SELECT revision FROM meters WHERE meter_id=?", (meter_id,)).fetchone()
        return row[0] if row else 0

    def issue(self, meter_id, channel, make, **fields):
        """Allocate the next sequence/count and record the token ``make`` builds.

        ``make(seq_or_count, revision, amount)`` returns ``(token_text, used)``
        where ``used`` is the sequence/count the token really took (keypad
        tokens may skip a count for parity).  One IMMEDIATE transaction: no
        other writer can take the same number.  Returns (used, token_text).
        With ``revend_of`` (a reference), the token pays out again that
        refused top-up: its amount is taken from it, checked in the same
        transaction (ValueError unless refused and not re-vended yet).
        """
        with self.lock:
            return self._issue(meter_id, channel, make, fields)

    def _issue(self, meter_id, channel, make, fields):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO meters (meter_id) VALUES (?)", (meter_id,))
            nxt, count, rev = db.execute(
                "SELECT next_seq, keypad_count, revision FROM meters WHERE meter_id=?", (meter_id,)
            ).fetchone()
            revend_of = fields.get("revend_of")
            if revend_of is not None:
                fields = dict(fields, amount=self._revendable(meter_id, revend_of))
            token, used = make(nxt if channel == "mqtt" else count, rev, fields.get("amount", 0))
            args = fields.get("args")
            db.execute(
                "INSERT INTO tokens (meter_id, channel, seq, kind, amount, command, args, revision,"
                " issued, expires, token, operator, revend_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    meter_id,
                    channel,
                    used,
                    fields["kind"],
                    fields.get("amount", 0),
                    fields.get("command"),
                    json.dumps(args, sort_keys=True, default=_jsonable) if args is not None else None,
                    rev,
                    fields["issued"],
                    fields.get("expires"),
                    token,
                    fields.get("operator"),
                    revend_of,
                ),
            )
            if channel == "mqtt":
                db.execute("UPDATE meters SET next_seq=? WHERE meter_id=?", (used + 1, meter_id))
            else:
                db.execute("UPDATE meters SET keypad_count=? WHERE meter_id=?", (used, meter_id))
            new_rev = fields.get("new_revision")
            if new_rev is not None:
                db.execute("UPDATE meters SET revision=? WHERE meter_id=?", (new_rev, meter_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return used, token

    def _revendable(self, meter_id, ref_text):
        # Inside the issuing transaction: the amount of the top-up ``ref_text``
        # if it may be paid out again; ValueError (for people) otherwise.
        where = parse_ref(ref_text)
        row = None
        if where is not None:
            row = self.db.execute(
                "SELECT kind, amount, result FROM tokens WHERE meter_id=? AND channel=? AND seq=?",
                (meter_id, where[0], where[1]),
            ).fetchone()
        if row is None:
            raise ValueError("%s: no token of meter %s with this reference in the ledger" % (ref_text, meter_id))
        kind, amount, result = row
        if kind not in ("topup", "add") or amount <= 0:
            raise ValueError("%s is not a top-up: only refused top-ups are re-vended" % ref_text)
        if result not in REVENDABLE:
            raise ValueError("%s: the meter's answer is %s; only a top-up the meter refused (%s) is re-vended"
                             % (ref_text, result or "not in yet", ", ".join(REVENDABLE)))
        again = self.db.execute("SELECT channel, seq FROM tokens WHERE meter_id=? AND revend_of=?",
                                (meter_id, ref_text)).fetchone()
        if again is not None:
            raise ValueError("%s was already re-vended as %s" % (ref_text, ref(*again)))
        return amount

    def record_result(self, meter_id, channel, seq, result, wall):
        """Store the result code a meter acknowledged for a token.

        The first answer sticks against "already_used", which only answers a
        re-send (a QoS 1 redelivery or a retry): it never hides that the token
        was applied, nor the meter's refusal of it.  Another answer replaces
        an earlier refusal (a re-send after the meter's state changed).
        """
        with self.lock:
            if result == "already_used":
                cond = " AND result IS NULL"
            else:
                cond = " AND (result IS NULL OR result != 'accepted')"
            cur = self.db.execute(
                "UPDATE tokens SET result=?, result_at=? WHERE meter_id=? AND channel=? AND seq=?" + cond,
                (result, wall, meter_id, channel, seq),
            )
            return cur.rowcount == 1

    def raise_floor(self, meter_id, used):
        """The meter reported command sequences up to ``used``: never issue at or below it.

        Returns the ledger's previous highest issued sequence when it was
        below ``used`` (this ledger is behind the meter: lost, replaced or
        restored from an old backup), else None.
        """
        with self.lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO meters (meter_id) VALUES (?)", (meter_id,))
                nxt, floor = db.execute("SELECT next_seq, floor FROM meters WHERE meter_id=?", (meter_id,)).fetchone()
                db.execute("UPDATE meters SET floor=?, next_seq=? WHERE meter_id=?",
                           (max(floor, used), max(nxt, used + 1), meter_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return nxt - 1 if used >= nxt else None

    def floor(self, meter_id):
        """``(highest sequence the meter reported using, highest this ledger issued)``."""
        with self.lock:
            row = self.db.execute("SELECT floor FROM meters WHERE meter_id=?", (meter_id,)).fetchone()
            top = self.db.execute("SELECT MAX(seq) FROM tokens WHERE meter_id=? AND channel='mqtt'",
                                  (meter_id,)).fetchone()
        return (row[0] if row else 0), (top[0] or 0)

    def tokens(self, meter_id=None):
        """Issued tokens as dicts, oldest first (``ref`` is the meter's reference)."""
        q = ("SELECT meter_id, channel, seq, kind, amount, command, args, revision, issued, expires, result,"
             " result_at, revend_of FROM tokens")
        params = ()
        if meter_id is not None:
            q += " WHERE meter_id=?"
            params = (meter_id,)
        cols = ("meter_id", "channel", "seq", "kind", "amount", "command", "args", "revision", "issued",
                "expires", "result", "result_at", "revend_of")
        with self.lock:
            rows = self.db.execute(q + " ORDER BY id", params).fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r))
            d["args"] = json.loads(d["args"]) if d["args"] else None
            d["ref"] = ref(d["channel"], d["seq"])
            out.append(d)
        return out

    def token(self, meter_id, channel, seq):
        """One issued token as a dict (see ``tokens``), or None."""
        for t in self.tokens(meter_id):
            if t["channel"] == channel and t["seq"] == seq:
                return t
        return None

    def reconcile(self):
        """Per meter: credit issued, credit acknowledged as applied, tokens unacknowledged."""
        with self.lock:
            rows = self.db.execute(
                "SELECT meter_id, SUM(amount), SUM(CASE WHEN result='accepted' THEN amount ELSE 0 END),"
                " SUM(CASE WHEN result IS NULL THEN 1 ELSE 0 END) FROM tokens WHERE kind='topup'"
                " GROUP BY meter_id ORDER BY meter_id"
            ).fetchall()
        return [{"meter_id": m, "issued": i, "applied": a, "pending": p} for m, i, a, p in rows]


def _jsonable(v):
    if isinstance(v, (bytes, bytearray)):
        return "hex:" + bytes(v).hex()
    raise TypeError("not JSON serialisable: %r" % (v,))
