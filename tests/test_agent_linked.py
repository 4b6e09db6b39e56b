"""LinkedMeter on the Device: one atomic commit of {meter, tokens, link}
before any ack or relay close; key change, set_clock, keypad paths and
DL/T 645 acks; against a real store on disk (no broker: the Outs are
opened with the head-end's keys)."""

import os

import pytest

from agent import results, settings
from agent.app import App
from agent.events import Command, Pulses, Tamper, Tick
from agent.link import envelope, topics
from agent.link.agent import LinkedMeter
from agent.link.session import Session
from agent.store import OsFS, Store
from agent.tokens import TokenGuard, key_change_args
from agent.tokens import keypad as kp
from headend import keys as hkeys
from headend.link import Fleet
from headend.shadow import Shadow
import linked_rig

MID = "000000000042"
MASTER = bytes(range(100, 132))
W = 1790000000


def _cfg(**account):
    kk = hkeys.keypad_key(MASTER, MID)
    acc = {"opening_balance": 0, "trip_delay_s": 0}
    acc.update(account)
    return settings.load({
        "meter": {"id": MID},
        "account": acc,
        "tokens": {"key": Fleet(MASTER).meter_key(MID).hex(), "keypad_key": kk.hex(),
                   "keypad_starting_code": kp.Chain(kk).start},
        "link": {"key": Fleet(MASTER).link_key(MID).hex()},
    })


class Rig:
    def __init__(self, tmp_path, **account):
        self.dir = str(tmp_path)
        self.fleet = Fleet(MASTER)
        self.cfg = _cfg(**account)
        self.clock = []
        self.build()

    def build(self):
        app = App(self.cfg, OsFS(), self.dir, os.urandom(8), on_clock=self.clock.append)
        self.store, self.device, self.guard, self.session, self.linked = (
            app.store, app.device, app.guard, app.session, app.linked)
        self.linked.boot(W, 0)
        self.broker(self.linked.connected(W, 0))

    def broker(self, outs):
        return linked_rig.broker(self.session, outs)

    def stored(self):
        return Store(OsFS(), self.dir, MID).load()[0][0].value

    def send(self, n, token, ref, wall=W, mono=1000):
        topic, payload = self.fleet.seal_token(MID, n, token, ref, wall)
        hw, outs = self.linked.received(topic, payload, wall, mono)
        return hw, self.broker(outs)

    def acks(self, outs):
        got = {}
        for o in outs:
            if o.topic.endswith("/" + topics.ACK):
                b = envelope.open_uplink(self.fleet.keys(MID), o.topic, o.payload, topics.ACK, MID)["b"]
                got[b["r"]] = b
        return got

    def events(self, outs):
        return [envelope.open_uplink(self.fleet.keys(MID), o.topic, o.payload, topics.EVT, MID)["b"]
                for o in outs if o.topic.endswith("/" + topics.EVT)]


def test_agent_linked_topup_one_commit_before_ack(tmp_path):
    r = Rig(tmp_path)
    commits = r.device.commits
    token = r.fleet.topup_token(MID, 1, 250000, W)
    hw, outs = r.send(1, token, "t1")
    assert r.acks(outs)["t1"]["code"] == results.ACCEPTED and r.acks(outs)["t1"]["bal"] == 250000
    assert r.device.commits == commits + 1  # credit, used token, used n and the ack: one commit
    assert r.linked.meter.relay_state == "connected"
    v = r.stored()
    assert v["meter"] is not None and r.linked.meter.balance == 250000
    g = TokenGuard.from_config(MID, r.cfg["tokens"])
    g.restore(v["tokens"])
    assert g.check(token, W)[0] == results.ALREADY_USED
    assert any(item for item in v["link"]["outbox"]["items"] if "t1" in repr(item))
    # A restart on the same store: the balance is there, the token cannot be used again.
    r.build()
    assert r.linked.meter.balance == 250000
    hw, outs = r.send(2, token, "t1-again")
    assert r.acks(outs)["t1-again"]["code"] == results.ALREADY_USED
    assert r.linked.meter.balance == 250000


def test_agent_linked_hoarding_refusal_leaves_token_usable(tmp_path):
    r = Rig(tmp_path, hoarding=100000)
    token = r.fleet.topup_token(MID, 1, 250000, W)
    hw, outs = r.send(1, token, "big")
    assert r.acks(outs)["big"]["code"] == results.OVER_HOARDING_LIMIT
    assert r.guard.check(token, W)[0] == results.ACCEPTED  # not marked used


