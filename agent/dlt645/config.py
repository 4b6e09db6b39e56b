"""Config sections of the DL/T 645 slave (``dlt645``) and master (``dlt645_master``)."""

from agent.config import BOOL, INT, STR, Field, at_least, between, one_of

BAUDS = (1200, 2400, 4800, 9600, 19200)


def _address(value):
    if len(value) != 12:
        return "must be 12 digits as printed on the meter, got %r" % (value,)
    for ch in value:
        if ch not in "0123456789":
            return "must be 12 decimal digits, got %r" % (value,)
    return None


def _password(value):
    if len(value) != 8:
        return "must be 8 hex digits PA P0 P1 P2 (level, then the password as sent), got %r" % (value,)
    for ch in value:
        if ch not in "0123456789abcdefABCDEF":
            return "must be 8 hex digits, got %r" % (value,)
    return None


SCHEMA = {
    "device": Field(
        STR, None, None, None,
        "serial device (/dev/ttyUSB0), pyserial URL (socket://host:port) or tcp://HOST:PORT to listen on; unset = off",
    ),
    "address": Field(STR, None, _address, None, "12-digit address as printed; unset = the meter id"),
    "password": Field(
        STR, None, _password, None,
        "control password, 8 hex digits in wire order: level PA then P0 P1 P2; required with control",
    ),
    "baud": Field(INT, 2400, one_of(*BAUDS), None, "serial bit rate"),
    "parity": Field(STR, "E", one_of("E", "N", "O"), None, "serial parity (the standard says E)"),
    "control": Field(BOOL, False, None, None,
                     "accept control frames (0x1C: trip, close, alarm, guarantee); needs password"),
    "time_sync_max_s": Field(
        INT, 300, between(0, 86400), None,
        "largest clock step accepted from a broadcast time frame (once a day); 0 = ignore them",
    ),
    "password_tries": Field(INT, 5, between(1, 100), None, "wrong passwords a day before control locks until midnight"),
    "reply_delay_ms": Field(INT, 20, between(0, 500), None, "wait before replying on a serial line (bus turn-around)"),
}

def check_section(section):
    """Rules across the keys of a validated ``dlt645`` section: ConfigError naming the key.

    Control switches the supply (guarantee power included), so it is off
    unless asked for, and never on a password everyone knows: no default.
    """
    from agent.config import ConfigError

    if section["control"] and section["password"] is None:
        raise ConfigError("dlt645.password", "is required when dlt645.control is true "
                          "(8 hex digits PA P0 P1 P2; there is no default password)")


MASTER_SCHEMA = {
    "device": Field(STR, None, None, None, "serial device or pyserial URL of the host meter's RS-485 port; unset = off"),
    "address": Field(STR, None, _address, None, "host meter's address; unset = ask it with read-address (0x13)"),
    "baud": Field(INT, 2400, one_of(*BAUDS), None, "serial bit rate"),
    "parity": Field(STR, "E", one_of("E", "N", "O"), None, "serial parity"),
    "timeout_ms": Field(INT, 1000, between(100, 10000), None, "reply timeout per request"),
    "interval_s": Field(INT, 900, at_least(10), None, "seconds between register reads"),
    "drift_wh": Field(INT, 100, at_least(10), None, "pulse vs register drift (Wh) that is always a finding"),
    "drift_permille": Field(INT, 20, between(0, 1000), None, "relative drift (per mille of energy since baseline) tolerated above drift_wh"),
}
