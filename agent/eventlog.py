"""The meter's event log: sequence-numbered records, the last few of each kind.

Meters keep the last 10 records of each type (power-down, trip, close,
purchase, ...); every record also gets a global sequence number so the
head-end can see gaps and de-duplicate.
"""

KEEP_PER_KIND = 10


class Record:
    """One event: ``seq``, ``kind``, ``wall`` time, ``reason`` and ``data``.

    ``data`` is a dict of small values (ints, strings, bools, lists); the
    codec sorts its keys, so its encoding does not depend on dict order.
    """

    __slots__ = ("seq", "kind", "wall", "reason", "data")

    def __init__(self, seq, kind, wall, reason, data):
        self.seq = seq
        self.kind = kind
        self.wall = wall
        self.reason = reason
        self.data = data

    def as_list(self):
        """Plain-value form for snapshots and payloads."""
        return [self.seq, self.kind, self.wall, self.reason, self.data]

    def __repr__(self):
        return "Record(%d, %s, %s, %s, %r)" % (self.seq, self.kind, self.wall, self.reason, self.data)


class EventLog:
    """Bounded per-kind event history with a monotonically rising sequence."""

    # Records are kept as plain 5-tuples (seq, kind, wall, reason, data):
    # on MicroPython a tuple is a fraction of an instance with its own
    # attribute dict.  ``add`` and ``recent`` hand out ``Record`` objects.
    __slots__ = ("seq", "_by_kind")

    def __init__(self):
        self.seq = 0
        self._by_kind = {}

    def add(self, kind, wall, reason, data=None):
        """Record an event and return it."""
        self.seq += 1
        item = (self.seq, kind, wall, reason, data if data is not None else {})
        recent = self._by_kind.get(kind)
        if recent is None:
            recent = []
            self._by_kind[kind] = recent
        recent.insert(0, item)
        if len(recent) > KEEP_PER_KIND:
            recent.pop()
        return Record(item[0], kind, wall, reason, item[4])

    def recent(self, kind):
        """The last records of ``kind``, newest first."""
        return [Record(r[0], r[1], r[2], r[3], r[4]) for r in self._by_kind.get(kind, ())]

    def snapshot(self):
        """Plain-value form, kinds sorted."""
        return [self.seq, [[k, [list(r) for r in self._by_kind[k]]] for k in sorted(self._by_kind)]]

    def restore(self, snap):
        """Load a snapshot made by ``snapshot``."""
        self.seq = snap[0]
        self._by_kind = {}
        for kind, recs in snap[1]:
            self._by_kind[kind] = [(r[0], r[1], r[2], r[3], r[4]) for r in recs]
