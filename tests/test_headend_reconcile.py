"""One ledger: every sequence from headend.ledger.Ledger, the shadow
reconciles issued (ledger) vs applied (events, once per (meter, seq)) vs
balance (state), across restarts and with two vending processes."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.tokens import TokenGuard
from headend import keys, vend
from headend.ledger import Ledger
from headend.shadow import Shadow

ROOT = Path(__file__).resolve().parent.parent
MID = "000000000042"
MASTER = bytes(range(32))
T0 = 1_700_000_000


class Feed:
    """Builds opened meter messages as headend.link.Fleet.open returns them."""

    def __init__(self, shadow, epoch=7, birth=True):
        self.shadow = shadow
        self.q = 0
        self.rseq = 0
        self.epoch = epoch
        if birth:
            self.birth(T0 - 1)

    def birth(self, t, n=0):
        self.shadow.record(MID, "birth", {"t": t, "b": {"epoch": self.epoch, "last_q": self.q, "n": n}}, t)

    def _send(self, leaf, body, t, q=None):
        if q is None:
            self.q += 1
            q = self.q
        self.shadow.record(MID, leaf, {"q": q, "t": t, "b": body}, t)
        return q

    def topup(self, ref, amount, t, balance=0):
        self.rseq += 1
        return self._send("evt", {"seq": self.rseq, "kind": "topup", "reason": "accepted", "wall": t,
                                  "data": {"ref": ref, "amount": amount, "balance": balance, "source": "mqtt"}}, t)

    def event(self, kind, reason, data, t):
        self.rseq += 1
        return self._send("evt", {"seq": self.rseq, "kind": kind, "reason": reason, "wall": t, "data": data}, t)

    def ack(self, ref, code, bal, t):
        return self._send("ack", {"r": ref, "n": 0, "code": code, "bal": bal}, t)

    def state(self, bal, t, chg=None):
        body = {"bal": bal, "evt": self.rseq}
        if chg is not None:
            body["chg"] = chg
        self.shadow.record(MID, "state", {"t": t, "b": body}, t)


def codes(rec):
    return sorted(p["code"] for p in rec["problems"])


def test_reconcile_clean_then_each_discrepancy(tmp_path):
    shadow = Shadow(tmp_path / "s.db")
    f = Feed(shadow)
    f.state(0, T0, chg=0)
    s1, _ = vend.topup(shadow.ledger, MASTER, MID, 500000, T0 + 1)
    s2, _ = vend.topup(shadow.ledger, MASTER, MID, 200000, T0 + 1)
    assert (s1, s2) == (1, 2)
    q = f.topup("mqtt:1", 500000, T0 + 2, 500000)
    f.ack("mqtt:1", "accepted", 500000, T0 + 2)
    f.state(500000, T0 + 2, chg=0)
    # An outbox re-send after a lost PUBACK (same q) and the same record under a new q: both ignored.
    shadow.record(MID, "evt", {"q": q, "t": T0 + 2, "b": {"seq": 1, "kind": "topup", "reason": "accepted",
                                                          "wall": T0 + 2, "data": {"ref": "mqtt:1", "amount": 500000}}},
                  T0 + 3)
    shadow.record(MID, "evt", {"q": 99, "t": T0 + 2, "b": {"seq": 1, "kind": "topup", "reason": "accepted",
                                                           "wall": T0 + 2, "data": {"ref": "mqtt:1", "amount": 500000}}},
                  T0 + 3)
    rec = shadow.reconcile(MID, now=T0 + 10, timeout_s=600)
    assert rec["issued"] == 700000 and rec["applied"] == 500000 and rec["pending"] == ["mqtt:2"]
    assert rec["problems"] == [] and rec["balance"] == 500000
    assert shadow.ledger.token(MID, "mqtt", 1)["result"] == "accepted"
    # Issued and never applied, past the timeout.
    assert codes(shadow.reconcile(MID, now=T0 + 700, timeout_s=600)) == ["not_applied"]
    # Credit applied that this head-end never issued (a forged or foreign token).
    f.topup("mqtt:77", 10000, T0 + 20, 510000)
    f.state(510000, T0 + 20, chg=0)
    assert codes(shadow.reconcile(MID, now=T0 + 21, timeout_s=600)) == ["never_issued"]
    # The same token applied twice (two distinct records).
    f.topup("mqtt:1", 500000, T0 + 30, 1010000)
    f.state(1010000, T0 + 30, chg=0)
    assert "applied_twice" in codes(shadow.reconcile(MID, now=T0 + 31))
    # A balance that contradicts the ledger minus charges.
    f.state(1010000 + 5, T0 + 40, chg=0)
    rec = shadow.reconcile(MID, now=T0 + 41)
    assert "balance_mismatch" in codes(rec)
    bad = [p for p in rec["problems"] if p["code"] == "balance_mismatch"][0]
    assert bad["expected"] == 1010000 and bad["balance"] == 1010005
    # Charges explain a lower balance exactly.
    f.state(1010000 - 3000, T0 + 50, chg=3000)
    assert "balance_mismatch" not in codes(shadow.reconcile(MID, now=T0 + 51))


def test_reconcile_without_charge_counter_flags_only_credit_from_nowhere(tmp_path):
    shadow = Shadow(tmp_path / "s.db")
    f = Feed(shadow)
    f.state(10000, T0)
    vend.topup(shadow.ledger, MASTER, MID, 50000, T0)
    f.topup("mqtt:1", 50000, T0, 60000)
    f.state(40000, T0 + 100)  # consumption: fine
    assert shadow.reconcile(MID)["problems"] == []
    f.state(70000, T0 + 200)  # more than baseline + credits
    assert codes(shadow.reconcile(MID)) == ["balance_mismatch"]


def test_ledger_is_the_only_sequence_source_across_restarts(tmp_path, monkeypatch):
    from agent.tokens import mqtt

    if "set_credit" not in mqtt.COMMANDS:  # until agent/tokens/mqtt.py lists the core's set_credit
        monkeypatch.setattr(mqtt, "COMMANDS", mqtt.COMMANDS + ("set_credit",))
    path = tmp_path / "head.db"
    shadow = Shadow(path)
    seqs = [vend.topup(shadow.ledger, MASTER, MID, 100, T0)[0] for _ in range(3)]
    seqs.append(vend.command(shadow.ledger, MASTER, MID, "trip", {}, T0)[0])
    shadow.close()
    # pmeter vend (its own Ledger on the same file) and a restarted head-end continue the same sequence.
    led = Ledger(str(path))
    seqs.append(vend.topup(led, MASTER, MID, 100, T0)[0])
    led.close()
    shadow = Shadow(path)
    seqs.append(vend.command(shadow.ledger, MASTER, MID, "set_credit", {"amount": 5}, T0)[0])
    assert seqs == [1, 2, 3, 4, 5, 6]
    # No table of sequences besides the ledger's.
    names = {r[0] for r in shadow.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "seqs" not in names and "ledger" not in names
    # The tokens really carry the ledger's sequences: the meter accepts each once.
    guard = TokenGuard(MID, keys.meter_key(MASTER, MID, 0))
    for t in shadow.ledger.tokens(MID):
        raw = bytes.fromhex(vend_token(shadow.ledger, t["seq"]))
        code, tok = guard.check(raw, T0)
        assert code in ("accepted",), (t, code)
        guard.accept(tok)
        assert guard.check(raw, T0)[0] == "already_used"


def vend_token(ledger, seq):
    with ledger.lock:
        return ledger.db.execute("SELECT token FROM tokens WHERE meter_id=? AND seq=?", (MID, seq)).fetchone()[0]


WORKER = """
import sys
sys.path.insert(0, %r)
from headend import vend
from headend.shadow import Shadow
from headend.ledger import Ledger
import os, time
shadow = Shadow(sys.argv[1], Ledger(sys.argv[2]))
while not os.path.exists(sys.argv[4]):  # start together
    time.sleep(0.001)
