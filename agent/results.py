"""Result codes for top-ups, tokens and commands.

Every token or command the meter receives ends in exactly one of these
codes, which is both acknowledged to the sender and logged as an event.
Strings rather than numbers so logs and MQTT payloads read on their own.
"""

ACCEPTED = "accepted"
ALREADY_USED = "already_used"
TOO_OLD = "too_old"
WRONG_METER = "wrong_meter"
BAD_MAC = "bad_mac"
EXPIRED = "expired"
MALFORMED = "malformed"
OVER_HOARDING_LIMIT = "over_hoarding_limit"
WRONG_KEY_REVISION = "wrong_key_revision"
LOCKED_OUT = "locked_out"
REFUSED = "refused"  # a valid command the meter's state does not allow now
UNKNOWN_COMMAND = "unknown_command"
BAD_ARGUMENT = "bad_argument"

ALL = (
    ACCEPTED,
    ALREADY_USED,
    TOO_OLD,
    WRONG_METER,
    BAD_MAC,
    EXPIRED,
    MALFORMED,
    OVER_HOARDING_LIMIT,
    WRONG_KEY_REVISION,
    LOCKED_OUT,
    REFUSED,
    UNKNOWN_COMMAND,
    BAD_ARGUMENT,
)
