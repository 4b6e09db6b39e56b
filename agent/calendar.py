"""Civil-calendar arithmetic on integer days, for local time zones.

MicroPython has no ``datetime`` and its ``time`` epoch differs between
ports, so the core converts wall seconds to local dates itself (Howard
Hinnant's days-from-civil algorithms, exact for every Gregorian date).
Day numbers count days since 1970-01-01 in local time.
"""

DAY = 86400


def days_from_civil(y, m, d):
    """Day number of the date ``y-m-d`` (1970-01-01 is day 0)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """The date ``(y, m, d)`` of day number ``z``."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def local_day(wall, tz_s):
    """Local day number of wall second ``wall`` in a zone ``tz_s`` east of UTC."""
    return (wall + tz_s) // DAY


def second_of_day(wall, tz_s):
    """Seconds since local midnight."""
    return (wall + tz_s) % DAY


def weekday(day):
    """ISO weekday of a day number: 1 = Monday ... 7 = Sunday."""
    return (day + 3) % 7 + 1


def day_start(day, tz_s):
    """Wall second of local midnight starting day number ``day``."""
    return day * DAY - tz_s


def month_index(day):
    """Months since January 1970 of a day number (for monthly cycles)."""
    y, m, _ = civil_from_days(day)
    return (y - 1970) * 12 + m - 1


def date_key(day):
    """The date of a day number as an int YYYYMMDD (for holiday lists)."""
    y, m, d = civil_from_days(day)
    return y * 10000 + m * 100 + d


def parse_date(text):
    """``"YYYY-MM-DD"`` -> day number, or None if it is not a valid date."""
    if not isinstance(text, str) or len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    try:
        y, m, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
    except ValueError:
        return None
    if m < 1 or m > 12 or d < 1 or d > 31:
        return None
    day = days_from_civil(y, m, d)
    if civil_from_days(day) != (y, m, d):
        return None
    return day


def parse_hhmm(text):
    """``"HH:MM"`` -> minutes since midnight, or None (24:00 allowed)."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        return None
    try:
        h, mi = int(text[0:2]), int(text[3:5])
    except ValueError:
        return None
    if h < 0 or mi < 0 or mi > 59 or h > 24 or (h == 24 and mi != 0):
        return None
    return h * 60 + mi


def parse_datetime(text, tz_s):
    """``"YYYY-MM-DD HH:MM"`` (local) or ``"YYYY-MM-DDTHH:MM"`` -> wall second, or None."""
    if not isinstance(text, str) or len(text) != 16 or text[10] not in " T":
        return None
    day = parse_date(text[0:10])
    minute = parse_hhmm(text[11:16])
    if day is None or minute is None or minute >= 1440:
        return None
    return day_start(day, tz_s) + minute * 60


def format_wall(wall, tz_s):
    """Wall second -> ``"YYYY-MM-DD HH:MM:SS"`` local, for logs and reports."""
    day = local_day(wall, tz_s)
    y, m, d = civil_from_days(day)
    s = second_of_day(wall, tz_s)
    return "%04d-%02d-%02d %02d:%02d:%02d" % (y, m, d, s // 3600, s // 60 % 60, s % 60)
