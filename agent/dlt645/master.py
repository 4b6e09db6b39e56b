"""The agent as a DL/T 645-2007 master: read the host meter, cross-check pulses.

Sans-I/O request builders and reply decoders; hw/serial_link.py moves the
bytes.  ``CrossCheck`` compares the energy counted from the host meter's
pulse output with its own register: a drift beyond the threshold is a
plausibility finding (a bypassed or tampered pulse input, or a wrong
meter constant).
"""

from agent.dlt645 import frame as F
from agent.dlt645.bcd import address_from_wire, address_to_wire, byte_to_bcd, from_bcd, to_bcd
from agent.dlt645.clock import encode_time

DI_ENERGY_TOTAL = 0x00000000
DI_FORWARD_TOTAL = 0x00010000
DI_FORWARD_BLOCK = 0x0001FF00
DI_REMAINING_MONEY = 0x00900200
DI_OVERDRAFT_MONEY = 0x00900201
DI_STATUS3 = 0x04000503
ENERGY_WRAP_WH = 1000000000  # a 0.01 kWh register of 8 digits wraps at 1e6 kWh

ERR_NAMES = (
    (F.ERR_OTHER, "other error"),
    (F.ERR_NO_DATA, "no such data"),
    (F.ERR_PASSWORD, "wrong password or unauthorised"),
    (F.ERR_BAUD, "baud rate cannot change"),
    (F.ERR_YEAR_ZONES, "too many year zones"),
    (F.ERR_DAY_SLOTS, "too many daily slots"),
    (F.ERR_TARIFFS, "too many tariffs"),
)


class ReplyError(ValueError):
    """The meter sent an abnormal reply; ``err`` holds its ERR byte."""

    def __init__(self, function, err):
        names = [name for bit, name in ERR_NAMES if err & bit] or ["unknown error 0x%02X" % err]
        super().__init__("meter refused function 0x%02X: %s" % (function, ", ".join(names)))
        self.function = function
        self.err = err


def _wire_address(address):
    if isinstance(address, str):
        return address_to_wire(address)
    if len(address) != 6:
        raise ValueError("address: must be 6 bytes or 12 digits")
    return bytes(address)


def _di_bytes(di):
    if not 0 <= di <= 0xFFFFFFFF:
        raise ValueError("di: %r is not a 32-bit data identifier" % (di,))
    return bytes((di & 0xFF, (di >> 8) & 0xFF, (di >> 16) & 0xFF, di >> 24))


def read_request(address, di, preamble=4):
    """Wire bytes reading ``di`` from ``address`` (12-digit str or 6 wire bytes)."""
    return F.encode(_wire_address(address), F.READ, _di_bytes(di), preamble)


def read_address_request(preamble=4):
    """Wire bytes asking whoever is on the line for its address (AA..AA)."""
    return F.encode(F.WILDCARD, F.READ_ADDRESS, b"", preamble)


def time_broadcast(wall, tz_offset_min, preamble=4):
    """Broadcast time frame (0x08) setting every meter to the local time of ``wall``."""
    return F.encode(F.BROADCAST, F.BROADCAST_TIME, encode_time(wall, tz_offset_min * 60, "YYMMDDhhmmss"), preamble)


def freeze_broadcast(preamble=4):
    """Broadcast "freeze now" (0x16 with 99999999)."""
    return F.encode(F.BROADCAST, F.FREEZE, b"\x99\x99\x99\x99", preamble)


def control_request(address, password, n1, expiry_wall, tz_offset_min, n2=0, operator=0, preamble=4):
    """Control frame (0x1C): ``password`` 4 wire bytes (PA P0 P1 P2), ``n1`` the code.

    ``n2`` is the delay in 5-minute units for 0x1D/0x1E (sent as BCD);
    ``operator`` an 8-digit operator code.
    """
    if len(password) != 4:
        raise ValueError("password: must be 4 bytes PA P0 P1 P2")
    data = (
        bytes(password)
        + to_bcd(operator, 4, "operator")
        + bytes((n1 & 0xFF, byte_to_bcd(n2)))
        + encode_time(expiry_wall, tz_offset_min * 60, "YYMMDDhhmmss")
    )
    return F.encode(_wire_address(address), F.CONTROL, data, preamble)


