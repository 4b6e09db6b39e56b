"""OpenPAYGO Token keypad codes: bounded-work decoding and generation.

An OpenPAYGO token for value ``v`` at count ``n`` is the SipHash chain
started from the device's starting code with its last 3 (extended: 6)
digits replaced by ``base(v)``, stepped ``n`` times, with the base put back
into the last digits.  The hash input is the whole code, so after the first
step the chains of two bases share nothing: each base is its own chain,
and the only way to know base ``b``'s code at count ``n`` is to have a
stored code of that chain at some count ``c <= n`` and step ``n - c`` times.
The reference decoder stores none and recomputes from count 0 for every
token it checks, so its work grows with the counter.

Two kinds of stored chain codes (*checkpoints*) bound our work:

- the *table*: every one of the 1,000 standard-token bases at a common
  count ``K`` trailing the lowest count that could still be accepted.
  Building it at count 0 costs nothing; ``KeypadState.work(budget)`` moves
  it forward in idle time (1,000 hashes per count);
- *marks*: for the last ``MARKS`` bases of each length (standard and
  extended) that were accepted, the chain code at ``last - 63`` (the lowest
  count still acceptable), taken while decoding the token and advanced by
  ``work()`` at one hash per mark per count.

A decode starts from the highest checkpoint it has for the token's base and
walks to ``last + 64`` (counter sync: ``+ 100``).  With the table or a mark
kept up that is at most ~165 hashes whatever the counter.  An extended
token of a value none of the last ``MARKS`` accepted extended tokens had
has no checkpoint (10**6 bases: no table fits) and is walked from count 0:
its cost is ``last + 64`` hashes (see docs/tokens.md).

Restricted-digit tokens (4-key keypads, digits 1-4: 15 digits standard, 20
extended, as ``openpaygo.generate_token(restricted_digit_set=True)``) carry
the same code two bits per digit and are decoded the same way.

Semantics follow openpaygo 0.6.x: even counts ADD value, odd counts SET it;
value 998 on an odd count disables PAYG and 999 is a counter sync.
Differences (all stricter): a count is never accepted twice (the reference
forgets this when its used-counts list is empty), extended 998/999 are
decoded as disable/sync (the reference says SET), tokens must have exactly
9 or 12 digits (or 15 or 20 restricted digits), and nothing raises on bad
input.
"""

from agent.tokens.siphash import bswap32, key_words, siphash24_word, siphash24_words

ADD = "add"
SET = "set"
DISABLE_PAYG = "disable_payg"
COUNTER_SYNC = "counter_sync"

MAX_VALUE = 995  # standard tokens
MAX_VALUE_EXT = 999999
DISABLE_VALUE = 998
SYNC_VALUE = 999
MAX_JUMP = 64  # accepted counts above the last one
MAX_JUMP_SYNC = 100  # ... for a counter sync
OLDER_ADD = 16  # an unused ADD this close below the last count is accepted
SYNC_BELOW = 64  # a counter sync is accepted down to last - 63
WINDOW = 64  # counts remembered below the last one (used-counts bitmask)
MASK = (1 << WINDOW) - 1
BASES = 1000
CHUNK = 100  # table entries per bytearray: small blocks survive a fragmented heap
CHUNKS = BASES // CHUNK
_TABLE_LAG = SYNC_BELOW - 1  # table trails the last count by this much
MARKS = 8  # checkpoints kept per token length (standard, extended)
# The last RECENT accepted codes are remembered (6 bytes each; extended
# codes offset by EXT_KEY): one re-entered after its count fell below the
# window is answered already used instead of counting as a wrong entry.
# Cheaper than walking the chain from count 0 on every miss.
RECENT = 64
EXT_KEY = 10**12


