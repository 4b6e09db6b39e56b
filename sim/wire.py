"""Line protocol between the simulator and a meter core in another runtime.

Events and actions travel as JSON arrays, one per line, so a MicroPython
process can run the very same core the simulator runs in-process.  Dicts
inside records travel as sorted [key, value] pairs: MicroPython's dicts
have no order, and the two runtimes must produce identical bytes.

This module runs on MicroPython as well (see sim/mp_server.py).
"""

from agent import events
from agent.eventlog import Record

EVENT_CLASSES = (
    events.Boot,
    events.Tick,
    events.Edge,
    events.Pulses,
    events.TopUp,
    events.Command,
    events.Button,
    events.RelayFeedback,
    events.PowerFail,
    events.Shutdown,
    events.SetClock,
    events.Tamper,
    events.Anomaly,
)
_EVENTS = {}
for _cls in EVENT_CLASSES:
    _EVENTS[_cls.kind] = _cls


def pairs(d):
    """A dict as sorted [key, value] pairs (recursively for dict values)."""
    out = []
    for k in sorted(d):
        v = d[k]
        out.append([k, pairs(v) if isinstance(v, dict) else v])
    return out


def event_to_wire(ev):
    """Event object -> JSON-able list."""
    fields = [getattr(ev, name) for name in ev.__slots__]
    if ev.kind == "command":
        fields[1] = pairs(fields[1])
    return [ev.kind] + fields


def event_from_wire(item):
    """JSON list -> event object (raises ValueError on an unknown kind)."""
    cls = _EVENTS.get(item[0])
    if cls is None:
        raise ValueError("unknown event kind %r" % (item[0],))
    fields = list(item[1:])
    if item[0] == "command":
        fields[1] = dict((k, v) for k, v in fields[1])
    return cls(*fields)


def action_to_wire(a):
    """Action object -> JSON-able list."""
    k = a.kind
    if k == "publish":
        r = a.record
        return [k, r.seq, r.kind, r.wall, r.reason, pairs(r.data)]
    return [k] + [getattr(a, name) for name in a.__slots__]


def action_from_wire(item):
    """JSON list -> action object."""
    k = item[0]
    if k == "publish":
        return events.Publish(Record(item[1], item[2], item[3], item[4], dict((p[0], p[1]) for p in item[5])))
    if k == "pulse_coil":
        return events.PulseCoil(item[1], item[2])
    if k == "persist":
        return events.Persist(item[1], item[2])
    if k == "alarm":
        return events.Alarm(item[1], item[2])
    if k == "ack":
        return events.Ack(item[1], item[2], item[3])
    raise ValueError("unknown action kind %r" % (k,))


def stats(meter):
    """The figures the simulator reports, as a list (same on both runtimes)."""
    acc = meter.account
    return [meter.energy_wh, meter.rate_energy_wh, acc.balance, acc.charged, acc.credited, meter.relay_state, meter.alarm_level]


STAT_NAMES = ("energy_wh", "rate_energy_wh", "balance", "charged", "credited", "relay_state", "alarm_level")
