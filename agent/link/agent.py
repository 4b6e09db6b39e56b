"""Glue of one linked meter: core + token guard + link session + commit.

Portable and still sans-I/O: the shell gives it a ``commit(value)``
function (the durable store) and carries out what it returns - MQTT
``Out``s for the transport, and the core's hardware actions (PulseCoil,
Alarm).  Everything that must be durable is committed, in one commit of
``{"meter", "tokens", "link"}``, before anything it justifies is returned:
no ack is published and no relay is closed before the credit, the used
token, the used command sequence and the outbox entry are on disk.

When the store engineer's Device layer lands this is the place that would
feed it instead of calling ``commit`` directly.
"""

from agent import results
from agent.events import Command, TopUp
from agent.link import topics

TELEMETRY_S = 300

def record_body(rec):
    """An event record as the map published on ``evt``."""
    return {"data": rec.data, "kind": rec.kind, "reason": rec.reason, "seq": rec.seq, "wall": rec.wall}


def summary(meter):
    """What telemetry and the retained state carry (ints and strings only)."""
    pos = meter.relay_position
    return {
        "alarm": meter.alarm_level,
        "bal": meter.balance,
        "limits": meter.limits,
        "mode": meter.payment_mode,
        "rates": list(meter.rate_energy_wh),
        "relay": meter.relay_state,
        "relay_pos": "unknown" if pos is None else ("closed" if pos else "open"),
        "wh": meter.energy_wh,
    }


class LinkedMeter:
    """Runs a Meter with its TokenGuard behind a link Session."""

    def __init__(self, meter, guard, session, commit, telemetry_s=TELEMETRY_S):
        self.meter = meter
        self.guard = guard
        self.session = session
        self.commit_fn = commit
        self.telemetry_s = telemetry_s
        self.next_tele = None
        self.commits = 0

    def value(self):
        """The one value the store keeps for this meter."""
        return {"link": self.session.snapshot(), "meter": self.meter.snapshot(), "tokens": self.guard.snapshot()}

    def commit(self):
        """Commit everything now (the caller's Persist)."""
        self.commit_fn(self.value())
        self.commits += 1

    def _process(self, actions, wall, ack_refs=None):
        # Queue the core's Publish/Ack actions in the outbox, commit once if
        # anything durable changed, and only then hand out the rest.
        outs = []
        hw = []
        persist = False
        for a in actions:
            kind = a.kind
            if kind == "persist":
                persist = True
            elif kind == "publish":
                outs.extend(self.session.event(record_body(a.record), wall))
            elif kind == "ack":
                ref = a.ref
                if ack_refs is not None and ref in ack_refs:
                    ref = ack_refs[ref]
                outs.extend(self.session.ack(ref, a.code, a.balance, wall))
            else:
                hw.append(a)
        if persist:
            outs.extend(self.session.set_state(summary(self.meter), wall))
        if persist or self.session.dirty:
            self.commit()
        return hw, outs

    def handle(self, event, wall):
        """Feed a local event (Tick, Pulses, Boot, ...): (hardware actions, Outs)."""
        hw, outs = self._process(self.meter.handle(event), wall)
        if self.next_tele is None:
            self.next_tele = wall - wall % self.telemetry_s + self.telemetry_s
        elif wall >= self.next_tele:
            # Telemetry is not worth a flash write of its own: it is
            # committed with the next commit, and may be lost before that.
            self.next_tele = wall - wall % self.telemetry_s + self.telemetry_s
            outs.extend(self.session.telemetry(summary(self.meter), wall))
        return hw, outs

    def connected(self, wall, mono):
        """The transport connected: birth, status, state and the outbox replay."""
        if self.session.state is None:
            self.session.state = summary(self.meter)
        return self.session.connected(wall, mono)

    def received(self, topic, payload, wall, mono, retained=False):
        """A message from the broker: (hardware actions, Outs).  Never raises."""
        try:
            inbound, outs = self.session.received(topic, payload, wall, mono, retained)
        except Exception as e:  # a bug in a check must not take the meter down
            inbound = None
            outs = self.session.event({"kind": "link_reject", "code": results.MALFORMED,
                                       "why": "internal: %r" % (e,), "wall": wall}, wall)
        if inbound is None:
            if self.session.dirty:
                self.commit()
            return [], outs
        return self._inbound(inbound, wall, mono)

    def _inbound(self, inbound, wall, mono):
        s = self.session
        token_bytes = inbound.args.get("token") if inbound.name == "token" else None
        if inbound.name != "token":
            code = results.UNKNOWN_COMMAND
        elif not isinstance(token_bytes, (bytes, bytearray)):
            code = results.MALFORMED
        elif not s.can_accept_money():
            code = results.REFUSED
        else:
            code, token = self.guard.check(bytes(token_bytes), wall)
        s.commit(inbound.n)
        if code != results.ACCEPTED:
            outs = s.ack(inbound.ref, code, self.meter.balance, wall)
            outs.extend(s.event({"code": code, "kind": "token_reject", "ref": inbound.ref, "wall": wall}, wall))
            self.commit()
            return [], outs
        if token.kind == "topup":
            event = TopUp(token.amount, inbound.ref, wall, mono, "mqtt")
        else:
            event = Command(token.command, token.args, inbound.ref, wall, mono)
        actions = self.meter.handle(event)
        applied = False
        for a in actions:
            if a.kind == "ack" and a.ref == inbound.ref and a.code == results.ACCEPTED:
                applied = True
        if applied:
            # Mark the token used in the same commit as its effect; a token
            # the core refused (hoarding limit) stays usable later.
            self.guard.accept(token)
        hw, outs = self._process(actions, wall)
        if not self.meter_acked(actions, inbound.ref):
            outs.extend(s.ack(inbound.ref, results.REFUSED, self.meter.balance, wall))
            self.commit()
        return hw, outs

    @staticmethod
    def meter_acked(actions, ref):
        """True if the core acknowledged ``ref`` itself."""
        for a in actions:
            if a.kind == "ack" and a.ref == ref:
                return True
        return False
