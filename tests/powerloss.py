"""A power-loss harness: a simulated file system that can lose power at any operation.

Reusable by any component that stores through the file-system interface of
``agent.store`` (create -> handle.write/flush/sync/close, read, rename,
remove, exists, sync_dir).

The model is a conservative ext4 (data=ordered without guarantees beyond
POSIX) : file contents become durable only on ``sync`` (fsync); a rename or
create becomes durable only on ``sync_dir``.  At a cut, what is not durable
may be lost, kept, torn (a prefix of the unsynced tail survives) or
zero-filled (the length survived, the data did not), chosen by ``variant``.
A cut during a ``write`` tears that write: only part of it reaches the
page cache.  littlefs is stricter than this model (copy-on-write, atomic
rename), so passing here covers both.

``exhaustive(workload, check)`` runs ``workload(fs, journal)`` once to count
its operations, then once per (operation, variant): cut at that operation,
build the surviving file system and call ``check(survivor_fs, journal,
label)``.  That is littlefs's "linear" power-loss schedule.
"""

VARIANTS = ("lost", "kept", "torn", "zeros")


class PowerCut(BaseException):
    """Raised inside the workload at the chosen operation.

    A BaseException so no ``except Exception`` in the code under test can
    swallow it: after a cut, nothing else runs.
    """


class _Inode:
    __slots__ = ("durable", "cached")

    def __init__(self):
        self.durable = b""
        self.cached = b""


class SimFS:
    """An in-memory file system that counts operations and can lose power."""

    def __init__(self, cut_at=None):
        self.cut_at = cut_at
        self.ops = 0
        self.ns = {}  # path -> inode, as programs see it
        self.durable_ns = {}  # path -> inode, as the disk has it
        self.cut = False
        self.trace = []

    # -- the cut point
    def _op(self, what):
        if self.cut:
            raise PowerCut("power is off")
        self.ops += 1
        self.trace.append(what)
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.cut = True
            return True
        return False

    # -- agent.store file-system interface
    def create(self, path):
        if self._op("create " + path):
            raise PowerCut("cut at create " + path)
        ino = self.ns.get(path)
        if ino is None:
            ino = _Inode()
            self.ns[path] = ino
        else:
            ino.cached = b""  # O_TRUNC of the same inode: the old data is gone
        return _Handle(self, ino, path)

    def read(self, path, limit):
        ino = self.ns.get(path)
        if ino is None:
            return None
        return ino.cached[: limit + 1]

    def rename(self, src, dst):
        if self._op("rename %s %s" % (src, dst)):
            raise PowerCut("cut at rename")
        if src not in self.ns:
            raise OSError(2, "no such file: " + src)
        self.ns[dst] = self.ns.pop(src)

    def remove(self, path):
        if self._op("remove " + path):
            raise PowerCut("cut at remove")
        self.ns.pop(path, None)

    def exists(self, path):
        return path in self.ns

    def sync_dir(self, directory):
        if self._op("sync_dir " + directory):
            raise PowerCut("cut at sync_dir")
        self.durable_ns = dict(self.ns)

    # -- after the cut
    def survivor(self, variant):
        """A fresh SimFS holding what a disk would show after the cut."""
        if variant not in VARIANTS:
            raise ValueError("variant must be one of %s" % (VARIANTS,))
        ns = self.durable_ns if variant == "lost" else self.ns
        out = SimFS()
        for path in sorted(ns):
            ino = ns[path]
            new = _Inode()
            d, c = ino.durable, ino.cached
            if c.startswith(d) and len(c) > len(d):
                tail = c[len(d) :]
                if variant == "kept":
                    data = c
                elif variant == "torn":
                    data = d + tail[: len(tail) // 2]
                elif variant == "zeros":
                    data = d + bytes(len(tail))
                else:
                    data = d
            elif variant == "lost" or c == d:
                data = d
            elif variant == "kept":
                data = c
            elif variant == "torn":
                # the truncation reached the disk, half the new data did
                data = c[: len(c) // 2]
            else:
                data = bytes(len(c))
            new.durable = new.cached = data
            out.ns[path] = new
        out.durable_ns = dict(out.ns)
        return out


class _Handle:
    __slots__ = ("fs", "ino", "path")

    def __init__(self, fs, ino, path):
        self.fs = fs
        self.ino = ino
        self.path = path

    def write(self, data):
        if self.fs._op("write %s %d" % (self.path, len(data))):
            # A torn write: part of it reached the page cache.
            self.ino.cached += bytes(data[: len(data) // 3])
            raise PowerCut("cut during write")
        self.ino.cached += bytes(data)

    def flush(self):
        if self.fs._op("flush " + self.path):
            raise PowerCut("cut at flush")

    def sync(self):
        if self.fs._op("sync " + self.path):
            raise PowerCut("cut at sync")
        self.ino.durable = self.ino.cached

    def close(self):
        if self.fs.cut:
            raise PowerCut("power is off")


def count_ops(workload, journal_factory):
    """Run ``workload`` uncut; returns (number of fs operations, journal)."""
    fs = SimFS()
    journal = journal_factory()
    workload(fs, journal)
    return fs.ops, journal


def exhaustive(workload, check, journal_factory, variants=VARIANTS, step=1):
    """Cut power at every ``step``-th operation under every variant; returns runs."""
    total, _ = count_ops(workload, journal_factory)
    runs = 0
    for cut_at in range(1, total + 1, step):
        for variant in variants:
            fs = SimFS(cut_at)
            journal = journal_factory()
            try:
                workload(fs, journal)
            except PowerCut:
                pass
            else:
                raise AssertionError("workload finished without reaching cut %d" % cut_at)
            label = "cut at op %d (%s) variant %s" % (cut_at, fs.trace[-1], variant)
            check(fs.survivor(variant), journal, label)
            runs += 1
    return runs


# ------------------------------------------------------------------ meter


class Journal:
    """What the world outside the device observed before the cut."""

    def __init__(self):
        self.acked = {}  # ref -> amount, Ack(accepted) received
        self.sent = {}  # ref -> amount, every top-up sent
        self.commits = []  # summaries of commits that returned
        self.attempt = None  # summary of the commit in flight
        self.closes_after = []  # summaries current when a close pulse was emitted


def summary(device):
    """What must survive a commit, in comparable form."""
    m = device.meter
    guard = device.parts.get("tokens")
    return (
        m.regs.total,
        m.balance,
        m.relay_state,
        tuple(sorted(guard.refs)) if guard is not None else (),
    )


class WatchedStore:
    """Wraps a Store to tell the journal which summary each commit carries."""

    def __init__(self, store, journal, device_box):
        self.store = store
        self.journal = journal
        self.device_box = device_box

    def __getattr__(self, name):
        return getattr(self.store, name)

    def commit(self, value, full=False):
        s = summary(self.device_box[0])
        self.journal.attempt = s
        n = self.store.commit(value, full)
        self.journal.commits.append(s)
        self.journal.attempt = None
        return n