class Chain:
    """The hash chain of one OpenPAYGO device (key and starting code)."""

    __slots__ = ("k0", "k1", "start", "extended")

    def __init__(self, key, starting_code=None, extended=False):
        self.k0, self.k1 = key_words(key)
        if starting_code is None:
            starting_code = self._fold32(siphash24_words(self.k0, self.k1, bytes(key)))
        if not isinstance(starting_code, int) or starting_code < 0 or starting_code > 999999999:
            raise ValueError("keypad starting code must be an int 0..999999999")
        self.start = starting_code
        self.extended = extended

    @staticmethod
    def _fold32(h):
        # The reference's "29.5 bits": XOR the halves, drop 2 bits, fold to 9 digits.
        t = (((h >> 32) ^ h) & 0xFFFFFFFF) >> 2
        if t > 999999999:
            t -= 73741825
        return t

    def next(self, code):
        """The chain's next code after ``code``."""
        # The message is the code big-endian (standard: 4 bytes twice);
        # siphash24_word takes its little-endian word, hence the byte swaps.
        if self.extended:
            m = (bswap32(code & 0xFFFFFFFF) << 32) | bswap32(code >> 32)
            t = siphash24_word(self.k0, self.k1, m) >> 24
            if t > 999999999999:
                t -= 99511627777
            return t
        w = bswap32(code)
        return self._fold32(siphash24_word(self.k0, self.k1, (w << 32) | w))

    def modulus(self):
        return 1000000 if self.extended else 1000

    def first(self, base):
        """The chain's code at count 0 for token base ``base``."""
        m = self.modulus()
        return self.start - self.start % m + base

    def base_for(self, value):
        return (self.start + value) % self.modulus()

    def value_of(self, base):
        return (base - self.start) % self.modulus()

    def token(self, value, count, restricted=False):
        """The token digits for raw ``value`` at ``count`` (head-end, tests).

        ``restricted``: digits 1-4 only, for 4-key keypads.
        """
        base = self.base_for(value)
        code = self.first(base)
        for _ in range(count):
            code = self.next(code)
        m = self.modulus()
        code = code - code % m + base
        if restricted:
            return to_restricted(code, self.extended)
        return ("%012d" if self.extended else "%09d") % code


def to_restricted(code, extended):
    """``code`` as restricted digits: two bits per digit 1-4, most significant first."""
    n = 20 if extended else 15
    out = []
    for i in range(n - 1, -1, -1):
        out.append("1234"[(code >> (2 * i)) & 3])
    return "".join(out)


def from_restricted(digits):
    """The code carried by restricted ``digits`` (each "1"-"4"), or None."""
    code = 0
    for ch in digits:
        if ch < "1" or ch > "4":
            return None
        code = (code << 2) | (ord(ch) - 49)
    return code


def next_count(count, kind):
    """The count the next token of ``kind`` uses after ``count`` (generator side)."""
    odd = count % 2
    if kind == ADD:
        return count + (1 if odd else 2)
    return count + (2 if odd else 1)


def raw_for(kind, value):
    """The raw token value for ``kind`` (ADD/SET take ``value``)."""
    if kind == DISABLE_PAYG:
        return DISABLE_VALUE
    if kind == COUNTER_SYNC:
        return SYNC_VALUE
    return value


class Decoded:
    """A keypad token that matched the chain (not yet accepted)."""

    __slots__ = ("kind", "value", "count", "digits", "mark", "key")

    def __init__(self, kind, value, count, digits, mark=None, key=None):
        self.kind = kind
        self.value = value
        self.count = count
        self.digits = digits
        self.mark = mark  # [extended, base, count, code]: a checkpoint for accept()
        self.key = key  # the code as a number (extended + EXT_KEY), remembered by accept()

    def __repr__(self):
        return "Decoded(%s, value=%d, count=%d)" % (self.kind, self.value, self.count)


# Outcomes of KeypadState.decode besides a Decoded.
MALFORMED = "malformed"  # not 9/12 digits: a typo, not a guess
INVALID = "invalid"  # no match: a wrong entry (counts toward lockout)
USED = "used"  # matched a count already used, or one of the last RECENT codes accepted
OLD = "old"  # matched a count below the acceptance window


