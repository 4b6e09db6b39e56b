"""Batches of the HTTP API: one command to many meters through the delivery queue.

The meter ids and the command are checked by ``headend.batch`` (the rules
``pmeter batch`` uses) before anything is issued.  Then each meter gets its
own queued command (``headend.delivery``) with the idempotency key
``batch-<id>-<meter>``: delivered while the meter is online, re-sent after
its birth, until applied or expired.  Tables ``batches`` and
``batch_items`` in the ledger's SQLite file keep which delivery belongs to
which batch; a batch's progress is its deliveries' statuses.
"""

import json
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created INTEGER NOT NULL, command TEXT NOT NULL, args TEXT NOT NULL,
    source TEXT);
CREATE TABLE IF NOT EXISTS batch_items (
    batch INTEGER NOT NULL, line INTEGER NOT NULL, meter TEXT NOT NULL, delivery INTEGER NOT NULL,
    PRIMARY KEY (batch, meter));
"""
STATUSES = ("queued", "sent", "applied", "refused", "expired")


class Batches:
    """The batch tables, on the ledger's connection and lock, over the service's delivery queue."""

    def __init__(self, queue):
        self.queue = queue
        self.ledger = queue.ledger
        with self.ledger.lock:
            self.ledger.db.executescript(SCHEMA)

    def create(self, master, rows, name, args, ttl, source, now=None):
        """Queue command ``name`` with ``args`` for every ``(line, meter)`` of ``rows`` (checked): the batch id."""
        now = int(time.time()) if now is None else now
        with self.ledger.lock:
            batch_id = self.ledger.db.execute("INSERT INTO batches (created, command, args, source) VALUES (?,?,?,?)",
                                              (now, name, json.dumps(args, sort_keys=True), source)).lastrowid
        for line, meter in rows:
            row, _ = self.queue.command(master, meter, name, args, ttl, "batch-%d-%s" % (batch_id, meter),
                                        "%s batch %d" % (source, batch_id), now)
            with self.ledger.lock:
                self.ledger.db.execute("INSERT INTO batch_items VALUES (?,?,?,?)", (batch_id, line, meter, row["id"]))
        return batch_id

    def view(self, batch_id):
        """The batch with its progress and one entry per meter (its delivery), or None."""
        with self.ledger.lock:
            head = self.ledger.db.execute("SELECT created, command, args, source FROM batches WHERE id=?",
                                          (batch_id,)).fetchone()
            items = self.ledger.db.execute("SELECT line, meter, delivery FROM batch_items WHERE batch=? ORDER BY line",
                                           (batch_id,)).fetchall()
        if head is None:
            return None
        progress = dict((s, 0) for s in STATUSES)
        meters = []
        for line, meter, delivery in items:
            row = self.queue.get(delivery)
            progress[row["status"]] += 1
            meters.append((line, row))
        return {"batch_id": batch_id, "created": head[0], "command": head[1], "args": json.loads(head[2]),
                "source": head[3], "total": len(items), "progress": progress,
                "done": progress["queued"] + progress["sent"] == 0, "meters": meters}