print(",".join(str(vend.topup(shadow.ledger, bytes(range(32)), %r, 100, 1700000000)[0]) for _ in range(int(sys.argv[3]))))
"""


def test_two_processes_vending_at_once_never_share_a_sequence(tmp_path):
    ledger = str(tmp_path / "ledger.db")
    go = tmp_path / "go"
    n = 100
    procs = [subprocess.Popen([sys.executable, "-c", WORKER % (str(ROOT), MID), str(tmp_path / ("s%d.db" % i)),
                               ledger, str(n), str(go)], stdout=subprocess.PIPE, text=True) for i in range(2)]
    time.sleep(0.3)  # both importing / waiting
    go.write_text("go")
    outs = [p.communicate(60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    each = [[int(x) for x in o.strip().split(",")] for o in outs]
    got = each[0] + each[1]
    assert sorted(got) == list(range(1, 2 * n + 1))
    # (Started together; whether SQLite's write lock interleaves them or one
    # runs first, no sequence is issued twice and none is skipped.)
    assert len(Ledger(ledger).tokens(MID)) == 2 * n


def test_restore_plan_from_the_last_good_state(tmp_path):
    shadow = Shadow(tmp_path / "s.db")
    f = Feed(shadow)
    f.state(300000, T0)
    vend.topup(shadow.ledger, MASTER, MID, 100000, T0 + 5)
    f.topup("mqtt:1", 100000, T0 + 6, 400000)
    f.state(399000, T0 + 10)  # last good state
    try:
        shadow.restore_plan(MID)
        raise AssertionError("restore without a lost store")
    except ValueError as e:
        assert "state_lost" in str(e)
    # After the loss: the meter restarts from 0 and reports it after its first state.
    f.state(0, T0 + 100)
    f.event("state_lost", "no_valid_state", {"since": T0 + 100, "balance_valid": False, "found": []}, T0 + 100)
    f.state(-2000, T0 + 160)  # consumption since the loss (in guarantee mode)
    rec = shadow.reconcile(MID)
    assert "state_lost" in codes(rec)
    plan = shadow.restore_plan(MID)
    assert plan["good_balance"] == 399000 and plan["since_loss"] == -2000 and plan["amount"] == 397000
    f.event("state_lost", "cleared", {}, T0 + 200)
    assert shadow.reconcile(MID)["lost_since"] is None


def test_events_seen_before_the_meters_birth_are_not_filed_under_a_false_epoch(tmp_path):
    """A head-end that subscribes while a meter is connected sees its retained
    state and new events before any birth: no baseline until the epoch is
    known, and an entry re-sent after the birth is the same entry."""
    shadow = Shadow(tmp_path / "s.db")
    f = Feed(shadow, birth=False)
    f.state(10000, T0, chg=0)  # retained, before any birth
    s1, _ = vend.topup(shadow.ledger, MASTER, MID, 50000, T0)
    q1 = f.topup("mqtt:%d" % s1, 50000, T0 + 1, 60000)
    assert shadow.reconcile(MID)["problems"] == []
    # The meter reconnects: birth, then the entry it had not seen PUBACKed again.
    f.birth(T0 + 2)
    f.rseq -= 1
    f.q = q1 - 1
    f.topup("mqtt:%d" % s1, 50000, T0 + 1, 60000)
    f.state(60000, T0 + 3, chg=0)
    s2, _ = vend.topup(shadow.ledger, MASTER, MID, 50000, T0 + 4)
    f.topup("mqtt:%d" % s2, 50000, T0 + 5, 110000)
    f.state(105000, T0 + 6, chg=5000)
    rec = shadow.reconcile(MID)
    assert rec["problems"] == [] and rec["applied"] == 100000, rec
    assert shadow.applied(MID)["mqtt:%d" % s1]["records"] == [(7, 1)]
    # The balance check works from there: credit from nowhere is still found.
    f.state(999999, T0 + 7, chg=5000)
    assert codes(shadow.reconcile(MID)) == ["balance_mismatch"]


def test_refusals_stick_against_already_used_and_are_revended_once(tmp_path):
    shadow = Shadow(tmp_path / "s.db")
    f = Feed(shadow)
    led = shadow.ledger
    s1, _ = vend.topup(led, MASTER, MID, 200000, T0)
    f.ack("mqtt:%d" % s1, "over_hoarding_limit", 550000, T0 + 1)
    f.ack("mqtt:%d" % s1, "already_used", 550000, T0 + 2)  # the same token sent again
    assert led.token(MID, "mqtt", s1)["result"] == "over_hoarding_limit"
    assert codes(shadow.reconcile(MID)) == ["refused"]
    with pytest.raises(ValueError, match="no token"):
        vend.revend(led, MASTER, MID, "mqtt:99", T0 + 3)
    s2, tok = vend.revend(led, MASTER, MID, "mqtt:%d" % s1, T0 + 3)
    assert s2 == s1 + 1 and led.token(MID, "mqtt", s2)["amount"] == 200000
    assert TokenGuard(MID, keys.meter_key(MASTER, MID, 0)).check(tok, T0 + 4)[1].amount == 200000
    with pytest.raises(ValueError, match="already re-vended as mqtt:%d" % s2):
        vend.revend(led, MASTER, MID, "mqtt:%d" % s1, T0 + 3)
    rec = shadow.reconcile(MID)
    assert rec["problems"] == [] and rec["issued"] == 200000 and rec["pending"] == ["mqtt:%d" % s2]
    with pytest.raises(ValueError, match="only a top-up the meter refused"):  # not answered yet
        vend.revend(led, MASTER, MID, "mqtt:%d" % s2, T0 + 5)


def test_a_new_ledger_learns_each_meters_floor_from_its_births(tmp_path):
    shadow = Shadow(tmp_path / "s.db")
    f = Feed(shadow)
    s1, _ = vend.topup(shadow.ledger, MASTER, MID, 100, T0)
    f.ack("mqtt:%d" % s1, "already_used", 0, T0 + 1)
    assert codes(shadow.reconcile(MID)) == ["sequence_reused"]
    f.birth(T0 + 2, n=40)
    assert codes(shadow.reconcile(MID)) == ["ledger_behind", "sequence_reused"]
    assert vend.topup(shadow.ledger, MASTER, MID, 100, T0 + 3)[0] == 41
    f.birth(T0 + 4, n=12)  # an older birth never lowers the floor
    assert vend.topup(shadow.ledger, MASTER, MID, 100, T0 + 5)[0] == 42