class KeypadState:
    """Durable anti-replay state of one device's keypad tokens.

    ``last`` is the highest accepted count, ``used`` a bitmask of used
    counts: bit i set means count ``last - i`` was used.  The checkpoint
    table (standard tokens) is ``table`` (1,000 big-endian u32 codes in
    chunks of CHUNK) at count ``tk``; for bases below ``cursor`` at ``tk + 1``.
    ``marks`` holds up to MARKS checkpoints per token length as
    ``[extended (0/1), base, count, code]``, every count at or below the
    lowest count still acceptable.
    """

    __slots__ = ("chain", "ext_chain", "last", "used", "tk", "cursor", "table", "marks", "recent")

    def __init__(self, key, starting_code=None):
        self.chain = Chain(key, starting_code, False)
        self.ext_chain = Chain(key, self.chain.start, True)
        self.last = 0
        self.used = 0
        self.tk = 0
        self.cursor = 0
        self.marks = []
        self.recent = b""  # the last RECENT accepted codes, 6 bytes each, oldest first
        self.table = [bytearray(4 * CHUNK) for _ in range(CHUNKS)]
        for b in range(BASES):
            self._put(b, self.chain.first(b))

    # ------------------------------------------------------------ table

    def _put(self, base, code):
        # Byte by byte: no temporary objects to fragment a small heap.
        t = self.table[base // CHUNK]
        i = 4 * (base % CHUNK)
        t[i] = (code >> 24) & 0xFF
        t[i + 1] = (code >> 16) & 0xFF
        t[i + 2] = (code >> 8) & 0xFF
        t[i + 3] = code & 0xFF

    def _entry(self, base):
        t = self.table[base // CHUNK]
        i = 4 * (base % CHUNK)
        code = (t[i] << 24) | (t[i + 1] << 16) | (t[i + 2] << 8) | t[i + 3]
        return (self.tk + 1 if base < self.cursor else self.tk), code

    def _mark(self, ext, base):
        for m in self.marks:
            if m[0] == ext and m[1] == base:
                return m
        return None

    def _checkpoint(self, ext, base):
        # (count, code): the highest stored code of base's chain.
        m = self._mark(ext, base)
        if ext:
            if m is None:
                return 0, self.ext_chain.first(base)
            return m[2], m[3]
        c, code = self._entry(base)
        if m is not None and m[2] > c:
            return m[2], m[3]
        return c, code

    def table_behind(self):
        """Counts the checkpoint table still has to move (0 when kept up)."""
        return max(0, self.last - _TABLE_LAG - self.tk)

    def work(self, budget):
        """Advance the checkpoints by up to ``budget`` hashes; return hashes done.

        Call it from idle ticks: decoding stays correct either way, but each
        count a checkpoint lags costs one hash per decode of its bases.
        Marks come first (one hash per mark per count, and they serve the
        values in use), then the table (1,000 hashes per count).
        """
        done = 0
        target = self.last - _TABLE_LAG
        chain = self.chain
        for m in self.marks:
            if not m[0] and m[2] <= self.tk:
                continue  # the table has caught up with it; dropped on the next accept
            step = self.ext_chain.next if m[0] else chain.next
            while done < budget and m[2] < target:
                m[3] = step(m[3])
                m[2] += 1
                done += 1
        while done < budget and self.tk < target:
            b = self.cursor
            self._put(b, chain.next(self._entry(b)[1]))
            done += 1
            self.cursor += 1
            if self.cursor == BASES:
                self.cursor = 0
                self.tk += 1
        return done

    # ----------------------------------------------------------- decode

    def _is_used(self, count):
        if count > self.last:
            return False
        d = self.last - count
        return d < WINDOW and (self.used >> d) & 1 == 1

    def _verdict(self, kind, count):
        # None = acceptable, else USED / OLD.
        if count > self.last:
            return None
        if self._is_used(count):
            return USED
        if kind == COUNTER_SYNC and count > self.last - SYNC_BELOW:
            return None
        if kind == ADD and count > self.last - OLDER_ADD:
            return None
        return OLD

    def decode(self, digits):
        """Match ``digits`` (a str) against the chain near the last count.

        Accepts 9 or 12 decimal digits, or 15 or 20 restricted digits (1-4).
        Returns a ``Decoded`` or one of MALFORMED, INVALID, USED, OLD.  Never
        raises and changes nothing.
        """
        if not isinstance(digits, str):
            return MALFORMED
        n = len(digits)
        if n == 15 or n == 20:
            token = from_restricted(digits)
            if token is None:
                return MALFORMED
            extended = n == 20
            if token > (999999999999 if extended else 999999999):
                return INVALID  # well-typed but no code maps there: a wrong entry
        elif n == 9 or n == 12:
            for ch in digits:
                if ch < "0" or ch > "9":
                    return MALFORMED
            token = int(digits)
            extended = n == 12
        else:
            return MALFORMED
        chain = self.ext_chain if extended else self.chain
        m = chain.modulus()
        base = token % m
        value = chain.value_of(base)
        odd_kind = SET
        if value == DISABLE_VALUE:
            odd_kind = DISABLE_PAYG
        elif value == SYNC_VALUE:
            odd_kind = COUNTER_SYNC
        elif not extended and value > MAX_VALUE:
            return INVALID  # 996/997: no generator makes these
        max_value = MAX_VALUE_EXT if extended else MAX_VALUE
        count, code = self._checkpoint(1 if extended else 0, base)
        jump = MAX_JUMP_SYNC if odd_kind == COUNTER_SYNC else MAX_JUMP
        high = self.last + jump
        low = self.last - SYNC_BELOW + 1
        if low < 0:
            low = 0
        found = INVALID
        # The code at ``low`` becomes this base's mark when the token is
        # accepted: low only grows, so it stays at or below every later low.
        # (At count 0 a mark is worthless: the chain's start is free.)
        mark = None
        while count <= high:
            if count == low and low > 0:
                mark = [1 if extended else 0, base, count, code]
            if count >= low and code - code % m + base == token:
                if count % 2:
                    kind = odd_kind
                elif value <= max_value:
                    kind = ADD
                else:
                    kind = None  # 998/999 on an even count: no generator makes it
                if kind is not None:
                    verdict = self._verdict(kind, count)
                    if verdict is None:
                        v = value if kind in (ADD, SET) else 0
                        return Decoded(kind, v, count, digits, mark, token + EXT_KEY if extended else token)
                    if found == INVALID or verdict == USED:
                        found = verdict
            code = chain.next(code)
            count += 1
        if found == INVALID and self._recent(token + EXT_KEY if extended else token) >= 0:
            return USED  # re-entered after it fell out of the window: not a guess
        return found

    def accept(self, decoded):
        """Mark ``decoded``'s count used (after the caller committed its effect)."""
        count = decoded.count
        if count > self.last:
            shift = count - self.last
            self.used = (self.used << shift) & MASK if shift < WINDOW else 0
            self.last = count
        self.used |= 1 << (self.last - count)
        if decoded.kind != ADD:
            # SET, disable and sync supersede every older token (as the
            # reference's update_used_counts does for its 16-count range).
            self.used = MASK
        if decoded.mark is not None:
            self._keep(decoded.mark)
        if decoded.key is not None and self._recent(decoded.key) < 0:
            self.recent = (self.recent + decoded.key.to_bytes(6, "big"))[-6 * RECENT :]

    def _recent(self, key):
        # Index of ``key`` among the remembered codes, or -1.
        want = key.to_bytes(6, "big")
        r = self.recent
        for i in range(0, len(r), 6):
            if r[i : i + 6] == want:
                return i
        return -1

    def _keep(self, mark):
        ext, base = mark[0], mark[1]
        old = self._mark(ext, base)
        if old is not None:
            if old[2] >= mark[2]:
                return
            self.marks.remove(old)
        # Standard marks the table has caught up with serve no purpose.
        self.marks = [m for m in self.marks if m[0] or m[2] > self.tk]
        if not ext and mark[2] <= self.tk:
            return
        self.marks.append([ext, base, mark[2], mark[3]])
        mine = [m for m in self.marks if m[0] == ext]
        if len(mine) > MARKS:
            oldest = mine[0]
            for m in mine:
                if m[2] < oldest[2]:
                    oldest = m
            self.marks.remove(oldest)

    # --------------------------------------------------------- snapshot

    def snapshot(self):
        """Plain-data state for the durable store."""
        marks = sorted([list(m) for m in self.marks])
        return {
            "c": self.cursor,
            "h": bytes(self.recent),
            "k": self.tk,
            "l": self.last,
            "m": marks,
            "s": self.chain.start,
            "t": [bytes(c) for c in self.table],
            "u": self.used,
        }

    def restore(self, snap):
        """Load ``snapshot()`` output; ValueError if it does not fit this key."""
        try:
            cursor, tk, last, start, table, used = (
                snap["c"], snap["k"], snap["l"], snap["s"], snap["t"], snap["u"]
            )
        except (KeyError, TypeError):
            raise ValueError("keypad snapshot: missing fields")
        marks = snap.get("m", [])  # absent in snapshots written before marks existed
        recent = snap.get("h", b"")  # ... and before recent codes were kept
        if not isinstance(recent, (bytes, bytearray)) or len(recent) % 6 or len(recent) > 6 * RECENT:
            raise ValueError("keypad snapshot: field h must be up to %d codes of 6 bytes" % RECENT)
        for name, v in (("c", cursor), ("k", tk), ("l", last), ("u", used)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError("keypad snapshot: field %s must be a non-negative int" % name)
        if start != self.chain.start:
            raise ValueError("keypad snapshot belongs to another starting code")
        if not isinstance(table, list) or len(table) != CHUNKS:
            raise ValueError("keypad snapshot: table must be a list of %d chunks" % CHUNKS)
        for c in table:
            if not isinstance(c, (bytes, bytearray)) or len(c) != 4 * CHUNK:
                raise ValueError("keypad snapshot: table chunks must be %d bytes" % (4 * CHUNK))
        if cursor >= BASES or used > MASK or tk > last:
            raise ValueError("keypad snapshot: inconsistent counters")
        kept = _check_marks(marks, last)
        self.cursor = cursor
        self.tk = tk
        self.last = last
        self.used = used
        self.table = [bytearray(c) for c in table]
        self.marks = kept
        self.recent = bytes(recent)


def _check_marks(marks, last):
    # Validated copy of a snapshot's marks; ValueError naming what is wrong.
    if not isinstance(marks, (list, tuple)) or len(marks) > 2 * MARKS:
        raise ValueError("keypad snapshot: field m must be a list of at most %d marks" % (2 * MARKS))
    out = []
    for m in marks:
        if not isinstance(m, (list, tuple)) or len(m) != 4:
            raise ValueError("keypad snapshot: each mark must be [extended, base, count, code]")
        for v in m:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError("keypad snapshot: mark fields must be non-negative ints")
        ext, base, count, code = m
        top_base, top_code = (999999, 999999999999) if ext else (999, 999999999)
        if ext > 1 or base > top_base or code > top_code or count > max(0, last - _TABLE_LAG):
            raise ValueError("keypad snapshot: mark %r out of range" % (list(m),))
        for o in out:
            if o[0] == ext and o[1] == base:
                raise ValueError("keypad snapshot: two marks for one base")
        out.append([ext, base, count, code])
    return out
