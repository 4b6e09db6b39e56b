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
HA = "ha"          # meter -> Home Assistant, QoS 1, RETAINED, PLAIN JSON: only when opted in

METER_LEAVES = (ACK, EVT, TELE, STATE, STATUS, BIRTH)  # what the head-end subscribes to
LEAVES = (CMD,) + METER_LEAVES + (HA,)

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


# ------------------------------------------------------------ Home Assistant
# MQTT discovery (opt-in, see docs/mqtt.md): retained configs under
# <discovery prefix>/<component>/pm_<id>/<object>/config pointing at the
# plaintext state topic pm/<id>/ha.  Off by default: that topic gives up
# the payload sealing, so use it only on a local broker.

HA_PREFIX = "homeassistant"


def json_dumps(value):
    """Compact JSON with sorted keys, for str/int/bool/None/list/dict values.

    Hand-written because MicroPython's json has no sort_keys and the core
    must not rely on dict order; byte-identical to CPython's
    ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` (tested).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            c = ord(ch)
            if ch == '"':
                out.append('\\"')
            elif ch == "\\":
                out.append("\\\\")
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch == "\t":
                out.append("\\t")
            elif ch == "\b":
                out.append("\\b")
            elif ch == "\f":
                out.append("\\f")
            elif c < 0x20 or c > 0x7E:
                if c > 0xFFFF:
                    c -= 0x10000
                    out.append("\\u%04x\\u%04x" % (0xD800 | (c >> 10), 0xDC00 | (c & 0x3FF)))
                else:
                    out.append("\\u%04x" % c)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json_dumps(k) + ":" + json_dumps(value[k]) for k in sorted(value)) + "}"
    raise ValueError("json_dumps: unsupported value %r" % (value,))


def ha_discovery(meter_id, prefix=PREFIX, discovery=HA_PREFIX, currency="CNY"):
    """``[(topic, payload bytes)]``: the retained discovery configs of one meter."""
    state = topic(meter_id, HA, prefix)
    node = "pm_" + meter_id
    device = {"identifiers": [node], "manufacturer": "prepaid-meter", "model": "pmeter agent",
              "name": "Prepaid meter " + meter_id}
    common = {"availability_topic": topic(meter_id, STATUS, prefix), "device": device,
              "payload_available": "online", "payload_not_available": "offline", "state_topic": state}
    objects = (
        ("sensor", "energy", {"device_class": "energy", "name": "Energy", "state_class": "total_increasing",
                              "unit_of_measurement": "Wh", "value_template": "{{ value_json.energy_wh }}"}),
        ("sensor", "balance", {"device_class": "monetary", "name": "Balance", "state_class": "total",
                               "unit_of_measurement": currency, "value_template": "{{ value_json.balance }}"}),
        ("binary_sensor", "relay", {"device_class": "power", "name": "Supply", "payload_off": "OFF",
                                    "payload_on": "ON", "value_template": "{{ value_json.relay }}"}),
        ("sensor", "alarm", {"name": "Credit alarm", "icon": "mdi:cash-alert",
                             "value_template": "{{ value_json.alarm }}"}),
    )
    out = []
    for component, obj, extra in objects:
        cfg = dict(common)
        for k in extra:
            cfg[k] = extra[k]
        cfg["unique_id"] = "%s_%s" % (node, obj)
        out.append(("%s/%s/%s/%s/config" % (discovery, component, node, obj), json_dumps(cfg).encode()))
    return out


def ha_state(body):
    """The plaintext JSON Home Assistant reads, from a state/telemetry body."""
    bal = body.get("bal")
    if isinstance(bal, int) and not isinstance(bal, bool):
        sign = "-" if bal < 0 else ""
        a = -bal if bal < 0 else bal
        balance = "%s%d.%04d" % (sign, a // 10000, a % 10000)  # MONEY_SCALE: no floats
    else:
        balance = None
    pos = body.get("relay_pos")
    return json_dumps({
        "alarm": body.get("alarm"),
        "balance": balance,
        "energy_wh": body.get("wh"),
        "relay": "ON" if pos == "closed" else ("OFF" if pos == "open" else None),
        "relay_state": body.get("relay"),
    }).encode()
