"""Issue 10 §3: a meter whose state is lost keeps its replay protection,
gives bounded and visible free supply, has a way out on the keypad alone,
and never takes a config that no longer fits its store for a fresh meter."""

import os
import subprocess
import sys

import pytest

from agent import results
from agent.config import ConfigError
from agent.events import Tick
from agent.link.outbox import Outbox
from agent.link.session import Q_LEASE, Q_MARGIN, Session
from agent.tokens import keypad as kp
from headend import keys as hkeys
from linked_rig import MASTER, MID, W, Rig, config, keypad_codes

AMOUNT = 50000


def destroy(directory, prefixes):
    for name in os.listdir(directory):
        if name.startswith(prefixes):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(b"garbage")


def history(directory, cfg=None):
    """Three MQTT top-ups and two keypad codes: (rig, tokens, codes)."""
    r = Rig(directory, seed=1, cfg=cfg)
    tokens = [r.fleet.topup_token(MID, i + 1, AMOUNT, W) for i in range(3)]
    for i, tok in enumerate(tokens):
        assert r.send(i + 1, tok, "t%d" % i, W + 10) == results.ACCEPTED
    codes = keypad_codes(2) if r.guard.keypad is not None else []
    for digits in codes:
        assert r.keypad(digits, W + 20) == results.ACCEPTED
    # The same token again is answered already_used before the loss.
    assert r.send(10, tokens[-1], "again", W + 30) == results.ALREADY_USED
    return r, tokens, codes


def test_state_slots_lost_replay_marks_survive(tmp_path):
    r, tokens, codes = history(str(tmp_path))
    destroy(str(tmp_path), ("state.", "ckpt."))
    m = Rig(str(tmp_path), seed=2, wall=W + 100)
    assert m.device.state_lost and m.linked.meter.relay_state == "guarantee"
    for i, tok in enumerate(tokens):
        assert m.send(20 + i, tok, "replay%d" % i, W + 110) == results.ALREADY_USED, i
    for digits in codes:
        assert m.keypad(digits, W + 110) == results.ALREADY_USED
    # The link's own sequence numbers are kept too: an old command envelope is refused.
    assert m.send(3, r.fleet.topup_token(MID, 99, AMOUNT, W), "old-n", W + 110) == results.ALREADY_USED
    assert m.linked.meter.account.credited == 0


def test_restore_after_everything_lost_carries_the_marks(tmp_path):
    r, tokens, codes = history(str(tmp_path))
    destroy(str(tmp_path), ("state.", "ckpt.", "mark."))
    m = Rig(str(tmp_path), seed=2, wall=W + 100)
    assert m.device.state_lost
    # pmeter restore: set_credit with the ledger's keypad high-water mark
    # (headend.link.HeadEnd.restore), sequence above every token issued.
    restore = m.fleet.command_token(MID, 4, "set_credit", {"amount": 3 * AMOUNT, "kp": 4}, W)
    assert m.send(11, restore, "restore", W + 110) == results.ACCEPTED
    assert not m.device.state_lost and m.linked.meter.balance == 3 * AMOUNT
    for i, tok in enumerate(tokens):
        assert m.send(20 + i, tok, "replay%d" % i, W + 120) in (results.ALREADY_USED, results.TOO_OLD), i
    for digits in codes:
        assert m.keypad(digits, W + 120) != results.ACCEPTED
    for n in (1, 2, 3, 10):  # old command envelopes too
        assert m.send(n, r.fleet.topup_token(MID, 90 + n, AMOUNT, W), "n%d" % n, W + 120) != results.ACCEPTED
    assert m.linked.meter.balance == 3 * AMOUNT
    # A new token still works, and so does the next keypad code.
    assert m.send(12, m.fleet.topup_token(MID, 5, AMOUNT, W), "new", W + 130) == results.ACCEPTED
    assert m.keypad(keypad_codes(3)[2], W + 130) == results.ACCEPTED
    # And all of it survives a restart.
    m2 = Rig(str(tmp_path), seed=3, wall=W + 200)
    assert not m2.device.state_lost and m2.linked.meter.balance == 4 * AMOUNT + 10000
    assert m2.send(30, tokens[0], "late", W + 210) != results.ACCEPTED


