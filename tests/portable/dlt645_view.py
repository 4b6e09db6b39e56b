"""A stand-in for the meter's read-only view, for the DL/T 645 slave tests.

Not a test module (no test_ prefix): imported by the portable slave tests
and by the CPython peer tests.
"""

from agent import config
from agent.dlt645.config import SCHEMA
from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.bcd import address_to_wire
from agent.dlt645.slave import Slave

METER = "123456781012"
WALL = 1700000000  # 2023-11-15 06:13:20 at UTC+8
TZ_MIN = 480


class Rec:
    """An event record: wall time and data."""

    __slots__ = ("seq", "kind", "wall", "reason", "data")

    def __init__(self, seq, kind, wall, data):
        self.seq = seq
        self.kind = kind
        self.wall = wall
        self.reason = kind
        self.data = data


class View:
    """Fixed meter values; tests change attributes as they go."""

    def __init__(self):
        self.meter_id = METER
        self.energy_wh = 1234567  # 1234.56 kWh on the wire (10 Wh resolution)
        self.rate_energy_wh = [100000, 300000, 500000, 334567]
        self.balance = 1234567  # 123.4567 CNY
        self.limits = {"alarm1": 200000, "alarm2": 100000, "overdraft": 50000,
                       "hoarding": 99990000, "close_allowed": 10000}
        self.relay_position = True
        self.relay_closed = True
        self.alarm_level = 0
        self.payment_mode = "prepaid"
        self.relay_state = "connected"
        self.daily_freezes = [
            [WALL - 22400, 1200000, [100000, 290000, 480000, 330000], 1300000],
            [WALL - 108800, 1100000, [90000, 260000, 450000, 300000], 1400000],
        ]
        self._records = {
            "trip": [Rec(7, "trip", WALL - 3600, {"energy_wh": 1230000, "operator": 12345678})],
            "close": [Rec(9, "close", WALL - 600, {"energy_wh": 1234000}),
                      Rec(3, "close", WALL - 90000, {})],
            "topup": [Rec(5, "topup", WALL - 7200, {"amount": 1000000})],
        }

    def records(self, kind):
        return list(self._records.get(kind, ()))


def make_slave(**overrides):
    """A Slave with the test address, control on and the password 02 12 34 56."""
    raw = {"address": METER, "password": "02123456", "control": True}
    raw.update(overrides)
    return Slave(config.validate(raw, SCHEMA), TZ_MIN)


ADDR = address_to_wire(METER)
PASSWORD = bytes((0x02, 0x12, 0x34, 0x56))  # level 02, password 123456 (make_slave's)


def ask(slave, raw, view=None, wall=WALL):
    """Feed one raw request frame to ``slave``; (decoded reply or None, core events)."""
    frames = F.Parser().feed(raw)
    assert len(frames) == 1
    reply, events = slave.handle(frames[0], view or View(), wall, 5000)
    return (F.decode_one(reply) if reply is not None else None), events


def read(slave, di, view=None, address=METER):
    """The reply frame to a read of data identifier ``di`` (a read makes no events)."""
    fr, events = ask(slave, M.read_request(address, di), view)
    assert events == []
    return fr


def value(slave, di, view=None):
    """The decoded value the slave serves for ``di``."""
    return M.read_reply(read(slave, di, view), METER, di)
