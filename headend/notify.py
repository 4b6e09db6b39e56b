"""Notifications: what a customer or an operator must hear about, to a webhook and the log.

A meter event that matters (``classify``) becomes a row of the durable
outbox ``notifications`` in the ledger's SQLite file, once: its ``dedup``
key (meter, outbox ``q`` and a hash of the event) is UNIQUE, so the same
event re-sent by the meter or received by two processes is one
notification.  ``Webhook`` POSTs each row as JSON, signed with
HMAC-SHA256 over the exact body (header ``X-Pmeter-Signature:
sha256=<hex>``), and retries with doubling delays until the receiver answers
2xx: at least once; receivers drop repeats by ``X-Pmeter-Delivery`` (the
dedup key, also in the body as ``id``).
"""

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup TEXT NOT NULL UNIQUE, meter TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    created INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    delivered_at INTEGER, last_error TEXT);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (delivered_at, next_at);
"""

# Notification kinds, from the meter's event kinds (alarm by its level).
KINDS = ("alarm1", "alarm2", "cut", "reconnection", "topup_refused", "relay_failed", "state_lost",
         "settlement_mismatch")  # the last from headend.settlement
_BY_EVENT = {"trip": "cut", "close": "reconnection", "topup_refused": "topup_refused",
             "relay_failed": "relay_failed", "state_lost": "state_lost"}
SIGNATURE_HEADER = "X-Pmeter-Signature"


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def classify(meter, leaf, fields):
    """The notification of one opened message, ``(kind, dedup key, body dict)``, or None."""
    body = fields.get("b")
    if leaf != "evt" or not isinstance(body, dict) or not _int(fields.get("q")):
        return None
    event = body.get("kind")
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    if event == "alarm":
        kind = {1: "alarm1", 2: "alarm2"}.get(data.get("level"))  # level 0: the alarm ended
    elif event == "state_lost" and body.get("reason") == "cleared":
        kind = None
    else:
        kind = _BY_EVENT.get(event)
    if kind is None:
        return None
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    dedup = "%s/%d/%s" % (meter, fields["q"], digest)
    out = {"id": dedup, "kind": kind, "meter_id": meter, "event": event, "reason": body.get("reason"),
           "wall": body.get("wall") if _int(body.get("wall")) else None,
           "data": json.loads(json.dumps(data, default=repr))}
    return kind, dedup, out


def sign(secret, body):
    """The ``X-Pmeter-Signature`` header value of ``body`` (bytes)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Outbox:
    """The ``notifications`` table, on the ledger's connection and lock."""

    def __init__(self, ledger, log=None):
        self.ledger = ledger
        self.log = log or (lambda msg: None)
        self.wake = threading.Event()
        with ledger.lock:
            ledger.db.executescript(SCHEMA)

    def listen(self, meter, leaf, fields, retained=False):
        """HeadEnd listener: record the notification of a message (once per dedup key) and log it."""
        found = classify(meter, leaf, fields)
        if found is None:
            return
        kind, dedup, body = found
        self.add(dedup, meter, kind, body)

    def add(self, dedup, meter, kind, body):
        """Record notification ``body`` (a dict with ``reason``) once per ``dedup`` key; True if new."""
        text = json.dumps(body, sort_keys=True)
        with self.ledger.lock:
            cur = self.ledger.db.execute(
                "INSERT OR IGNORE INTO notifications (dedup, meter, kind, body, created, next_at) VALUES (?,?,?,?,?,?)",
                (dedup, meter, kind, text, int(time.time()), time.time()))
        if cur.rowcount:
            self.log("notification %s: meter %s %s (%s)" % (dedup, meter, kind, body["reason"]))
            self.wake.set()
        return cur.rowcount == 1

    def due(self, now, limit=50):
        """Undelivered rows whose retry time has come: [(id, dedup, kind, body text, attempts)]."""
        with self.ledger.lock:
            return self.ledger.db.execute(
                "SELECT id, dedup, kind, body, attempts FROM notifications WHERE delivered_at IS NULL AND next_at<=?"
                " ORDER BY id LIMIT ?", (now, limit)).fetchall()

    def done(self, row_id, now):
        """Row ``row_id`` was delivered."""
        with self.ledger.lock:
            self.ledger.db.execute("UPDATE notifications SET delivered_at=?, attempts=attempts+1 WHERE id=?",
                                   (int(now), row_id))

    def failed(self, row_id, error, next_at):
        """Delivering row ``row_id`` failed: try again at ``next_at``."""
        with self.ledger.lock:
            self.ledger.db.execute("UPDATE notifications SET attempts=attempts+1, last_error=?, next_at=? WHERE id=?",
                                   (error, next_at, row_id))

    def rows(self):
        """Every notification as a dict, oldest first."""
        cols = ("id", "dedup", "meter", "kind", "body", "created", "attempts", "delivered_at", "last_error")
        with self.ledger.lock:
            rows = self.ledger.db.execute("SELECT %s FROM notifications ORDER BY id" % ", ".join(cols)).fetchall()
        return [dict(zip(cols, r)) for r in rows]


class Webhook:
    """Posts the outbox to ``url`` from a thread of its own, with retries (``retry_s`` doubling up to ``max_retry_s``)."""

    def __init__(self, outbox, url, secret, retry_s=2.0, max_retry_s=300.0, log=None):
        self.outbox = outbox
        self.url = url
        self.secret = secret
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.log = log or (lambda msg: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)

    def start(self):
        """Start posting."""
        self._thread.start()
        return self

    def stop(self):
        """Stop posting (what is undelivered stays in the outbox)."""
        self._stop.set()
        self.outbox.wake.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            self.outbox.wake.clear()
            for row in self.outbox.due(time.time()):
                if self._stop.is_set():
                    return
                self._post(*row)
            self.outbox.wake.wait(min(self.retry_s, 1.0))

    def _post(self, row_id, dedup, kind, text, attempts):
        body = text.encode()
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Pmeter-Event": kind, "X-Pmeter-Delivery": dedup,
            SIGNATURE_HEADER: sign(self.secret, body)})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
            self.outbox.done(row_id, time.time())
            return
        except urllib.error.HTTPError as e:
            error = "HTTP %d" % e.code
        except (OSError, ValueError) as e:
            error = "%s: %s" % (type(e).__name__, e)
        delay = min(self.max_retry_s, self.retry_s * (2 ** attempts))
        self.outbox.failed(row_id, error, time.time() + delay)
        self.log("notification %s: webhook failed (%s), retry in %.1f s" % (dedup, error, delay))
