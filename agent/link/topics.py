"""The topic tree of one meter (see docs/mqtt.md).

``<prefix>/<meter id>/<leaf>``; the meter id is the 12-digit meter number,
so it can never contain MQTT wildcards or separators.  The broker ACL
(deploy/mosquitto/acl) lets a meter touch only its own subtree.
"""

PREFIX = "pm"

# Leaves, with who writes them.  Commands are never retained (a retained
# command would be replayed at every reconnect: "ghost switching").
CMD = "cmd"        # head-end -> meter, QoS 1, not retained, sealed
ACK = "ack"        # meter -> head-end, QoS 1, not retained, sealed
EVT = "evt"        # meter -> head-end, QoS 1, not retained, sealed, sequenced
TELE = "tele"      # meter -> head-end, QoS 1, not retained, sealed, droppable
STATE = "state"    # meter -> head-end, QoS 1, RETAINED, sealed snapshot
STATUS = "status"  # meter (will) -> all, QoS 1, RETAINED, plain online/offline
BIRTH = "birth"    # meter -> head-end, QoS 1, not retained, sealed

METER_LEAVES = (ACK, EVT, TELE, STATE, STATUS, BIRTH)
LEAVES = (CMD,) + METER_LEAVES

ONLINE = b"online"
OFFLINE = b"offline"


def valid_meter_id(meter_id):
    """True if ``meter_id`` is a 12-digit meter number (safe in a topic)."""
    if not isinstance(meter_id, str) or len(meter_id) != 12:
        return False
    for ch in meter_id:
        if ch < "0" or ch > "9":
            return False
    return True


def topic(meter_id, leaf, prefix=PREFIX):
    """The topic of ``leaf`` for ``meter_id``; ValueError on a bad id or leaf."""
    if not valid_meter_id(meter_id):
        raise ValueError("meter id %r: must be 12 digits" % (meter_id,))
    if leaf not in LEAVES:
        raise ValueError("topic leaf %r: must be one of %s" % (leaf, ", ".join(LEAVES)))
    return "%s/%s/%s" % (prefix, meter_id, leaf)


def fleet(leaf, prefix=PREFIX):
    """The head-end's wildcard subscription for ``leaf`` of every meter."""
    if leaf not in LEAVES:
        raise ValueError("topic leaf %r: must be one of %s" % (leaf, ", ".join(LEAVES)))
    return "%s/+/%s" % (prefix, leaf)


def parse(name, prefix=PREFIX):
    """Split a topic into ``(meter_id, leaf)``, or None if it is not ours."""
    if isinstance(name, (bytes, bytearray)):
        try:
            name = bytes(name).decode()
        except Exception:
            return None
    if not isinstance(name, str):
        return None
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != prefix:
        return None
    if not valid_meter_id(parts[1]) or parts[2] not in LEAVES:
        return None
    return (parts[1], parts[2])
