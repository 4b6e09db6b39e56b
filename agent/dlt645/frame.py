"""DL/T 645-2007 frames: encoding, and a stream parser that never raises.

Wire format: ``[FE..] 68 A0..A5 68 C L DATA CS 16``.  The ``FE`` wake-up
bytes are not part of the frame; ``CS`` is the byte sum (mod 256) from the
first ``68`` to the end of DATA; every DATA byte travels +0x33.

Hand-written rather than using the ``dlt645`` package because that package
needs CPython (typing, loguru); tests prove identical bytes against it.
"""

START = 0x68
END = 0x16
WAKE = 0xFE
OFFSET = 0x33
MAX_DATA = 200  # the standard's limit for any frame (reads; writes are <= 50)
HEADER = 10  # 68 + 6 address + 68 + C + L

# Control byte bits.
DIR_REPLY = 0x80
ABNORMAL = 0x40
MORE = 0x20
FUNCTION = 0x1F

# Function codes.
BROADCAST_TIME = 0x08
READ = 0x11
READ_MORE = 0x12
READ_ADDRESS = 0x13
WRITE = 0x14
WRITE_ADDRESS = 0x15
FREEZE = 0x16
CHANGE_BAUD = 0x17
CHANGE_PASSWORD = 0x18
CLEAR_DEMAND = 0x19
CLEAR_METER = 0x1A
CLEAR_EVENTS = 0x1B
CONTROL = 0x1C

# ERR byte bits of an abnormal reply.
ERR_OTHER = 0x01
ERR_NO_DATA = 0x02
ERR_PASSWORD = 0x04
ERR_BAUD = 0x08
ERR_YEAR_ZONES = 0x10
ERR_DAY_SLOTS = 0x20
ERR_TARIFFS = 0x40

BROADCAST = b"\x99\x99\x99\x99\x99\x99"
WILDCARD = b"\xaa\xaa\xaa\xaa\xaa\xaa"


class Frame:
    """One checked frame: 6 wire address bytes, control byte, decoded data."""

    __slots__ = ("address", "control", "data")

    def __init__(self, address, control, data):
        self.address = bytes(address)
        self.control = control
        self.data = bytes(data)

    @property
    def function(self):
        """The function code (D4..D0)."""
        return self.control & FUNCTION

    @property
    def is_reply(self):
        """True for a slave's reply (D7 = 1)."""
        return bool(self.control & DIR_REPLY)

    @property
    def is_abnormal(self):
        """True for an abnormal reply (D6 = 1); ``data[0]`` is the ERR byte."""
        return bool(self.control & ABNORMAL)

    def encode(self, preamble=4):
        """The frame's wire bytes."""
        return encode(self.address, self.control, self.data, preamble)

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.address == other.address
            and self.control == other.control
            and self.data == other.data
        )

    def __repr__(self):
        return "Frame(%s, 0x%02X, %s)" % (hexlify(self.address), self.control, hexlify(self.data))


def hexlify(data):
    """Bytes as spaced upper-case hex, for logs and error messages."""
    return " ".join("%02X" % b for b in data)


def encode(address, control, data=b"", preamble=4):
    """Wire bytes of a frame from its 6 address bytes, control byte and decoded data.

    ``preamble`` FE wake-up bytes (0..4) go in front.  Raises ValueError on
    an address that is not 6 bytes, a control byte out of range or more
    than 200 data bytes.
    """
    if len(address) != 6:
        raise ValueError("address: must be 6 bytes, got %d" % len(address))
    if not 0 <= control <= 0xFF:
        raise ValueError("control: must be a byte, got %r" % (control,))
    if len(data) > MAX_DATA:
        raise ValueError("data: %d bytes exceed the limit of %d" % (len(data), MAX_DATA))
    if not 0 <= preamble <= 4:
        raise ValueError("preamble: must be 0..4 wake-up bytes, got %r" % (preamble,))
    out = bytearray(preamble + HEADER + len(data) + 2)
    for i in range(preamble):
        out[i] = WAKE
    p = preamble
    out[p] = START
    out[p + 1 : p + 7] = address
    out[p + 7] = START
    out[p + 8] = control
    out[p + 9] = len(data)
    i = p + HEADER
    for b in data:
        out[i] = (b + OFFSET) & 0xFF
        i += 1
    cs = 0
    for j in range(p, i):
        cs += out[j]
    out[i] = cs & 0xFF
    out[i + 1] = END
    return bytes(out)


def decode_one(raw):
    """The single frame in ``raw`` (wake-up bytes allowed), or None if it is not exactly one."""
    parser = Parser()
    frames = parser.feed(raw)
    if len(frames) != 1 or parser.pending():
        return None
    return frames[0]


class Parser:
    """Incremental frame finder: feed byte chunks, get complete checked frames.

    Anything that is not a well-formed frame is skipped one byte at a time,
    so a frame hidden after garbage or after a broken frame is still found.
    Candidates that fail a check (second 68, L <= 200, checksum, 16) are
    dropped and counted in ``rejected``; nothing here raises on any input.
    """

    __slots__ = ("_buf", "rejected", "frames")

    def __init__(self):
        self._buf = bytearray()
        self.rejected = 0  # candidate frames that failed a check
        self.frames = 0  # frames delivered

    def pending(self):
        """Number of buffered bytes that may still start a frame."""
        return len(self._buf)

    def reset(self):
        """Forget any partial frame."""
        self._buf = bytearray()

    def feed(self, chunk):
        """Add received bytes; return the list of frames they completed."""
        self._buf.extend(chunk)
        return self._scan(0, False)

    def timeout(self):
        """The line went quiet with a partial frame buffered: give up on it.

        A truncated frame whose length byte asks for more data than ever
        arrives would otherwise swallow the next real frame.  Rescans the
        buffer treating every incomplete candidate as broken; returns the
        complete frames found and empties the buffer.
        """
        if not self._buf:
            return []
        found = self._scan(0, True)
        self._buf = bytearray()
        return found

    def _scan(self, i, final=False):
        buf = self._buf
        n = len(buf)
        found = []
        while True:
            i = buf.find(b"\x68", i)
            if i < 0:
                i = n
                break
            if n - i < HEADER:
                if final:
                    self.rejected += 1
                    i += 1
                    continue
                break
            if buf[i + 7] != START or buf[i + 9] > MAX_DATA:
                self.rejected += 1
                i += 1
                continue
            length = buf[i + 9]
            end = i + HEADER + length + 2
            if n < end:
                if final:
                    self.rejected += 1
                    i += 1
                    continue
                break
            cs = 0
            for j in range(i, end - 2):
                cs += buf[j]
            if (cs & 0xFF) != buf[end - 2] or buf[end - 1] != END:
                self.rejected += 1
                i += 1
                continue
            data = bytearray(length)
            for k in range(length):
                data[k] = (buf[i + HEADER + k] - OFFSET) & 0xFF
            found.append(Frame(buf[i + 1 : i + 7], buf[i + 8], data))
            self.frames += 1
            i = end
        self._buf = buf[i:]
        return found
