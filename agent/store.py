"""Power-fail-safe storage of the device's state (one msgpack value).

Layout: two slot files ``<name>.a`` and ``<name>.b`` in one directory.
Each commit writes the whole value to ``<name>.tmp``, syncs it, then
renames it over the *older* slot (rename over an existing file is atomic
on littlefs and ext4; delete-then-rename is not) and syncs the directory.
So at every instant at least the previous committed copy is intact, and
a cut mid-commit leaves either the old or the new value, never a mix.
``Store`` (below) adds checkpoint deltas and a small high-water "marks"
record, so that damage to any one file is either survived or detected
(docs/store.md).

File format (all integers big-endian)::

    magic    4  b"PMST"
    version  1  FORMAT_VERSION
    id_len   1  length of the meter id
    meter_id id_len bytes (ascii)
    seq      8  commit sequence number (u64: cannot wrap in a meter's life)
    length   4  payload length
    payload  length bytes (canonical msgpack of the stored value)
    crc32    4  binascii.crc32 of every byte before it

``load`` reads both slots and offers the valid ones newest first; a file
that is empty, truncated, garbage, of another format version, of another
meter, fails its CRC or does not decode is skipped with a ``Finding``
naming what was wrong, so the caller can report it.

All file access goes through a small file-system object (``OsFS`` here,
a power-loss simulator in tests/powerloss.py) with: create(path) ->
handle(write, flush, sync, close), read(path, limit), rename(src, dst),
remove(path), exists(path), sync_dir(directory).  Runs on MicroPython.
"""

import binascii
import os

from agent.codec import msgpack
from agent.delta import diff, patch

MAGIC = b"PMST"
FORMAT_VERSION = 1
MAX_FILE = 64 * 1024  # a state file larger than this is refused, not read (boards have ~100 KB heap)
SLOTS = ("a", "b")

# Finding problem codes
EMPTY = "empty"
TRUNCATED = "truncated"
GARBAGE = "garbage"
VERSION = "wrong_version"
OTHER_METER = "other_meter"
CRC = "bad_crc"
LENGTH = "bad_length"
TOO_LARGE = "too_large"
UNREADABLE = "unreadable"
UNDECODABLE = "undecodable"
REJECTED = "rejected"
BASE_LOST = "base_lost"  # an intact checkpoint of a base newer than every intact one


class StoreError(Exception):
    """A commit could not be made durable (I/O error, disk full, ...)."""


class Finding:
    """Something wrong found in a state file: ``file``, ``problem`` code, ``detail`` text."""

    __slots__ = ("file", "problem", "detail")

    def __init__(self, file, problem, detail):
        self.file = file
        self.problem = problem
        self.detail = detail

    def as_dict(self):
        """A msgpack-able form for event records."""
        return {"file": self.file, "problem": self.problem, "detail": self.detail}

    def __repr__(self):
        return "Finding(%s: %s: %s)" % (self.file, self.problem, self.detail)


class Candidate:
    """A state file that passed every check: ``slot``, ``seq``, decoded ``value``, payload ``crc``."""

    __slots__ = ("slot", "seq", "value", "file", "crc")

    def __init__(self, slot, seq, value, file, crc):
        self.slot = slot
        self.seq = seq
        self.value = value
        self.file = file
        self.crc = crc


def _int(data):
    v = 0
    for b in data:
        v = (v << 8) | b
    return v


def crc32(data):
    """CRC-32 (IEEE) as an unsigned int on both runtimes."""
    return binascii.crc32(data) & 0xFFFFFFFF


def encode_file(meter_id, seq, payload):
    """The bytes of one state file."""
    mid = meter_id.encode()
    if len(mid) > 255:
        raise ValueError("store: meter id longer than 255 bytes")
    body = b"".join(
        (MAGIC, bytes((FORMAT_VERSION, len(mid))), mid, msgpack.be_bytes(seq, 8), msgpack.be_bytes(len(payload), 4), payload)
    )
    return body + msgpack.be_bytes(crc32(body), 4)


