"""The agent as a DL/T 645-2007 slave: answers as the prepaid meter.

Sans-I/O: ``Slave.handle(frame, view, wall, mono)`` takes a checked frame
(from ``frame.Parser``), a read-only view of the meter (the protocol is
``registers.MeterView``) and the time, and
returns ``(reply_bytes_or_None, events)``.  Reads are answered at once from
the view.  Frames that ask the meter to act (control 0x1C, freeze 0x16,
broadcast time 0x08) become core events; a control or addressed freeze is
only answered once the core's ``Ack`` for it comes back through
``Slave.ack`` (the core persists before it acknowledges, and so do we).

What is served (DI table, formats, error bits) is described in
docs/dlt645.md.
"""

from agent import results
from agent.events import Command, SetClock
from agent.dlt645 import frame as F
from agent.dlt645.bcd import address_to_wire, from_bcd, hex_to_bytes
from agent.dlt645.clock import decode_time
from agent.dlt645.registers import read_value

MIDNIGHT_GUARD_S = 300  # meters ignore a broadcast time this close to midnight
SECURE_LEVELS = (0x98, 0x99)  # password levels that need a security chip we do not have
MAX_PENDING = 8

# N1 of a control frame -> core command name.
CONTROL_CODES = {
    0x1A: "trip",
    0x1B: "close_allowed",
    0x1C: "close_direct",
    0x1D: "trip_then_close",
    0x1E: "trip_then_close",
    0x2A: "alarm_on",
    0x2B: "alarm_off",
    0x3A: "guarantee_on",
    0x3B: "guarantee_off",
}

# Functions this slave refuses as unauthorised: writes and clears are done
# through the head-end's signed commands, never over the RS-485 port.
UNAUTHORISED = (
    F.WRITE,
    F.WRITE_ADDRESS,
    F.CHANGE_PASSWORD,
    F.CLEAR_DEMAND,
    F.CLEAR_METER,
    F.CLEAR_EVENTS,
)


def _u32(data):
    return data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)


