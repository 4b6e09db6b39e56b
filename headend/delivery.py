"""The delivery queue: top-ups and commands waiting for their meter.

A table ``deliveries`` in the ledger's SQLite file.  Each row is one
issued token (its sequence taken from the ledger in the same transaction
that inserts the row: ``vend``'s ``within`` hook) and its delivery status:

- ``queued``: issued, not published yet (the meter was offline);
- ``sent``: published while the meter was online, no answer yet;
- ``applied``: the meter acknowledged ``accepted``;
- ``refused``: the meter answered another code (``code``);
- ``expired``: not applied before ``expires``.

The service (``Deliverer``) publishes queued rows while their meter is
online and re-sends every open row after each birth of its meter: the same
sealed token each time, which the meter's replay guard applies at most once.
An ``idempotency_key`` is UNIQUE: a second request with it vends nothing
(the insert fails inside the issuing transaction, which rolls back).
"""

import queue
import sqlite3
import threading
import time

from agent import results

from . import vend
from .ledger import ref as ledger_ref

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meter TEXT NOT NULL, seq INTEGER NOT NULL, ref TEXT NOT NULL,
    kind TEXT NOT NULL, amount INTEGER NOT NULL DEFAULT 0, command TEXT,
    token TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sent', 'applied', 'refused', 'expired')),
    code TEXT, balance INTEGER, sends INTEGER NOT NULL DEFAULT 0, sent_at INTEGER, done_at INTEGER,
    idempotency_key TEXT UNIQUE, source TEXT,
    UNIQUE (meter, seq));
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (status, meter);
"""

OPEN = ("queued", "sent")
FINAL = ("applied", "refused", "expired")
COLUMNS = ("id", "meter", "seq", "ref", "kind", "amount", "command", "created", "expires", "status", "code",
           "balance", "sends", "sent_at", "done_at", "idempotency_key", "source")


class Conflict(ValueError):
    """An idempotency key already used for a different request."""


class Queue:
    """The ``deliveries`` table, on the ledger's connection and lock (one file, one writer lock)."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.changed = threading.Condition()  # notified when a row of this process changes
        with ledger.lock:
            ledger.db.executescript(SCHEMA)

    def _rows(self, where, params):
        with self.ledger.lock:
            rows = self.ledger.db.execute("SELECT %s FROM deliveries WHERE %s ORDER BY id"
                                          % (", ".join(COLUMNS), where), params).fetchall()
        return [dict(zip(COLUMNS, r)) for r in rows]

    def get(self, item_id):
        """One row as a dict, or None."""
        rows = self._rows("id=?", (item_id,))
        return rows[0] if rows else None

    def by_key(self, key):
        """The row of idempotency key ``key``, or None."""
        rows = self._rows("idempotency_key=?", (key,))
        return rows[0] if rows else None

    def items(self, meter=None, status=None):
        """Rows (of ``meter``, with a status in ``status``), oldest first."""
        where, params = ["1=1"], []
        if meter is not None:
            where.append("meter=?")
            params.append(meter)
        if status is not None:
            where.append("status IN (%s)" % ",".join("?" * len(status)))
            params.extend(status)
        return self._rows(" AND ".join(where), params)

    def token(self, item_id):
        """The token bytes of row ``item_id``."""
        with self.ledger.lock:
            return bytes.fromhex(self.ledger.db.execute("SELECT token FROM deliveries WHERE id=?",
                                                        (item_id,)).fetchone()[0])

    def topup(self, master, meter, amount, ttl, key=None, source=None, wall=None):
        """Issue a top-up of ``amount`` minor units and queue it: ``(row, replayed)``.

        ``replayed`` is True when ``key`` was already used for the same meter
        and amount (nothing new is vended); Conflict if it was used for
        another request.
        """
        return self._issue(vend.topup, (amount,), "topup", meter, amount, None, master, ttl, key, source, wall)

    def command(self, master, meter, name, args, ttl, key=None, source=None, wall=None):
        """Issue command ``name`` and queue it: ``(row, replayed)`` as in ``topup``."""
        return self._issue(vend.command, (name, args), "command", meter, 0, name, master, ttl, key, source, wall)

    def _issue(self, make, margs, kind, meter, amount, name, master, ttl, key, source, wall):
        wall = int(time.time()) if wall is None else wall
        ids = []

        def within(seq, token):
            # Inside the ledger's issuing transaction: a duplicate key rolls the token back.
            cur = self.ledger.db.execute(
                "INSERT INTO deliveries (meter, seq, ref, kind, amount, command, token, created, expires,"
                " idempotency_key, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (meter, seq, ledger_ref("mqtt", seq), kind, amount, name, token.hex(), wall, wall + ttl, key, source))
            ids.append(cur.lastrowid)

        try:
            make(self.ledger, master, meter, *margs, wall, ttl=ttl, operator=source, within=within)
        except sqlite3.IntegrityError:
            row = self.by_key(key) if key is not None else None
            if row is None:
                raise
            if (row["meter"], row["kind"], row["amount"], row["command"]) != (meter, kind, amount, name):
                raise Conflict("idempotency key already used for another request (%s %s of meter %s)"
                               % (row["kind"], row["ref"], row["meter"]))
            return row, True
        return self.get(ids[0]), False

    def _update(self, item_id, sets, params, only_open=True):
        with self.ledger.lock:
            cur = self.ledger.db.execute(
                "UPDATE deliveries SET %s WHERE id=?%s" % (sets, " AND status IN ('queued','sent')" if only_open else ""),
                tuple(params) + (item_id,))
        if cur.rowcount:
            with self.changed:
                self.changed.notify_all()
        return cur.rowcount == 1

    def mark_sent(self, item_id, now):
        """Row ``item_id`` was published (once more)."""
        return self._update(item_id, "status='sent', sends=sends+1, sent_at=?", (now,))

    def settle(self, meter, ref, balance, now):
        """Set the status of ``meter``'s row ``ref`` from the ledger's recorded answer; the row or None.

        The ledger keeps the first answer against ``already_used`` (which
        only answers a re-send), so a re-send never hides an applied token.
        """
        rows = self._rows("meter=? AND ref=?", (meter, ref))
        if not rows:
            return None
        row = rows[0]
        tok = self.ledger.token(meter, "mqtt", row["seq"])
        result = tok and tok["result"]
        if result is None:
            return None
        status = "applied" if result == results.ACCEPTED else "refused"
        # Only open rows change, except that an accepted answer replaces a
        # refusal or an expiry (the meter did apply it).
        late = status == "applied" and row["status"] in ("refused", "expired")
        if self._update(row["id"], "status=?, code=?, balance=?, done_at=?",
                        (status, result, balance, now), only_open=not late):
            return self.get(row["id"])
        return None

    def expire(self, now):
        """Mark open rows past their expiry ``expired``; their ids."""
        ids = [r["id"] for r in self._rows("status IN ('queued','sent') AND expires<=?", (now,))]
        for i in ids:
            self._update(i, "status='expired', done_at=?", (now,))
        return ids

    def wait(self, item_id, timeout):
        """Row ``item_id`` once final, or as it is after ``timeout`` s.

        Woken at once by this process's changes; rows changed by another
        process (the service) are seen within a tenth of a second.
        """
        deadline = time.monotonic() + timeout
        while True:
            row = self.get(item_id)
            left = deadline - time.monotonic()
            if row is None or row["status"] in FINAL or left <= 0:
                return row
            with self.changed:
                self.changed.wait(min(left, 0.1))


class Deliverer:
    """The service's delivery worker: publishes queued rows to online meters, re-sends after births.

    ``head`` is the running ``headend.link.HeadEnd`` (its fleet seals each
    send, its shadow says which meters are online); call ``listen`` from
    its listeners.  One thread does every publish, in order.
    """

    def __init__(self, head, q, poll_s=0.5, log=None, shared=False):
        self.head = head
        self.queue = q
        self.poll_s = poll_s
        self.log = log or (lambda msg: None)
        self._kicks = queue.Queue()
        # meter -> True after its birth, False after a status message (a new
        # connection starts with its status, then its birth): the sweep waits
        # for the birth, which re-sends everything once.  Not on a shared
        # subscription (``shared``): a meter's status and birth may reach
        # different instances, so only the shadow's status counts.
        self._born = None if shared else {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deliverer", daemon=True)

    def start(self):
        """Start the worker thread."""
        self._thread.start()
        return self

    def stop(self):
        """Stop the worker thread (open rows stay queued in the file)."""
        self._stop.set()
        self._kicks.put(None)
        self._thread.join(10)

    def kick(self, meter, resend=False):
        """Deliver ``meter``'s rows now: queued ones, and with ``resend`` the sent ones too (after its birth)."""
        self._kicks.put((meter, resend))

    def listen(self, meter, leaf, fields, retained=False):
        """HeadEnd listener: a birth re-sends, an ack settles its row."""
        born = self._born
        if leaf == "status" and born is not None:
            if retained:
                born.pop(meter, None)  # a snapshot on (re)subscribing: the shadow's status decides
            else:
                born[meter] = False
        elif leaf == "birth":
            if born is not None:
                born[meter] = True
            self.kick(meter, resend=True)
        elif leaf == "ack" and isinstance(fields.get("b"), dict):
            body = fields["b"]
            bal = body.get("bal") if isinstance(body.get("bal"), int) and not isinstance(body.get("bal"), bool) else None
            if isinstance(body.get("r"), str):
                self.queue.settle(meter, body["r"], bal, int(time.time()))

    def online(self, meter):
        """True if ``meter`` was born since its last status message, or (nothing from it
        since the service started) its last status in the shadow is online."""
        born = self._born
        if born is not None and meter in born:
            return born[meter]
        rows = self.head.shadow.meters(meter)
        return bool(rows) and rows[0]["status"] == "online"

    def _run(self):
        while not self._stop.is_set():
            try:
                kick = self._kicks.get(timeout=self.poll_s)
            except queue.Empty:
                kick = False
            if kick is None:
                return
            try:
                if kick:
                    self._deliver(*kick)
                else:
                    self._sweep()
            except Exception as e:  # a broker or database hiccup: the next sweep retries
                self.log("delivery: %s: %s" % (type(e).__name__, e))

    def _sweep(self):
        now = int(time.time())
        for i in self.queue.expire(now):
            self.log("delivery %d expired" % i)
        for meter in sorted({r["meter"] for r in self.queue.items(status=("queued",))}):
            self._deliver(meter, False)

    def _deliver(self, meter, resend):
        if not self.head.client.is_connected() or not self.online(meter):
            return  # the next birth (after the head-end reconnects) or sweep delivers
        now = int(time.time())
        for row in self.queue.items(meter, ("queued", "sent") if resend else ("queued",)):
            if row["expires"] <= now:
                continue
            topic, payload = self.head.fleet.seal_token(meter, row["seq"], self.queue.token(row["id"]), row["ref"], now)
            self.head.publish(topic, payload)
            self.queue.mark_sent(row["id"], now)
            self.log("delivery %d: %s %s to meter %s (send %d)" % (row["id"], row["kind"], row["ref"], meter,
                                                                  row["sends"] + 1))