def test_free_supply_after_loss_is_bounded_and_visible(tmp_path):
    cfg = config(lost_supply_s=3600)
    history(str(tmp_path), cfg)
    destroy(str(tmp_path), ("state.", "ckpt.", "mark."))
    m = Rig(str(tmp_path), seed=2, wall=W + 100, cfg=cfg)
    lost = m.linked.meter.records("state_lost")[0]
    assert lost.reason == "no_valid_state" and lost.data["free_until"] == W + 100 + 3600
    assert m.linked.next_deadline() <= W + 100 + 3600
    m.linked.handle(Tick(W + 3000, 3_000_000), W + 3000)
    assert m.linked.meter.relay_state == "guarantee"
    m.linked.handle(Tick(W + 3700, 3_700_000), W + 3700)
    ended = m.linked.meter.records("state_lost")[0]
    assert ended.reason == "free_supply_ended" and ended.data["limit_s"] == 3600
    assert m.device.state_lost and m.linked.meter.relay_state != "guarantee"
    assert not m.linked.meter.relay_closed  # balance 0, no credit: cut
    # A restart does not hand out another period of free supply.
    m2 = Rig(str(tmp_path), seed=3, wall=W + 4000, cfg=cfg)
    assert m2.device.state_lost and m2.linked.meter.relay_state != "guarantee"


def test_keypad_only_meter_leaves_state_lost_with_a_set_code(tmp_path):
    _r, _tokens, codes = history(str(tmp_path))
    destroy(str(tmp_path), ("state.", "ckpt.", "mark."))
    m = Rig(str(tmp_path), seed=2, wall=W + 100)
    assert m.device.state_lost
    set_code = kp.Chain(hkeys.keypad_key(MASTER, MID)).token(120, 5)  # SET 120 CNY, odd count above those used
    assert m.keypad(set_code, W + 110) == results.ACCEPTED
    assert not m.device.state_lost and m.linked.meter.balance == 120 * 10000
    assert m.linked.meter.relay_state != "guarantee"
    assert m.linked.meter.records("state_lost")[0].reason == "cleared"
    for digits in codes:  # the SET supersedes every older code
        assert m.keypad(digits, W + 120) != results.ACCEPTED


def test_config_that_no_longer_fits_is_a_config_error_and_changes_nothing(tmp_path):
    history(str(tmp_path))
    before = {n: open(os.path.join(tmp_path, n), "rb").read() for n in os.listdir(tmp_path)}
    with pytest.raises(ConfigError) as e:
        Rig(str(tmp_path), seed=2, wall=W + 100, cfg=config(keypad=False))
    assert e.value.key == "tokens.keypad_key"
    # Also when only the marks record is left (the state slots are gone).
    destroy(str(tmp_path), ("state.", "ckpt."))
    damaged = {n: open(os.path.join(tmp_path, n), "rb").read() for n in os.listdir(tmp_path)}
    assert damaged != before
    with pytest.raises(ConfigError) as e:
        Rig(str(tmp_path), seed=2, wall=W + 100, cfg=config(keypad=False))
    assert e.value.key == "tokens.keypad_key"
    assert {n: open(os.path.join(tmp_path, n), "rb").read() for n in os.listdir(tmp_path)} == damaged


def test_pmeter_agent_refuses_a_config_that_no_longer_fits(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    history(str(data))
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    cfg = config(keypad=False)
    conf = tmp_path / "agent.toml"
    keys = tmp_path / "keys.toml"
    keys.write_text('[tokens]\nkey = "%s"\n' % cfg["tokens"]["key"])
    keys.chmod(0o600)
    conf.write_text('[meter]\nid = "%s"\n[agent]\nkeys = "keys.toml"\n[sim]\nload_w = 0\n' % MID)
    done = subprocess.run([sys.executable, "-m", "pmeter", "agent", "--config", str(conf), "--hw", "sim",
                           "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "tokens.keypad_key" in done.stderr and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_session_outbox_numbers_stay_under_the_marks_lease():
    s = Session(MID, None, bytes(8), outbox=Outbox())
    s.outbox.next_seq = 10
    marks = s.marks()
    assert marks["q"] == 10 + Q_LEASE
    # Telemetry needs no commit until the lease runs low; then the session asks for one.
    for _ in range(200):
        s.telemetry({}, W)
        if s.outbox.next_seq + Q_MARGIN > marks["q"]:
            break
        assert not s.dirty
        s.snapshot()  # a commit without the marks (a checkpoint) does not renew the lease
    assert s.dirty and s.outbox.next_seq == marks["q"] - Q_MARGIN + 1
    # A restart from any copy numbers new entries above the lease, never lower.
    s.outbox.next_seq = 10
    s.raise_marks(marks)
    assert s.outbox.next_seq == marks["q"]
    s.outbox.next_seq = 500
    s.raise_marks(marks)
    assert s.outbox.next_seq == 500
    s.outbox.next_seq = 10
    s.raise_marks(dict(marks, q=900, e=marks["e"] + 1))  # another epoch: its numbers are not ours
    assert s.outbox.next_seq == 10
    s.raise_marks(dict(marks, g=[40, 0]))
    assert s.guard.check(40) == results.ALREADY_USED and s.guard.check(41) is None
    with pytest.raises(ValueError):
        s.raise_marks({"e": 1, "q": 0, "g": [0, 0]})