def test_agent_linked_key_change_installs_key_not_core(tmp_path):
    r = Rig(tmp_path)
    new_key = bytes(range(7, 39))
    args = key_change_args(r.fleet.meter_key(MID), MID, 1, new_key, os.urandom(16))
    token = r.fleet.command_token(MID, 1, "key_change", args, W)
    before = len(r.linked.meter.records("command"))
    hw, outs = r.send(1, token, "kc")
    assert r.acks(outs)["kc"]["code"] == results.ACCEPTED
    assert r.guard.revision == 1 and r.session.key_rev == 1
    assert len(r.linked.meter.records("command")) == before  # the core never saw it
    assert r.stored()["tokens"]["r"] == 1 and r.stored()["tokens"]["ky"] == new_key
    assert any(e.get("kind") == "key_change" for e in r.events(outs))


def test_agent_linked_set_clock(tmp_path):
    r = Rig(tmp_path)
    token = r.fleet.command_token(MID, 1, "set_clock", {"wall": W + 3600}, W)
    hw, outs = r.send(1, token, "clk")
    assert r.acks(outs)["clk"]["code"] == results.ACCEPTED
    assert r.clock == [W + 3600]  # the shell sets its RTC
    assert r.linked.meter.records("clock_set")[0].data["new"] == W + 3600
    hw, outs = r.send(2, token, "clk2")
    assert r.acks(outs)["clk2"]["code"] == results.ALREADY_USED


def test_agent_linked_keypad_paths(tmp_path):
    r = Rig(tmp_path)
    chain = kp.Chain(hkeys.keypad_key(MASTER, MID), r.cfg["tokens"]["keypad_starting_code"])
    code, hw, outs = r.linked.keypad(chain.token(20, 2), W, 1000)  # ADD 20.00 at count 2
    assert code == results.ACCEPTED and r.linked.meter.balance == 200000
    assert r.linked.keypad(chain.token(20, 2), W, 1100)[0] == results.ALREADY_USED
    code, hw, outs = r.linked.keypad(chain.token(5, 3), W, 1200)  # SET 5.00 at count 3
    assert code == results.ACCEPTED and r.linked.meter.balance == 50000
    # A wrong entry: the lockout is committed before the next entry is taken.
    commits = r.device.commits
    code, hw, outs = r.linked.keypad("123456789", W, 1300)
    assert code == results.BAD_MAC and r.device.commits == commits + 1
    assert r.stored()["tokens"]["lo"] == r.guard.lockout.snapshot()
    # Counter sync: accepted and committed, no effect on the meter.
    code, hw, outs = r.linked.keypad(chain.token(kp.SYNC_VALUE, 5), W, 200000)
    assert code == results.ACCEPTED and r.linked.meter.balance == 50000
    # Disable PAYG: the meter goes postpaid.
    code, hw, outs = r.linked.keypad(chain.token(kp.DISABLE_VALUE, 7), W, 200100)
    assert code == results.ACCEPTED and r.linked.meter.payment_mode == "postpaid"
    assert r.stored()["tokens"] == r.guard.snapshot()


def test_agent_linked_dlt645_ack_stays_local(tmp_path):
    r = Rig(tmp_path)
    actions, outs = r.linked.dispatch([Command("trip", {}, "dlt645-1", W, 2000)], W)
    assert [a.code for a in actions if a.kind == "ack" and a.ref == "dlt645-1"] == [results.ACCEPTED]
    assert "dlt645-1" not in r.acks(outs)
    assert any(e.get("kind") == "command" for e in r.events(outs))


def test_agent_linked_rejects_commit_and_never_raise(tmp_path):
    r = Rig(tmp_path)
    t = topics.topic(MID, topics.CMD)
    for payload in (b"", b"\x00" * 50, os.urandom(300)):
        hw, outs = r.linked.received(t, payload, W, 3000)
        assert hw == []
    assert r.session.rejected == 3
    assert len(r.stored()["link"]["outbox"]["items"]) >= 3  # link_reject events are durable
    hw, outs = r.linked.handle(Tick(W + 1, 4000), W + 1)
    assert r.linked.meter.balance == 0


def test_agent_linked_set_credit_restores_lost_state(tmp_path):
    r = Rig(tmp_path)
    r.send(1, r.fleet.topup_token(MID, 1, 300000, W), "t1")
    # Both copies of the state destroyed: the meter boots in state_lost, supply on.
    for name in os.listdir(r.dir):
        with open(os.path.join(r.dir, name), "wb") as f:
            f.write(b"garbage")
    r.build()
    assert r.device.state_lost and r.linked.meter.relay_state == "guarantee"
    token = r.fleet.command_token(MID, 2, "set_credit", {"amount": 300000}, W)
    hw, outs = r.send(5, token, "restore")
    assert r.acks(outs)["restore"]["code"] == results.ACCEPTED
    assert r.linked.meter.balance == 300000 and not r.device.state_lost
    assert r.linked.meter.relay_state != "guarantee"
    assert any(e.get("kind") == "state_lost" and e.get("reason") == "cleared" for e in r.events(outs))
    assert r.stored()["device"]["lost"] == 0


