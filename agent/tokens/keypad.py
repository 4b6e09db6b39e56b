"""OpenPAYGO Token keypad codes: bounded-work decoding and generation.

An OpenPAYGO token for value ``v`` at count ``n`` is the SipHash chain
started from the device's starting code with its last 3 (extended: 6)
digits replaced by ``base(v)``, stepped ``n`` times, with the base put back
into the last digits.  Because the chain's start depends on the value, the
reference decoder recomputes it from count 0 for every token it checks, so
its work grows with the counter.

Here a *checkpoint table* holds, for every one of the 1,000 standard-token
bases, the chain's code at a common count ``K`` that trails the lowest count
that could still be accepted.  Building it at count 0 costs nothing (it is
the starting code with each base); ``KeypadState.work(budget)`` moves it
forward in idle time (1,000 hashes per count).  Decoding a token then costs
at most ``last_count + 100 - K`` hashes (<= ~200 when the table is kept up),
whatever the counter.  Extended (12-digit) tokens have 10**6 bases, too many
for a table, so they are still searched from count 0 (bounded only by the
counter; see docs/tokens.md).

Semantics follow openpaygo 0.6.x: even counts ADD value, odd counts SET it;
value 998 on an odd count disables PAYG and 999 is a counter sync.
Differences (all stricter): a count is never accepted twice (the reference
forgets this when its used-counts list is empty), extended 998/999 are
decoded as disable/sync (the reference says SET), tokens must have exactly
9 or 12 digits, and nothing raises on bad input.
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

    def token(self, value, count):
        """The token digits for raw ``value`` at ``count`` (head-end, tests)."""
        base = self.base_for(value)
        code = self.first(base)
        for _ in range(count):
            code = self.next(code)
        m = self.modulus()
        code = code - code % m + base
        return ("%012d" if self.extended else "%09d") % code


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

    __slots__ = ("kind", "value", "count", "digits")

    def __init__(self, kind, value, count, digits):
        self.kind = kind
        self.value = value
        self.count = count
        self.digits = digits

    def __repr__(self):
        return "Decoded(%s, value=%d, count=%d)" % (self.kind, self.value, self.count)


# Outcomes of KeypadState.decode besides a Decoded.
MALFORMED = "malformed"  # not 9/12 digits: a typo, not a guess
INVALID = "invalid"  # no match: a wrong entry (counts toward lockout)
USED = "used"  # matched a count already used
OLD = "old"  # matched a count below the acceptance window


class KeypadState:
    """Durable anti-replay state of one device's keypad tokens.

    ``last`` is the highest accepted count, ``used`` a bitmask of used
    counts: bit i set means count ``last - i`` was used.  The checkpoint
    table (standard tokens) is ``table`` (1,000 big-endian u32 codes in
    chunks of CHUNK) at count ``tk``; for bases below ``cursor`` at ``tk + 1``.
    """

    __slots__ = ("chain", "ext_chain", "last", "used", "tk", "cursor", "table")

    def __init__(self, key, starting_code=None):
        self.chain = Chain(key, starting_code, False)
        self.ext_chain = Chain(key, self.chain.start, True)
        self.last = 0
        self.used = 0
        self.tk = 0
        self.cursor = 0
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

    def table_behind(self):
        """Counts the checkpoint table still has to move (0 when kept up)."""
        return max(0, self.last - _TABLE_LAG - self.tk)

    def work(self, budget):
        """Advance the checkpoint table by up to ``budget`` hashes; return hashes done.

        Call it from idle ticks: decoding stays correct either way, but each
        count the table lags costs one hash per decode.
        """
        done = 0
        target = self.last - _TABLE_LAG
        chain = self.chain
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

        Returns a ``Decoded`` or one of MALFORMED, INVALID, USED, OLD.  Never
        raises and changes nothing.
        """
        if not isinstance(digits, str):
            return MALFORMED
        n = len(digits)
        if n != 9 and n != 12:
            return MALFORMED
        for ch in digits:
            if ch < "0" or ch > "9":
                return MALFORMED
        token = int(digits)
        extended = n == 12
        chain = self.ext_chain if extended else self.chain
        m = chain.modulus()
        base = token % m
        value = chain.value_of(base)
        if extended:
            start_count, code = 0, chain.first(base)
            odd_kind = SET
            if value == DISABLE_VALUE:
                odd_kind = DISABLE_PAYG
            elif value == SYNC_VALUE:
                odd_kind = COUNTER_SYNC
            max_value = MAX_VALUE_EXT
        else:
            start_count, code = self._entry(base)
            odd_kind = SET
            if value == DISABLE_VALUE:
                odd_kind = DISABLE_PAYG
            elif value == SYNC_VALUE:
                odd_kind = COUNTER_SYNC
            elif value > MAX_VALUE:
                return INVALID  # 996/997: no generator makes these
            max_value = MAX_VALUE
        jump = MAX_JUMP_SYNC if odd_kind == COUNTER_SYNC else MAX_JUMP
        high = self.last + jump
        low = self.last - SYNC_BELOW + 1
        if low < 0:
            low = 0
        found = INVALID
        count = start_count
        while count <= high:
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
                        return Decoded(kind, v, count, digits)
                    if found == INVALID or verdict == USED:
                        found = verdict
            code = chain.next(code)
            count += 1
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

    # --------------------------------------------------------- snapshot

    def snapshot(self):
        """Plain-data state for the durable store."""
        return {
            "c": self.cursor,
            "k": self.tk,
            "l": self.last,
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
        self.cursor = cursor
        self.tk = tk
        self.last = last
        self.used = used
        self.table = [bytearray(c) for c in table]
