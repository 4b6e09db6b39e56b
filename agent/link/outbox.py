"""The durable outbox: what the meter still has to get to the head-end.

Sans-I/O.  The shell commits ``snapshot()`` to the store after every
``add`` and *before* publishing (durable before sent), publishes what
``take`` hands out, and calls ``acked(seq)`` on PUBACK: only then is an
entry removed.  After a reconnect (or a restart, from the snapshot)
``disconnected()`` puts in-flight entries back, and ``take`` hands them out
again in sequence order.  The head-end de-duplicates by (meter, seq), so a
message sent twice (PUBACK lost with the connection) is harmless.

Bounded, with this policy when full (``capacity`` entries):

1. the oldest telemetry entry is dropped (a newer reading supersedes it);
2. else the oldest ordinary event (not about money or the relay) is dropped;
3. money and relay entries (class CRITICAL: top-up/command acks, balance
   and relay events) are never dropped: they may take the outbox past
   ``capacity`` up to ``hard_capacity``; beyond that ``add`` refuses them
   and returns None, and the shell must refuse the operation that would
   create one (e.g. ack a top-up REFUSED) - fail safe and visible.

A new telemetry or ordinary entry that finds nothing cheaper to evict is
itself dropped.  Every drop is counted per class (``dropped``) and is
visible as a gap in ``seq`` and in the birth/telemetry messages.
"""

TELE = 0
EVENT = 1
CRITICAL = 2
CLASSES = (TELE, EVENT, CRITICAL)
CLASS_NAMES = ("tele", "event", "critical")


class Outbox:
    """Bounded, ordered store-and-forward queue of (seq, class, leaf, body)."""

    __slots__ = ("capacity", "hard_capacity", "window", "next_seq", "items", "inflight", "dropped")

    def __init__(self, capacity=256, hard_capacity=1024, window=8):
        if capacity < 1 or hard_capacity < capacity or window < 1:
            raise ValueError(
                "outbox: need 1 <= capacity <= hard_capacity and window >= 1, got %r, %r, %r"
                % (capacity, hard_capacity, window)
            )
        self.capacity = capacity
        self.hard_capacity = hard_capacity
        self.window = window
        self.next_seq = 1
        self.items = []  # [seq, cls, leaf, body], ascending seq
        self.inflight = {}  # seq -> True, not persisted
        self.dropped = [0, 0, 0]

    def __len__(self):
        return len(self.items)

    def _evict(self, cls):
        # Oldest not-in-flight entry of class ``cls``; True if one went.
        for i in range(len(self.items)):
            item = self.items[i]
            if item[1] == cls and item[0] not in self.inflight:
                self.items.pop(i)
                self.dropped[cls] += 1
                return True
        return False

    def can_accept_critical(self):
        """False when a money/relay entry would be refused (outbox hard-full)."""
        return len(self.items) < self.hard_capacity

    def add(self, cls, leaf, body):
        """Queue ``body`` for topic ``leaf``; return its seq, or None if dropped."""
        if cls not in CLASSES:
            raise ValueError("outbox class %r: must be TELE, EVENT or CRITICAL" % (cls,))
        if len(self.items) >= self.capacity:
            if not self._evict(TELE):
                if cls == TELE or not self._evict(EVENT):
                    if cls != CRITICAL or len(self.items) >= self.hard_capacity:
                        self.dropped[cls] += 1
                        return None
        seq = self.next_seq
        self.next_seq += 1
        self.items.append([seq, cls, leaf, body])
        return seq

    def take(self):
        """Entries to publish now, oldest first, keeping at most ``window`` in flight."""
        out = []
        room = self.window - len(self.inflight)
        for item in self.items:
            if room <= 0:
                break
            if item[0] not in self.inflight:
                self.inflight[item[0]] = True
                out.append(item)
                room -= 1
        return out

    def acked(self, seq):
        """PUBACK for ``seq``: remove it.  True if it was there (idempotent)."""
        self.inflight.pop(seq, None)
        for i in range(len(self.items)):
            if self.items[i][0] == seq:
                self.items.pop(i)
                return True
        return False

    def disconnected(self):
        """The connection dropped: everything in flight must be sent again."""
        self.inflight = {}

    def pending(self):
        """Number of entries not yet acknowledged."""
        return len(self.items)

    def snapshot(self):
        """A msgpack-able value for the store (in-flight marks are not kept)."""
        return {
            "dropped": list(self.dropped),
            "items": [list(item) for item in self.items],
            "next": self.next_seq,
        }

    def restore(self, snap):
        """Load a ``snapshot()``; ValueError naming the field if it does not fit."""
        if not isinstance(snap, dict):
            raise ValueError("outbox snapshot: must be a map")
        nxt = snap.get("next")
        items = snap.get("items")
        dropped = snap.get("dropped")
        if not isinstance(nxt, int) or nxt < 1:
            raise ValueError("outbox snapshot field 'next': must be an int >= 1")
        if not isinstance(items, list):
            raise ValueError("outbox snapshot field 'items': must be a list")
        if not isinstance(dropped, list) or len(dropped) != 3:
            raise ValueError("outbox snapshot field 'dropped': must be a list of 3 ints")
        last = 0
        for item in items:
            if (
                not isinstance(item, list)
                or len(item) != 4
                or not isinstance(item[0], int)
                or item[0] <= last
                or item[0] >= nxt
                or item[1] not in CLASSES
                or not isinstance(item[2], str)
            ):
                raise ValueError("outbox snapshot field 'items': bad entry %r" % (item,))
            last = item[0]
        self.next_seq = nxt
        self.items = [list(item) for item in items]
        self.dropped = [int(d) for d in dropped]
        self.inflight = {}