class Slave:
    """DL/T 645 slave logic for one meter address.

    ``cfg`` is a validated ``dlt645`` section (agent.dlt645.config.SCHEMA);
    ``tz_offset_min`` is the meter's zone (local time is what goes on the
    wire).  Counters ``replies``, ``ignored`` and ``errors`` help diagnostics.
    ``dirty`` says the wrong-password lockout changed: the shell commits it
    (agent/dlt645/lockout.py) before the reply goes out.
    """

    __slots__ = (
        "cfg", "address", "password", "tz_s", "preamble", "pending", "seq",
        "bad_passwords", "bad_password_day", "last_sync_day", "dirty",
        "replies", "ignored", "errors", "last_error",
    )

    def __init__(self, cfg, tz_offset_min=480):
        self.cfg = cfg
        self.address = address_to_wire(cfg["address"]) if cfg.get("address") else None
        pw = cfg.get("password")
        # No password, no control: there is no default everyone could know.
        self.password = hex_to_bytes(pw, "dlt645.password") if pw is not None else None
        self.tz_s = tz_offset_min * 60
        self.preamble = 4  # FE wake-up bytes in front of every reply
        self.pending = {}  # ref -> (function, seq) awaiting the core's Ack
        self.seq = 0
        self.bad_passwords = 0
        self.bad_password_day = None
        self.dirty = False  # the password lockout changed: commit before the next frame
        self.last_sync_day = None
        self.replies = 0
        self.ignored = 0
        self.errors = 0
        self.last_error = None

    # ------------------------------------------------------------ entry points

    def handle(self, fr, view, wall, mono):
        """Process one frame; return ``(reply_bytes_or_None, events)``.

        Never raises: a view that fails is answered as "other error" and
        counted in ``errors`` (``last_error`` keeps the message).
        """
        try:
            return self._handle(fr, view, wall, mono)
        except Exception as exc:  # a broken view must not take the port down
            self.errors += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            own = self.address
            if own is None or fr.is_reply or fr.address == F.BROADCAST:
                return None, []
            return self._abnormal(own, fr.function, F.ERR_OTHER), []

    def ack(self, ack):
        """The core's ``Ack`` for an event this slave emitted -> reply bytes or None."""
        entry = self.pending.pop(ack.ref, None)
        if entry is None:
            return None
        function = entry[0]
        own = self.address
        if ack.code == results.ACCEPTED:
            return self._reply(own, function, b"")
        if ack.code in (results.BAD_MAC, results.LOCKED_OUT, results.WRONG_KEY_REVISION):
            return self._abnormal(own, function, F.ERR_PASSWORD)
        return self._abnormal(own, function, F.ERR_OTHER)

    # ---------------------------------------------------------------- dispatch

    def _handle(self, fr, view, wall, mono):
        if self.address is None:
            self.address = address_to_wire(view.meter_id)
        own = self.address
        fn = fr.function
        if fr.is_reply:
            return self._ignore()  # another slave talking on the bus
        if fr.address == F.BROADCAST:
            if fn == F.BROADCAST_TIME:
                return None, self._time_sync(fr, wall, mono)
            if fn == F.FREEZE and fr.data == b"\x99\x99\x99\x99":
                return None, [self._command("freeze", {}, wall, mono, None)]
            return self._ignore()
        exact = fr.address == own
        if not exact and not self._wildcard_match(fr.address):
            return self._ignore()
        if fn == F.READ_ADDRESS:
            return self._reply(own, fn, own), []
        if fn == F.READ:
            return self._read(fr, view, wall), []
        if fn == F.READ_MORE:
            return self._abnormal(own, fn, F.ERR_NO_DATA), []
        if not exact:
            # wildcards are for reading; anything that acts needs the real address
            return self._abnormal(own, fn, F.ERR_PASSWORD), []
        if fn == F.CONTROL:
            return self._control(fr, wall, mono)
        if fn == F.FREEZE:
            if fr.data != b"\x99\x99\x99\x99":
                return self._abnormal(own, fn, F.ERR_OTHER), []
            return None, [self._command("freeze", {}, wall, mono, fn)]
        if fn == F.BROADCAST_TIME:
            return self._ignore()  # only meaningful as a broadcast; never answered
        if fn == F.CHANGE_BAUD:
            return self._abnormal(own, fn, F.ERR_BAUD), []
        if fn in UNAUTHORISED:
            return self._abnormal(own, fn, F.ERR_PASSWORD), []
        return self._abnormal(own, fn, F.ERR_OTHER), []

    def _wildcard_match(self, address):
        """AA bytes stand for any digits (the standard's address abbreviation)."""
        own = self.address
        for i in range(6):
            if address[i] != 0xAA and address[i] != own[i]:
                return False
        return True

    def _ignore(self):
        self.ignored += 1
        return None, []

    def _reply(self, own, function, payload):
        self.replies += 1
        return F.encode(own, function | F.DIR_REPLY, payload, self.preamble)

    def _abnormal(self, own, function, err):
        self.replies += 1
        return F.encode(own, function | F.DIR_REPLY | F.ABNORMAL, bytes((err,)), self.preamble)

    def _command(self, name, args, wall, mono, reply_function):
        self.seq += 1
        ref = "dlt645-%d" % self.seq
        if reply_function is not None:
            if len(self.pending) >= MAX_PENDING:
                # the core never answered the oldest: forget it rather than grow
                oldest = min(self.pending, key=lambda r: self.pending[r][1])
                del self.pending[oldest]
            self.pending[ref] = (reply_function, self.seq)
        return Command(name, args, ref, wall, mono)

    # -------------------------------------------------------------------- read

    def _read(self, fr, view, wall):
        own = self.address
        if len(fr.data) < 4:
            return self._abnormal(own, F.READ, F.ERR_OTHER)
        di = _u32(fr.data)
        payload = read_value(di, view, wall, self.tz_s, own)
        if payload is None:
            return self._abnormal(own, F.READ, F.ERR_NO_DATA)
        return self._reply(own, F.READ, fr.data[0:4] + payload)

    # ----------------------------------------------------------------- control

    def _control(self, fr, wall, mono):
        own = self.address
        d = fr.data
        if not self.cfg.get("control", False) or self.password is None:
            return self._abnormal(own, F.CONTROL, F.ERR_PASSWORD), []
        if len(d) != 16:
            return self._abnormal(own, F.CONTROL, F.ERR_OTHER), []
        today = (wall + self.tz_s) // 86400
        if self.bad_password_day != today and self.bad_passwords:
            self.bad_passwords = 0
            self.dirty = True
        self.bad_password_day = today
        if self.bad_passwords >= self.cfg.get("password_tries", 5):
            return self._abnormal(own, F.CONTROL, F.ERR_PASSWORD), []
        if d[0] in SECURE_LEVELS or d[0:4] != self.password:
            if d[0] not in SECURE_LEVELS:
                self.bad_passwords += 1
                self.dirty = True
            return self._abnormal(own, F.CONTROL, F.ERR_PASSWORD), []
        name = CONTROL_CODES.get(d[8])
        if name is None:
            return self._abnormal(own, F.CONTROL, F.ERR_OTHER), []
        try:
            expiry = decode_time(d[10:16], self.tz_s, "control expiry")
        except ValueError:
            return self._abnormal(own, F.CONTROL, F.ERR_OTHER), []
        if expiry < wall:
            return self._abnormal(own, F.CONTROL, F.ERR_OTHER), []
        args = {}
        if d[8] in (0x1D, 0x1E):
            try:
                units = from_bcd(d[9:10], "control N2")
            except ValueError:
                return self._abnormal(own, F.CONTROL, F.ERR_OTHER), []
            if units == 0:
                return self._abnormal(own, F.CONTROL, F.ERR_OTHER), []
            args["minutes"] = units * 5
            args["then"] = "close" if d[8] == 0x1D else "allow"
        return None, [self._command(name, args, wall, mono, F.CONTROL)]

    # -------------------------------------------------------------- time sync

    def _time_sync(self, fr, wall, mono):
        limit = self.cfg.get("time_sync_max_s", 300)
        if limit == 0:
            return []
        try:
            new = decode_time(fr.data, self.tz_s, "broadcast time")
        except ValueError:
            return []
        day = (wall + self.tz_s) // 86400
        if self.last_sync_day == day:
            return []  # once a day, like a real meter
        if abs(new - wall) > limit:
            return []
        for t in (wall, new):
            sec = (t + self.tz_s) % 86400
            if sec < MIDNIGHT_GUARD_S or sec > 86400 - MIDNIGHT_GUARD_S:
                return []  # a step across midnight would confuse the daily freeze
        self.last_sync_day = day
        return [SetClock(new, mono, "dlt645")]

