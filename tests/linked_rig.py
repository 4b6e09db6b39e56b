"""A linked meter (Device + TokenGuard + Session + LinkedMeter) on a real
store directory, with a stand-in broker that PUBACKs everything and keeps
what was published (opened with the head-end's keys)."""

import random

from agent import settings
from agent.device import Device
from agent.events import Pulses, Tick
from agent.link import envelope, topics
from agent.link.agent import LinkedMeter
from agent.link.session import Session
from agent.store import OsFS, Store
from agent.tokens import TokenGuard
from agent.tokens import keypad as kp
from headend import keys as hkeys
from headend.link import Fleet

MID = "000000000042"
MASTER = bytes(range(100, 132))
W = 1790000000


def broker(session, outs, seen=None):
    """What a broker does: PUBACK every outbox entry (``seen(out)`` first), so the
    window keeps moving; returns every Out in the order handled."""
    done = []
    while outs:
        o = outs.pop(0)
        done.append(o)
        if o.seq:
            if seen is not None:
                seen(o)
            outs.extend(session.puback(o.seq, W))
    return done


def config(keypad=True, **store):
    """A meter config: MQTT tokens, a keypad unless ``keypad`` is False, ``store`` settings."""
    kk = hkeys.keypad_key(MASTER, MID)
    tokens = {"key": Fleet(MASTER).meter_key(MID).hex()}
    if keypad:
        tokens.update({"keypad_key": kk.hex(), "keypad_starting_code": kp.Chain(kk).start})
    raw = {"meter": {"id": MID}, "account": {"opening_balance": 0, "trip_delay_s": 0}, "tokens": tokens}
    if store:
        raw["store"] = store
    return settings.load(raw)


class Rig:
    """A linked meter on ``directory`` and what it has sent."""

    def __init__(self, directory, seed, wall=W, cfg=None):
        self.dir = directory
        self.fleet = Fleet(MASTER)
        self.cfg = cfg if cfg is not None else config()
        self.sent = {}  # (epoch, q) -> (leaf, body) of every outbox entry this meter published
        self.store = Store(OsFS(), directory, MID)
        self.device = Device(self.cfg, self.store)
        self.guard = TokenGuard.from_config(MID, self.cfg["tokens"])
        self.session = Session(MID, self.fleet.keys(MID), random.Random(seed).randbytes(8))
        self.linked = LinkedMeter(self.device, self.guard, self.session)
        self.boot_actions, outs = self.linked.boot(wall, 0)
        self.broker(outs + self.linked.connected(wall, 0))

    def broker(self, outs):
        return broker(self.session, outs, self._keep)

    def _keep(self, o):
        leaf = o.topic.rsplit("/", 1)[1]
        body = envelope.open_uplink(self.fleet.keys(MID), o.topic, o.payload, leaf, MID)["b"]
        self.sent[(self.session.epoch, o.seq)] = (leaf, body)

    def send(self, n, token, ref, wall):
        topic, payload = self.fleet.seal_token(MID, n, token, ref, wall)
        _hw, outs = self.linked.received(topic, payload, wall, 1000)
        for o in self.broker(outs):
            if o.topic.endswith("/" + topics.ACK):
                b = envelope.open_uplink(self.fleet.keys(MID), o.topic, o.payload, topics.ACK, MID)["b"]
                if b["r"] == ref:
                    return b["code"]
        raise AssertionError("no ack for %s" % ref)

    def keypad(self, digits, wall):
        code, _hw, outs = self.linked.keypad(digits, wall, 1000)
        self.broker(outs)
        return code

    def meter_for(self, minutes, wall):
        """``minutes`` of 2 kW load with a Tick a minute: checkpoints, no top-up."""
        for _ in range(minutes):
            wall += 60
            _hw, outs = self.linked.handle(Pulses(107, wall, (wall - W) * 1000), wall)
            self.broker(outs)
            _hw, outs = self.linked.handle(Tick(wall, (wall - W) * 1000 + 1), wall)
            self.broker(outs)
        return wall


def keypad_codes(count):
    chain = kp.Chain(hkeys.keypad_key(MASTER, MID))
    return [chain.token(1, 2 * (i + 1)) for i in range(count)]  # ADD 1 CNY at even counts
