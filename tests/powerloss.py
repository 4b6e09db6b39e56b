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

Two more kinds of damage: ``SimFS(fail_at=k, fail_ops=n)`` makes
operations ``k`` .. ``k+n-1`` fail with an I/O error (the power stays on
and the code under test goes on), and ``flip(fs, path, bit)`` flips one bit of a file on the disk (a
bad flash cell).  ``LinkedHarness`` drives the real agent (Device + Store +
TokenGuard + Session + LinkedMeter) through all of them.
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

    def __init__(self, cut_at=None, fail_at=None, fail_ops=1):
        self.cut_at = cut_at
        self.fail_at = fail_at
        self.fail_end = fail_at + fail_ops if fail_at is not None else None
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
        if self.fail_at is not None and self.fail_at <= self.ops < self.fail_end:
            raise OSError(5, "injected I/O error at " + what)
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

    def files(self):
        """Paths that exist, sorted."""
        return sorted(self.ns)

    def image(self):
        """What a disk holds (durable), hashable: equal images boot alike."""
        return tuple((p, self.durable_ns[p].durable) for p in sorted(self.durable_ns))

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


def exhaustive(workload, check, journal_factory, variants=VARIANTS, step=1, seen=None):
    """Cut power at every ``step``-th operation under every variant; returns checks run.

    The workload runs once per cut; ``check`` gets each distinct survivor
    (it must not change the journal).  With ``seen(fs, journal)`` -> key,
    a survivor whose key was checked already is skipped: the same disk
    and the same outside world give the same verdict.
    """
    total, _ = count_ops(workload, journal_factory)
    runs = 0
    done = set()
    for cut_at in range(1, total + 1, step):
        fs = SimFS(cut_at)
        journal = journal_factory()
        try:
            workload(fs, journal)
        except PowerCut:
            pass
        else:
            raise AssertionError("workload finished without reaching cut %d" % cut_at)
        for variant in variants:
            survivor = fs.survivor(variant)
            key = (cut_at, survivor.image()) if seen is None else seen(survivor, journal)
            if key in done:
                continue
            done.add(key)
            check(survivor, journal, "cut at op %d (%s) variant %s" % (cut_at, fs.trace[-1], variant))
            runs += 1
    return runs