def decode_file(data, meter_id):
    """``(seq, payload)`` of a state file, or ``(None, (problem, detail))``."""
    n = len(data)
    if n == 0:
        return None, (EMPTY, "zero-length file (a write that never reached the disk)")
    if n < 6:
        return None, (TRUNCATED, "only %d bytes, shorter than the header" % n)
    if data[:4] != MAGIC:
        return None, (GARBAGE, "does not start with the store magic %r (got %r)" % (MAGIC, bytes(data[:4])))
    if data[4] != FORMAT_VERSION:
        return None, (
            VERSION,
            "format version %d, this software reads version %d" % (data[4], FORMAT_VERSION),
        )
    id_len = data[5]
    head = 6 + id_len + 8 + 4
    if n < head + 4:
        return None, (TRUNCATED, "only %d bytes, header and CRC need %d" % (n, head + 4))
    length = _int(data[head - 4 : head])
    if head + length + 4 != n:
        if head + length + 4 > n:
            return None, (
                TRUNCATED,
                "payload of %d bytes declared but only %d present" % (length, n - head - 4),
            )
        return None, (LENGTH, "%d bytes after the declared payload" % (n - head - length - 4))
    want = _int(data[n - 4 :])
    got = crc32(data[: n - 4])
    if want != got:
        return None, (CRC, "CRC32 is %08x, file says %08x (corrupted)" % (got, want))
    try:
        mid = bytes(data[6 : 6 + id_len]).decode()
    except Exception:
        mid = repr(bytes(data[6 : 6 + id_len]))
    if mid != meter_id:
        return None, (OTHER_METER, "belongs to meter %s, this is meter %s" % (mid, meter_id))
    seq = _int(data[6 + id_len : 6 + id_len + 8])
    return seq, bytes(data[head : head + length])


class OsFS:
    """The real file system through ``os`` (CPython and MicroPython).

    ``sync`` is os.fsync where the runtime has it (CPython); on MicroPython
    ``flush`` is what commits to littlefs.  ``sync_dir`` fsyncs the
    directory on CPython so a rename survives a power cut on ext4.
    """

    def create(self, path):
        """Open ``path`` for writing, truncated; returns a handle."""
        return _OsHandle(open(path, "wb"))

    def read(self, path, limit):
        """The file's bytes (at most ``limit`` + 1), or None if it does not exist."""
        try:
            with open(path, "rb") as f:
                # In chunks: MicroPython's read(n) allocates n bytes up front.
                parts = []
                got = 0
                while got <= limit:
                    chunk = f.read(4096)
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                return b"".join(parts)
        except OSError as e:
            if e.args and e.args[0] == 2:  # ENOENT
                return None
            raise

    def rename(self, src, dst):
        """Atomically replace ``dst`` with ``src``."""
        os.rename(src, dst)

    def remove(self, path):
        """Delete ``path``; missing is fine."""
        try:
            os.remove(path)
        except OSError:
            pass

    def exists(self, path):
        """Whether ``path`` exists."""
        try:
            os.stat(path)
            return True
        except OSError:
            return False

    def sync_dir(self, directory):
        """Make renames in ``directory`` durable (CPython on POSIX)."""
        # getattr: MicroPython's os has none of these (littlefs renames are durable).
        fsync = getattr(os, "fsync", None)
        rdonly = getattr(os, "O_RDONLY", None)
        if fsync is None or rdonly is None:
            return
        fd = getattr(os, "open")(directory, rdonly)
        try:
            fsync(fd)
        finally:
            getattr(os, "close")(fd)


class _OsHandle:
    __slots__ = ("f",)

    def __init__(self, f):
        self.f = f

    def write(self, data):
        n = self.f.write(data)
        if n is not None and n != len(data):
            raise OSError("short write: %d of %d bytes" % (n, len(data)))

    def flush(self):
        self.f.flush()

    def sync(self):
        fsync = getattr(os, "fsync", None)
        if fsync is not None and hasattr(self.f, "fileno"):
            fsync(self.f.fileno())

    def close(self):
        self.f.close()


