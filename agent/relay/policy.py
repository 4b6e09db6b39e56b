"""Relay policy: who may open or close the supply, as one transition table.

States and what the relay does in each:

=================  ======  ==================================================
state              relay   meaning
=================  ======  ==================================================
connected          closed  normal supply
tripped_arrears    open    credit exhausted (after the trip delay)
tripped_command    open    an operator's trip command
close_allowed      open    waiting for the customer's button press
guarantee          closed  guarantee power (保电): nothing may trip
forced             closed  forced reconnection (费控强制复电): no arrears trip
=================  ======  ==================================================

Triggers mirror DL/T 645 control 0x1C plus the account's own conditions.
``TABLE[state][trigger]`` is the next state, or ``REFUSE`` for a command
that the state forbids; a trigger missing from a state's row changes
nothing (an idempotent command is accepted, a condition is ignored).
"""

CONNECTED = "connected"
TRIPPED_ARREARS = "tripped_arrears"
TRIPPED_COMMAND = "tripped_command"
CLOSE_ALLOWED = "close_allowed"
GUARANTEE = "guarantee"
FORCED = "forced"

STATES = (CONNECTED, TRIPPED_ARREARS, TRIPPED_COMMAND, CLOSE_ALLOWED, GUARANTEE, FORCED)
CLOSED_STATES = (CONNECTED, GUARANTEE, FORCED)

# Conditions raised by the meter itself.
ARREARS = "arrears"  # credit exhausted for the trip delay, outside friendly time
CREDIT_OK = "credit_ok"  # enough credit to reconnect
BUTTON = "button"  # the customer pressed the button
FORCE_EXPIRED = "force_expired"
# Operator commands (names as in agent.events.Command).
TRIP = "trip"
CLOSE_ALLOWED_CMD = "close_allowed"
CLOSE_DIRECT = "close_direct"
GUARANTEE_ON = "guarantee_on"
GUARANTEE_OFF = "guarantee_off"
FORCE_ON = "force_on"
FORCE_OFF = "force_off"

REFUSE = "refuse"

COMMANDS = (TRIP, CLOSE_ALLOWED_CMD, CLOSE_DIRECT, GUARANTEE_ON, GUARANTEE_OFF, FORCE_ON, FORCE_OFF)

TABLE = {
    CONNECTED: {
        ARREARS: TRIPPED_ARREARS,
        TRIP: TRIPPED_COMMAND,
        GUARANTEE_ON: GUARANTEE,
        FORCE_ON: FORCED,
    },
    TRIPPED_ARREARS: {
        # CREDIT_OK's target depends on the reconnect setting: see next_state().
        CREDIT_OK: CONNECTED,
        TRIP: TRIPPED_COMMAND,
        CLOSE_DIRECT: REFUSE,  # credit is exhausted: the operator must force it
        CLOSE_ALLOWED_CMD: REFUSE,
        GUARANTEE_ON: GUARANTEE,
        FORCE_ON: FORCED,
    },
    TRIPPED_COMMAND: {
        CLOSE_DIRECT: CONNECTED,
        CLOSE_ALLOWED_CMD: CLOSE_ALLOWED,
        GUARANTEE_ON: GUARANTEE,
        FORCE_ON: FORCED,
    },
    CLOSE_ALLOWED: {
        BUTTON: CONNECTED,
        CLOSE_DIRECT: CONNECTED,
        TRIP: TRIPPED_COMMAND,
        ARREARS: TRIPPED_ARREARS,
        GUARANTEE_ON: GUARANTEE,
        FORCE_ON: FORCED,
    },
    GUARANTEE: {
        TRIP: REFUSE,  # guarantee power blocks every trip
        GUARANTEE_OFF: CONNECTED,  # the relay stays put; arrears may trip it next
    },
    FORCED: {
        TRIP: TRIPPED_COMMAND,
        FORCE_OFF: CONNECTED,
        FORCE_EXPIRED: CONNECTED,
        GUARANTEE_ON: GUARANTEE,
    },
}

AUTO = "auto"
BY_BUTTON = "button"


def next_state(state, trigger, reconnect=AUTO):
    """The state after ``trigger`` in ``state``: a state name, ``REFUSE`` or None (no change)."""
    target = TABLE[state].get(trigger)
    if target == CONNECTED and state == TRIPPED_ARREARS and trigger == CREDIT_OK and reconnect == BY_BUTTON:
        return CLOSE_ALLOWED
    return target


def closed_in(state):
    """True if the relay should be closed in ``state``."""
    return state in CLOSED_STATES