def test_agent_linked_core_is_the_plain_meter_and_sees_no_fake_events(tmp_path):
    from agent.meter import Meter

    r = Rig(tmp_path)
    assert type(r.linked.meter) is Meter  # no subclass hooked into the Device
    before = r.linked.meter.snapshot()
    commits = r.device.commits
    # Only the guard changes (key change), only the session changes (a refused
    # message): each is one commit, and the core is not touched at all.
    new_key = bytes(range(7, 39))
    args = key_change_args(r.fleet.meter_key(MID), MID, 1, new_key, os.urandom(16))
    r.send(1, r.fleet.command_token(MID, 1, "key_change", args, W), "kc", mono=5000)
    assert r.device.commits == commits + 1
    r.linked.received(topics.topic(MID, topics.CMD), b"junk", W + 30, 35000)
    assert r.device.commits == commits + 2
    assert r.linked.meter.snapshot() == before
    assert r.linked.meter.mono == 0  # no Tick was fed at any time


def test_agent_linked_old_form_is_gone():
    from agent.meter import Meter, load_config

    fleet = Fleet(MASTER)
    meter = Meter(load_config({"meter": {"id": MID}}))
    with pytest.raises(TypeError):
        LinkedMeter(meter, TokenGuard(MID, fleet.meter_key(MID)), Session(MID, fleet.keys(MID), os.urandom(8)),
                    lambda value: None)


def test_agent_linked_token_kinds_match_the_token_layer():
    from agent.link import agent as linked_mod
    from agent.tokens import mqtt as tm

    assert (linked_mod.TOPUP, linked_mod.COMMAND, linked_mod.KEY_CHANGE, linked_mod.SET_CLOCK) == (
        tm.TOPUP, tm.COMMAND, tm.KEY_CHANGE, tm.SET_CLOCK)


def test_agent_linked_next_deadline_covers_checkpoint_and_telemetry(tmp_path):
    r = Rig(tmp_path, opening_balance=10 ** 7)
    r.linked.handle(Tick(W + 5, 5000), W + 5)  # the boot's coil pulse is done; the telemetry clock starts
    assert r.linked.next_deadline() == r.linked.next_tele  # nothing else is due before it
    r.linked.handle(Pulses(32, W + 6, 6000), W + 6)  # 10 Wh: a checkpoint is now owed
    assert r.linked.next_deadline() == W + 60  # checkpoint_s after the boot commit
    writes = r.store.writes
    r.linked.handle(Tick(W + 60, 60000), W + 60)
    assert r.store.writes == writes + 1


def _shadow_of(r, outs, shadow):
    for o in outs:
        meter_id, leaf, fields = r.fleet.open(o.topic, o.payload)
        shadow.record(meter_id, leaf, fields, W)


def test_agent_linked_state_carries_chg_for_the_exact_balance_check(tmp_path):
    r = Rig(tmp_path)
    shadow = Shadow()
    _shadow_of(r, r.broker(r.linked.connected(W, 0)), shadow)  # the retained state: the baseline
    hw, outs = r.send(1, r.fleet.topup_token(MID, 1, 250000, W), "t1")
    _shadow_of(r, outs, shadow)
    hw, outs = r.linked.handle(Pulses(3200, W + 10, 10000), W + 10)  # 1 kWh charged
    _shadow_of(r, r.broker(outs), shadow)
    hw, outs = r.linked.handle(Tamper(True, W + 11, 11000), W + 11)  # a commit: the state is published
    _shadow_of(r, r.broker(outs), shadow)
    m = r.linked.meter
    state = shadow.meters(MID)[0]["state"]
    assert state["chg"] == m.account.charged == 5883 and state["bal"] == m.balance == 250000 - 5883
    assert state["bal"] == 0 + m.account.credited - state["chg"]
    assert [p for p in shadow.reconcile(MID)["problems"] if p["code"] == "balance_mismatch"] == []
    # A balance one unit short is caught only because ``chg`` is exact.
    shadow.record(MID, "state", {"t": W + 12, "b": dict(state, bal=state["bal"] - 1)}, W + 12)
    assert [p["code"] for p in shadow.reconcile(MID)["problems"] if p["code"] == "balance_mismatch"] == [
        "balance_mismatch"]


def test_telemetry_comes_at_the_meters_own_second_of_the_period():
    """A fleet must not report all at once: each meter keeps its own offset."""
    from agent.link.agent import LinkedMeter

    lm = LinkedMeter.__new__(LinkedMeter)
    lm.telemetry_s = 60
    lm.telemetry_offset_s = 17
    assert lm._next_report(1_800_000_000) == 1_800_000_017  # 1_800_000_000 is a whole minute
    assert lm._next_report(1_800_000_017) == 1_800_000_077
    assert lm._next_report(1_800_000_016) == 1_800_000_017