def flip(fs, path, bit):
    """Flip bit ``bit`` of ``path`` on the disk of ``fs`` (a survivor: cached == durable)."""
    ino = fs.ns[path]
    data = bytearray(ino.cached)
    data[bit // 8] ^= 1 << (bit % 8)
    ino.cached = ino.durable = bytes(data)


# ------------------------------------------------------------------ the real agent
#
# The workload runs the agent as pmeter/agent_cli.py wires it: Device over a
# Store over the simulated file system, the TokenGuard and the link Session
# registered as its parts by LinkedMeter.  Sealed MQTT messages carrying
# top-up and command tokens arrive as a broker delivers them (with a QoS 1
# redelivery, an out-of-order pair, a re-vended token and a garbage payload);
# what the meter publishes reaches a head-end model (``Hub``) that PUBACKs
# every outbox entry.  After the damage the meter reboots on what the disk
# holds and the head-end re-sends everything: the same messages, then every
# token again under a new command sequence.

from agent import results  # noqa: E402  (test scaffolding below the harness)
from agent.codec import msgpack  # noqa: E402
from agent.device import Device  # noqa: E402
from agent.events import PowerFail, Pulses, Tick  # noqa: E402
from agent.link import topics  # noqa: E402
from agent.link.agent import LinkedMeter  # noqa: E402
from agent.link.session import Session  # noqa: E402
from agent.store import Store  # noqa: E402
from agent.tokens import TokenGuard  # noqa: E402

MID = "000000000042"
DIR = "/d"
WALL0 = 1_790_000_000
OPENING = 3_000  # 0.3 CNY: runs out within the workload, so the relay trips and recloses
PRICE = 5883
CONSTANT = 3200
MASTER = bytes(range(100, 132))

# minute -> what the broker delivers then: ("token", ref, n, seq, kind, amount_or_args),
# ("again", n) a QoS 1 redelivery of message n, ("junk",) a payload no key opens.
PLAN = {
    6: ("token", "t1", 1, 1, "topup", 2_000),
    7: ("again", 1),
    8: ("token", "lim", 2, 2, "set_limits", {"alarm1": 20_000, "alarm2": 4_000}),
    11: ("token", "t2", 3, 3, "topup", 8_000),
    12: ("junk",),
    14: ("token", "t4", 5, 5, "topup", 3_000),
    15: ("token", "t3", 4, 4, "topup", 20_000),
    17: ("token", "t3-again", 6, 4, "topup", 20_000),  # the same token vended again
}
MINUTES = 19
CLOSED = ("connected", "guarantee", "forced")  # relay states with the relay closed
RETRY_N = 100  # the head-end's re-sends after the reboot use command sequences from here


def summary_of(rig):
    """What a commit must carry, comparable across a reboot (Boot changes none of it)."""
    m = rig.device.meter
    return (m.regs.total, m.balance, m.account.credited,
            msgpack.pack(rig.guard.snapshot()), msgpack.pack(rig.session.guard.snapshot()))


class Hub:
    """The head-end behind the broker: every message the meter got out, opened."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.epoch = None
        self.entries = {}  # (epoch, q) -> packed body: an outbox entry is never reused
        self.acks = []  # (ref, code) in arrival order
        self.problems = []

    def copy(self):
        h = Hub(self.fleet)
        h.epoch = self.epoch
        h.entries = dict(self.entries)
        h.acks = list(self.acks)
        h.problems = list(self.problems)
        return h

    def receive(self, outs, linked, wall):
        """Take ``outs`` as a broker would, PUBACK each outbox entry; returns the new acks."""
        new = []
        queue = list(outs)
        while queue:
            o = queue.pop(0)
            if o.seq:
                queue.extend(linked.puback(o.seq, wall))
            meter_id, leaf, fields = self.fleet.open(o.topic, o.payload)
            assert meter_id == MID
            if leaf == topics.STATUS:
                continue
            body = fields.get("b")
            if leaf == topics.BIRTH:
                self.epoch = body["epoch"]
                continue
            if "q" in fields:
                key = (self.epoch, fields["q"])
                packed = msgpack.pack(body)
                seen = self.entries.setdefault(key, packed)
                if seen != packed:
                    self.problems.append("outbox entry (epoch %r, q %r) reused for %r" % (key[0], key[1], body))
                if seen is not packed:
                    continue  # a re-send (PUBACK removals are committed lazily): recorded once
            if leaf == topics.ACK:
                self.acks.append((body["r"], body["code"]))
                new.append((body["r"], body["code"]))
        return new


class _Stop(BaseException):
    """Ends a workload early: what it was run for has been checked."""


class LinkedJournal:
    """What the world outside the meter saw before the damage."""

    def __init__(self, hub):
        self.hub = hub
        self.sent = []  # names of messages delivered (in order)
        self.commits = []  # summaries of commits that returned
        self.attempt = None  # summary of the commit in flight
        self.values = None  # packed values of every commit tried, when kept
        self.boots = 0
        self.on_ack = None  # called with the rig when an accepted ack reached the head-end
        self.on_close = None  # ... when a close pulse went to the relay


class _WatchedStore:
    """A Store that tells the journal what each commit carries."""

    def __init__(self, store, journal):
        self.store = store
        self.journal = journal
        self.rig = None

    def __getattr__(self, name):
        return getattr(self.store, name)

    def commit(self, value, full=False):
        j = self.journal
        j.attempt = summary_of(self.rig)
        if j.values is not None:
            j.values.add(msgpack.pack(value))
        n = self.store.commit(value, full)
        j.commits.append(j.attempt)
        j.attempt = None
        return n


class LinkedRig:
    """One power-up of the agent on ``fs``: built and booted, connected to the hub."""

    def __init__(self, harness, fs, journal, wall, mono):
        journal.boots += 1
        self.h = harness
        self.fs = fs
        self.journal = journal
        self.wall = wall
        self.mono = mono
        store = _WatchedStore(Store(fs, DIR, MID), journal)
        store.rig = self
        self.device = Device(harness.cfg, store)
        self.guard = TokenGuard.from_config(MID, harness.cfg["tokens"])
        # A new nonce prefix (and so a new epoch, if the store had none) per power-up.
        prefix = bytes((journal.boots & 0x7F, 0x5A, 0xA5, 0x3C, 0, 0, 0, journal.boots & 0xFF))
        self.session = Session(MID, harness.fleet.keys(MID), prefix)
        self.linked = LinkedMeter(self.device, self.guard, self.session, telemetry_s=harness.telemetry_s)
        self.linked.boot(wall, mono)
        self.release(self.linked.connected(wall, mono))

    def release(self, outs):
        """Outs the meter handed to the transport reach the head-end."""
        new = self.journal.hub.receive(outs, self.linked, self.wall)
        if self.journal.on_ack is not None and any(code == results.ACCEPTED for _r, code in new):
            self.journal.on_ack(self)

    def hardware(self, hw):
        """Actions for the hardware: a close pulse is what the disk must justify."""
        if self.journal.on_close is not None and any(a.kind == "pulse_coil" and a.coil == "set" for a in hw):
            self.journal.on_close(self)

    def step(self, event):
        self.wall = event.wall
        self.mono = event.mono
        hw, outs = self.linked.handle(event, self.wall)
        self.hardware(hw)
        self.release(outs)

    def deliver(self, name):
        """The broker delivers message ``name`` (see LinkedHarness.messages)."""
        self.journal.sent.append(name)
        topic, payload = self.h.messages[name]
        hw, outs = self.linked.received(topic, payload, self.wall, self.mono)
        self.hardware(hw)
        self.release(outs)


class LinkedHarness:
    """Workload and invariants of the real agent under power cuts, I/O errors and bit flips."""

    def __init__(self, telemetry_s=240):
        from agent import settings
        from headend.link import Fleet

        self.fleet = Fleet(MASTER)
        self.telemetry_s = telemetry_s
        self.cfg = settings.load({
            "meter": {"id": MID, "constant": CONSTANT},
            "account": {"opening_balance": OPENING, "trip_delay_s": 60, "alarm1": 10_000, "alarm2": 5_000},
            "store": {"checkpoint_s": 300},
            "tariff": {"kind": "flat", "price": PRICE},
            "tokens": {"key": self.fleet.meter_key(MID).hex()},
        })
        self.messages = {}  # name -> (topic, payload), sealed once: a re-send is the same bytes
        self.token_of = {}  # ack ref -> token id (its sequence)
        self.tokens = {}  # token id -> token bytes
        self.amounts = {}  # token id -> amount, for top-ups
        refs = {}
        for minute in sorted(PLAN):
            item = PLAN[minute]
            if item[0] != "token":
                continue
            _, ref, n, seq, kind, arg = item
            if seq not in self.tokens:
                if kind == "topup":
                    self.tokens[seq] = self.fleet.topup_token(MID, seq, arg, WALL0)
                    self.amounts[seq] = arg
                else:
                    self.tokens[seq] = self.fleet.command_token(MID, seq, kind, arg, WALL0)
            self.messages[n] = self.fleet.seal_token(MID, n, self.tokens[seq], ref, WALL0)
            self.token_of[ref] = seq
            refs[n] = ref
        self.junk = (topics.topic(MID, topics.CMD), b"\x00" * 40)
        self.messages["junk"] = self.junk
        self.ref_of = refs  # command sequence -> ack ref
        for i, seq in enumerate(sorted(self.tokens)):
            ref = "retry-%d" % seq
            self.messages["retry-%d" % seq] = self.fleet.seal_token(MID, RETRY_N + i, self.tokens[seq], ref, WALL0)
            self.token_of[ref] = seq
        self.credit_total = sum(self.amounts.values())

    def journal(self):
        """A fresh journal (the outside world before the workload)."""
        return LinkedJournal(Hub(self.fleet))

    # -------------------------------------------------------------- workload

    def workload(self, fs, journal):
        """Boot, meter 8 kW for MINUTES minutes, take the PLAN's messages, then a power-fail commit."""
        rig = LinkedRig(self, fs, journal, WALL0, 0)
        wall, mono = WALL0, 0
        for minute in range(1, MINUTES + 1):
            for _half in (0, 1):
                wall += 30
                mono += 30_000
                count = 213 if rig.device.meter.relay_position is not False else 0  # 8 kW at 3,200 imp/kWh
                rig.step(Pulses(count, wall, mono))
                rig.step(Tick(wall, mono + 100))
            item = PLAN.get(minute)
            if item is None:
                continue
            if item[0] == "token":
                rig.deliver(item[2])
            elif item[0] == "again":
                rig.deliver(item[1])
            else:
                rig.deliver("junk")
        rig.step(PowerFail(wall, mono))
        return rig

    # -------------------------------------------------------------- invariants

    def accepted(self, hub):
        """Token id -> number of ACCEPTED acks the head-end got for it."""
        out = {}
        for ref, code in hub.acks:
            if code == results.ACCEPTED and ref in self.token_of:
                seq = self.token_of[ref]
                out[seq] = out.get(seq, 0) + 1
        return out

    def check_ledger(self, rig, label):
        m = rig.device.meter
        a = m.account
        assert m.balance == OPENING + a.credited - a.charged, "%s: balance %d != opening %d + credited %d - charged %d" % (
            label, m.balance, OPENING, a.credited, a.charged)
        assert a.charged == m.regs.total * PRICE // (1000 * CONSTANT), "%s: charged %d for %d units" % (
            label, a.charged, m.regs.total)

    def check(self, fs, journal, label):
        """Reboot on ``fs`` after the damage; the head-end re-sends everything; check every invariant."""
        hub = journal.hub.copy()
        after = LinkedJournal(hub)
        after.boots = journal.boots
        rig = LinkedRig(self, fs, after, WALL0 + 5000, 0)
        assert not rig.device.state_lost, "%s: state lost after a power cut" % label
        got = after.commits[0]  # the boot commit carries what was restored
        if journal.commits:
            allowed = [journal.commits[-1]] + ([journal.attempt] if journal.attempt is not None else [])
            assert got in allowed, "%s: restored %r, expected the last commit or the one in flight" % (
                label, got[:3])
        self.check_ledger(rig, label)
        # Before any re-send: whatever the head-end saw acknowledged is remembered.
        for ref, code in journal.hub.acks:
            seq = self.token_of.get(ref)
            if seq is not None and code == results.ACCEPTED:
                assert rig.guard.check(self.tokens[seq], rig.wall)[0] != results.ACCEPTED, (
                    "%s: token %d acknowledged as applied but usable again after the reboot" % (label, seq))
        for n in sorted(self.ref_of):
            ref = self.ref_of[n]
            if any(r == ref for r, _c in journal.hub.acks):
                assert rig.session.guard.check(n) is not None, (
                    "%s: command sequence %d was acknowledged but is new again after the reboot" % (label, n))
        # The head-end re-sends what it has no answer for (the same bytes), then every token
        # under a new sequence.
        answered = set(r for r, _c in journal.hub.acks)
        for name in journal.sent:
            if name == "junk" or self.ref_of.get(name) not in answered:
                rig.deliver(name)
        for seq in sorted(self.tokens):
            rig.deliver("retry-%d" % seq)
        counts = self.accepted(hub)
        for seq in sorted(self.tokens):
            assert counts.get(seq) == 1, "%s: token %d acknowledged as applied %d times" % (label, seq, counts.get(seq, 0))
        m = rig.device.meter
        assert m.account.credited == self.credit_total, "%s: credited %d, the top-ups add up to %d" % (
            label, m.account.credited, self.credit_total)
        self.check_ledger(rig, label)
        assert m.limits["alarm1"] == 20_000, "%s: the acknowledged set_limits command is lost" % label
        assert not hub.problems, "%s: %s" % (label, hub.problems[0])
        rig.step(Tick(rig.wall + 100, rig.mono + 100_000))
        if m.relay_state == "tripped_arrears":
            assert not m.account.may_close(), "%s: credit restored but relay still tripped" % label

    # -------------------------------------------------------------- campaigns

    @staticmethod
    def seen(fs, journal):
        """Everything ``check`` depends on: the disk and what the outside world saw."""
        hub = journal.hub
        return (fs.image(), hub.epoch, tuple(hub.acks), tuple(sorted(hub.entries.items())), tuple(journal.sent),
                journal.commits[-1] if journal.commits else None, journal.attempt)

    def power_cuts(self, variants=VARIANTS, step=1):
        """Cut power at every ``step``-th file operation under every variant; returns checks run."""
        return exhaustive(self.workload, self.check, self.journal, variants, step, self.seen)

    def io_errors(self, fail_ops=6):
        """Failing file operations (power on); the disk alone must justify what leaves the meter.

        ``fail_ops`` operations in a row fail (a commit and its immediate
        retries), starting at each point where a failure leaves a different
        disk: before the rename (each ``sync`` of a new file) and after it
        (each ``sync_dir``).  When the first accepted ack after the failure
        reaches the head-end, the durable image (``survivor("lost")``) gets
        the full check and the run stops; when a close pulse goes to the
        relay, the durable image must boot with the relay closed.  Returns runs.
        """
        fs = SimFS()
        self.workload(fs, self.journal())
        points = [i + 1 for i, what in enumerate(fs.trace) if what.startswith("sync")]
        for k in points:
            fs = SimFS(fail_at=k, fail_ops=fail_ops)
            journal = self.journal()

            def on_ack(rig, k=k):
                if rig.fs.ops >= k:
                    self.check(rig.fs.survivor("lost"), rig.journal, "I/O error at op %d, ack released" % k)
                    raise _Stop()

            def on_close(rig, k=k):
                if rig.fs.ops >= k:
                    after = LinkedJournal(rig.journal.hub.copy())
                    after.boots = rig.journal.boots
                    booted = LinkedRig(self, rig.fs.survivor("lost"), after, rig.wall, rig.mono)
                    assert booted.device.meter.relay_state in CLOSED, (
                        "I/O error at op %d: relay closed, the disk says %s" % (k, booted.device.meter.relay_state))

            journal.on_ack = on_ack
            journal.on_close = on_close
            try:
                self.workload(fs, journal)
            except _Stop:
                continue
            journal.on_ack = journal.on_close = None
            self.check(fs.survivor("lost"), journal, "I/O error at op %d, after the run" % k)
        return len(points)

    def bit_flips(self, per_file=24, seed=1):
        """Flip single bits of the files a full run left; returns runs.

        Whatever the store then offers must be a value once committed (never
        a damaged one taken for good), and the agent boots either on a state
        it committed or as ``state_lost``.
        """
        import random

        rng = random.Random(seed)
        fs = SimFS()
        journal = self.journal()
        journal.values = set()
        self.workload(fs, journal)
        committed = set(journal.commits)
        runs = 0
        for path in fs.files():
            size = len(fs.ns[path].durable)
            for _ in range(per_file):
                bit = rng.randrange(8 * size)
                damaged = fs.survivor("kept")
                flip(damaged, path, bit)
                label = "bit %d of %s flipped" % (bit, path)
                loads, _findings, _had = Store(damaged, DIR, MID).load()
                for loaded in loads:
                    assert msgpack.pack(loaded.value) in journal.values, (
                        "%s: the store offers a value never committed (%s)" % (label, loaded.source))
                after = LinkedJournal(journal.hub.copy())
                after.boots = journal.boots
                rig = LinkedRig(self, damaged, after, WALL0 + 5000, 0)
                if not rig.device.state_lost:
                    assert after.commits[0] in committed, "%s: booted on a state never committed" % label
                    self.check_ledger(rig, label)
                runs += 1
        return runs