class Slots:
    """A/B slot files for one msgpack value (``<name>.a`` / ``<name>.b``).

    ``load()`` -> (candidates newest first, findings, had_files);
    ``adopt(candidate)`` says which one the caller restored from (so the
    next commit never overwrites it); ``commit(value)`` makes ``value``
    durable or raises StoreError.  ``writes`` and ``bytes_written`` count
    what commits cost the flash.
    """

    def __init__(self, fs, directory, meter_id, name="state"):
        self.fs = fs
        self.directory = directory
        self.meter_id = meter_id
        self.name = name
        self.seq = 0  # highest sequence number seen or written
        self.current = None  # slot holding the adopted / last written value
        self.writes = 0
        self.bytes_written = 0

    def path(self, slot):
        """Path of a slot ("a", "b" or "tmp")."""
        return "%s/%s.%s" % (self.directory, self.name, slot)

    def load(self):
        """Read both slots: (valid candidates newest first, findings, had_files)."""
        candidates = []
        findings = []
        had_files = False
        for slot in SLOTS:
            path = self.path(slot)
            fname = "%s.%s" % (self.name, slot)
            try:
                data = self.fs.read(path, MAX_FILE)
            except MemoryError:
                # Out of RAM is not a damaged file: treating it as one would
                # boot an older state and lose acknowledged top-ups.
                raise
            except Exception as e:
                had_files = True
                findings.append(Finding(fname, UNREADABLE, "could not read: %r" % (e,)))
                continue
            if data is None:
                continue
            had_files = True
            if len(data) > MAX_FILE:
                findings.append(Finding(fname, TOO_LARGE, "larger than %d bytes" % MAX_FILE))
                continue
            seq, rest = decode_file(data, self.meter_id)
            if seq is None:
                findings.append(Finding(fname, rest[0], rest[1]))
                continue
            if seq > self.seq:
                self.seq = seq
            try:
                value = msgpack.unpack(rest)
            except ValueError as e:
                findings.append(Finding(fname, UNDECODABLE, str(e)))
                continue
            candidates.append(Candidate(slot, seq, value, fname, crc32(rest)))
        candidates.sort(key=lambda c: -c.seq)
        if self.fs.exists(self.path("tmp")):
            # Not an error: the cut came mid-commit and the slots still hold a full copy.
            findings.append(Finding("%s.tmp" % self.name, TRUNCATED, "unfinished commit discarded"))
        return candidates, findings, had_files

    def adopt(self, candidate):
        """Record that the caller restored from ``candidate`` (or None: nothing)."""
        self.current = candidate.slot if candidate is not None else None

    def commit(self, value):
        """Write ``value`` durably over the older slot; StoreError if that failed."""
        try:
            payload = msgpack.pack(value)
        except ValueError as e:
            raise StoreError("state cannot be encoded: %s" % e)
        return self.commit_payload(payload)

    def commit_payload(self, payload):
        """Write already-encoded ``payload`` bytes (see ``commit``)."""
        target = "b" if self.current == "a" else "a"
        data = encode_file(self.meter_id, self.seq + 1, payload)
        self._write(target, data)
        self.seq += 1
        self.current = target
        return len(data)

    def _write(self, target, data):
        tmp = self.path("tmp")
        try:
            h = self.fs.create(tmp)
            try:
                h.write(data)
                h.flush()
                h.sync()
            finally:
                h.close()
            self.fs.rename(tmp, self.path(target))
            self.fs.sync_dir(self.directory)
        except StoreError:
            raise
        except Exception as e:
            raise StoreError("commit to %s failed: %r" % (self.path(target), e))
        self.writes += 1
        self.bytes_written += len(data)


# ------------------------------------------------------------ checkpoints
#
# A full snapshot is several KB (event log, load profile); writing it every
# minute would cost ~7 MB/day.  So most commits write a small *delta*
# (agent/delta.py): the operations that turn the last full snapshot (the
# base) into the current value.  The delta names its base by sequence
# number and payload CRC, and lives in its own A/B pair, so a cut while
# writing either file leaves the previous base+delta pair intact.


class Loaded:
    """One way to recover the state: ``value``, where it came from, and its slots."""

    __slots__ = ("value", "base", "delta", "source")

    def __init__(self, value, base, delta, source):
        self.value = value
        self.base = base
        self.delta = delta
        self.source = source


