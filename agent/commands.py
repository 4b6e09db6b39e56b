"""Names of the management commands the meter core carries out.

Kept apart from agent/meter.py so the token layer and the head-end can
check a command name without importing the whole core (RAM on a board).
"""

NAMES = (
    "trip",
    "close_allowed",
    "close_direct",
    "trip_then_close",
    "alarm_on",
    "alarm_off",
    "guarantee_on",
    "guarantee_off",
    "force_on",
    "force_off",
    "set_mode",
    "set_limits",
    "set_tariff",
    "clear_credit",
    "set_credit",
    "set_friendly",
    "freeze",
    "set_clock",
)