def check_reply(fr, function, address=None):
    """The data of ``fr`` if it is the normal reply to ``function`` from ``address``.

    Raises ReplyError for an abnormal reply and ValueError for a frame that
    is not a reply to this request (wrong function or address).
    """
    if not fr.is_reply or fr.function != function:
        raise ValueError("reply: control byte 0x%02X is not a reply to 0x%02X" % (fr.control, function))
    if address is not None and fr.address != _wire_address(address):
        raise ValueError("reply: from %s, not the meter asked" % address_from_wire(fr.address))
    if fr.is_abnormal:
        raise ReplyError(function, fr.data[0] if fr.data else 0)
    return fr.data


def read_reply(fr, address, di):
    """The value bytes (after the echoed DI) of a read reply for ``di``."""
    data = check_reply(fr, F.READ, address)
    if len(data) < 4 or data[0:4] != _di_bytes(di):
        raise ValueError("reply: data identifier does not echo %08X" % di)
    return data[4:]


def address_reply(fr):
    """The address (12-digit str) in a read-address reply."""
    data = check_reply(fr, F.READ_ADDRESS)
    if len(data) != 6:
        raise ValueError("reply: read-address data %s is not 6 bytes" % F.hexlify(data))
    from_bcd(data, "address")
    return address_from_wire(data)


def energy_wh(value):
    """XXXXXX.XX kWh (4 BCD bytes) -> Wh."""
    if len(value) != 4:
        raise ValueError("energy: needs 4 bytes, got %d" % len(value))
    return from_bcd(value, "energy") * 10


def energy_block_wh(value):
    """A block read (total, then each tariff) -> list of Wh."""
    if not value or len(value) % 4:
        raise ValueError("energy block: length %d is not a multiple of 4" % len(value))
    return [energy_wh(value[i : i + 4]) for i in range(0, len(value), 4)]


def money_minor(value, money_scale=10000):
    """XXXXXX.XX (4 BCD bytes) -> money minor units."""
    if len(value) != 4:
        raise ValueError("money: needs 4 bytes, got %d" % len(value))
    return from_bcd(value, "money") * (money_scale // 100)


class CrossCheck:
    """Pulse-derived energy against the host meter's register.

    ``update(pulse_wh, register_wh)`` returns a list of (reason, data)
    findings, the shape agent.metering.plausibility uses.  The first call
    sets the baseline; later calls compare the energy each side counted
    since then.  A drift above ``max(drift_wh, drift_permille of the
    energy)`` is a ``register_drift`` finding; a register going backwards
    (not a rollover) is ``register_backwards``.  Both re-baseline, so one
    fault gives one finding rather than one per read.
    """

    __slots__ = ("drift_wh", "drift_permille", "base_pulse", "base_register")

    def __init__(self, drift_wh, drift_permille):
        self.drift_wh = drift_wh
        self.drift_permille = drift_permille
        self.base_pulse = None
        self.base_register = None

    def update(self, pulse_wh, register_wh):
        """Compare a new pair of readings; return the findings."""
        if self.base_pulse is None:
            self.base_pulse = pulse_wh
            self.base_register = register_wh
            return []
        d_register = register_wh - self.base_register
        if d_register < 0:
            if self.base_register > ENERGY_WRAP_WH * 9 // 10 and register_wh < ENERGY_WRAP_WH // 10:
                d_register += ENERGY_WRAP_WH
            else:
                found = ("register_backwards", {"was_wh": self.base_register, "now_wh": register_wh})
                self.base_pulse = pulse_wh
                self.base_register = register_wh
                return [found]
        d_pulse = pulse_wh - self.base_pulse
        finding = drift_finding(d_pulse, d_register, self.drift_wh, self.drift_permille)
        if finding is None:
            return []
        self.base_pulse = pulse_wh
        self.base_register = register_wh
        return [finding]


def drift_finding(pulse_wh, register_wh, drift_wh, drift_permille):
    """Pure check of energies counted over the same span; (reason, data) or None.

    The limit is ``max(drift_wh, register_wh * drift_permille / 1000)``;
    ``drift_wh`` must allow for the register's 10 Wh resolution and the
    read's timing against the pulses.
    """
    drift = pulse_wh - register_wh
    limit = max(drift_wh, register_wh * drift_permille // 1000)
    if abs(drift) <= limit:
        return None
    return (
        "register_drift",
        {"pulse_wh": pulse_wh, "register_wh": register_wh, "drift_wh": drift, "limit_wh": limit},
    )
