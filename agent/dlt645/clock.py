"""DL/T 645 date-time fields <-> wall seconds, in the meter's local time.

Fields travel as BCD bytes, least significant first: a time
``YYMMDDhhmmss`` goes on the wire as ``ss mm hh DD MM YY``.  Years are
2000..2099.  Uses agent.calendar because MicroPython has no datetime.
"""

from agent.calendar import DAY, civil_from_days, days_from_civil

from agent.dlt645.bcd import byte_to_bcd, from_bcd


def local_fields(wall, tz_s):
    """Wall second -> (YY, MM, DD, hh, mm, ss, weekday 0=Sunday) in local time."""
    local = wall + tz_s
    day = local // DAY
    sec = local % DAY
    y, m, d = civil_from_days(day)
    return (y % 100, m, d, sec // 3600, sec // 60 % 60, sec % 60, (day + 4) % 7)


def encode_time(wall, tz_s, fields):
    """Wire bytes of the local time of ``wall``.

    ``fields`` is the layout as the standard writes it, e.g. ``"YYMMDDhhmmss"``,
    ``"YYMMDDhhmm"``, ``"YYMMDDWW"``, ``"hhmmss"``; the bytes come out least
    significant field first (``ss mm hh DD MM YY``).
    """
    yy, mo, dd, hh, mi, ss, ww = local_fields(wall, tz_s)
    values = {"YY": yy, "MM": mo, "DD": dd, "WW": ww, "hh": hh, "mm": mi, "ss": ss}
    out = bytearray()
    for i in range(len(fields) - 2, -1, -2):
        out.append(byte_to_bcd(values[fields[i : i + 2]]))
    return bytes(out)


def decode_time(data, tz_s, field="time"):
    """Wire bytes ``ss mm hh DD MM YY`` (6 bytes) -> wall second.

    Raises ValueError naming ``field`` for a wrong length, non-BCD bytes or
    an impossible date or time.
    """
    if len(data) != 6:
        raise ValueError("%s: needs 6 bytes, got %d" % (field, len(data)))
    ss = from_bcd(data[0:1], field)
    mi = from_bcd(data[1:2], field)
    hh = from_bcd(data[2:3], field)
    dd = from_bcd(data[3:4], field)
    mo = from_bcd(data[4:5], field)
    yy = from_bcd(data[5:6], field)
    if mo < 1 or mo > 12 or dd < 1 or dd > 31 or hh > 23 or mi > 59 or ss > 59:
        raise ValueError("%s: %02d-%02d-%02d %02d:%02d:%02d is not a valid time" % (field, yy, mo, dd, hh, mi, ss))
    day = days_from_civil(2000 + yy, mo, dd)
    if civil_from_days(day) != (2000 + yy, mo, dd):
        raise ValueError("%s: 20%02d-%02d-%02d is not a date" % (field, yy, mo, dd))
    return day * DAY + hh * 3600 + mi * 60 + ss - tz_s