class Store:
    """The device's durable state: full snapshots, checkpoint deltas, marks.

    ``load()`` -> (list of ``Loaded`` newest first, findings, had_files):
    the caller restores from the first one that fits and calls
    ``adopt(loaded)``.  ``commit(value)`` writes a delta against the
    current base when it is small (<= ``delta_ratio`` of the base size,
    default a quarter), else a new full base.  ``commit_marks(m)`` writes
    the small high-water record (``mark.a`` / ``mark.b``, the older
    overwritten), which ``load_marks()`` reads back.
    ``writes``/``bytes_written`` add up every file; ``full_writes`` counts
    bases and ``mark_writes`` marks records.
    """

    def __init__(self, fs, directory, meter_id, delta_ratio=4, min_delta=512):
        self.fs = fs
        self.directory = directory
        self.meter_id = meter_id
        self.full = Slots(fs, directory, meter_id, "state")
        self.delta = Slots(fs, directory, meter_id, "ckpt")
        self.marks = Slots(fs, directory, meter_id, "mark")
        self.delta_ratio = delta_ratio
        self.min_delta = min_delta
        self.base = None  # (seq, crc, packed payload) of the current base
        self.full_writes = 0

    @property
    def writes(self):
        return self.full.writes + self.delta.writes + self.marks.writes

    @property
    def bytes_written(self):
        return self.full.bytes_written + self.delta.bytes_written + self.marks.bytes_written

    @property
    def mark_writes(self):
        return self.marks.writes

    def load(self):
        """Every recoverable state, newest first, with findings about the rest."""
        bases, findings, had = self.full.load()
        deltas, dfind, dhad = self.delta.load()
        findings.extend(dfind)
        out = []
        used = {}
        for b in bases:
            for d in deltas:
                v = d.value
                if not (isinstance(v, list) and len(v) == 3 and v[0] == b.seq and v[1] == b.crc):
                    continue
                used[d.slot] = True
                try:
                    value = patch(msgpack.unpack(msgpack.pack(b.value)), v[2])
                except ValueError as e:
                    findings.append(Finding(d.file, UNDECODABLE, "checkpoint does not apply: %s" % e))
                    continue
                out.append(Loaded(value, b, d, "%s+%s" % (b.file, d.file)))
            out.append(Loaded(b.value, b, None, b.file))
        newest = bases[0].seq if bases else 0
        for d in deltas:
            v = d.value
            if d.slot in used:
                continue
            if not (isinstance(v, list) and len(v) == 3):
                findings.append(Finding(d.file, UNDECODABLE, "not a checkpoint"))
            elif isinstance(v[0], int) and v[0] > newest:
                # Not superseded (a newer base would have a higher number): its
                # base was written after every intact one and is damaged.
                findings.append(Finding(d.file, BASE_LOST, "checkpoint of base %d, newer than every "
                                        "intact base: the state it belongs to is lost" % v[0]))
        return out, findings, had or dhad

    def load_marks(self):
        """The newest intact marks record (or None), findings, whether a file existed.

        Continues from it: the next marks write replaces the other copy.
        """
        cands, findings, had = self.marks.load()
        self.marks.adopt(cands[0] if cands else None)
        return (cands[0].value if cands else None), findings, had

    def adopt(self, loaded):
        """Continue from ``loaded`` (or from nothing, when None)."""
        if loaded is None:
            self.full.adopt(None)
            self.delta.adopt(None)
            self.base = None
            return
        self.full.adopt(loaded.base)
        self.delta.adopt(loaded.delta)
        b = loaded.base
        self.base = (b.seq, b.crc, msgpack.pack(b.value))

    def commit(self, value, full=False):
        """Make ``value`` durable (a delta if small, else a full base); returns bytes written."""
        try:
            payload = msgpack.pack(value)
        except ValueError as e:
            raise StoreError("state cannot be encoded: %s" % e)
        return self._commit_state(payload, value, full)

    def commit_marks(self, marks):
        """Make the marks record ``marks`` durable over its older copy; returns bytes written.

        Call it after the state's commit, so a cut between the two leaves
        a state newer than the marks, never older.
        """
        return self.marks.commit(marks)

    def _commit_state(self, payload, value, full):
        if self.base is not None and not full:
            ops = diff(msgpack.unpack(self.base[2]), value)
            try:
                dp = msgpack.pack([self.base[0], self.base[1], ops])
            except ValueError as e:
                raise StoreError("checkpoint cannot be encoded: %s" % e)
            if len(dp) <= max(self.min_delta, len(self.base[2]) // self.delta_ratio):
                return self.delta.commit_payload(dp)
        n = self.full.commit_payload(payload)
        self.base = (self.full.seq, crc32(payload), payload)
        self.full_writes += 1
        return n
