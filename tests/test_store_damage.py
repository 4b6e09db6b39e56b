"""Issue 10 §2: damage to any one file of the store never rolls money back
silently.  A linked meter (Device + TokenGuard + Session on a real
directory) takes 40 top-ups (MQTT tokens and keypad codes) with metering
between them; then each file of the store is damaged in turn (a flipped
bit in the payload, in the header, a truncation, zeros) and the meter
restarts.  Either the last committed state comes back, or the meter says
its state is lost; in both cases no token or keypad code is accepted a
second time and no (epoch, q) already sent is used again."""

import os
import pathlib
import random
import shutil
import tempfile

import pytest

from agent import results
from linked_rig import MID, W, Rig, keypad_codes

AMOUNT = 10000  # 1 CNY a top-up
FILES = ("state.a", "state.b", "ckpt.a", "ckpt.b", "mark.a", "mark.b")


def run_history(directory, end):
    """40 top-ups (every fifth a keypad code), metering between; ``end``: what comes last."""
    r = Rig(directory, seed=1)
    fleet = r.fleet
    wall = W
    codes = keypad_codes(8)
    tokens = []
    for i in range(40):
        wall = r.meter_for(3, wall)
        if i % 5 == 4:
            assert r.keypad(codes[i // 5], wall) == results.ACCEPTED
        else:
            tok = fleet.topup_token(MID, i + 1, AMOUNT, W)
            tokens.append(tok)
            assert r.send(i + 1, tok, "t%d" % i, wall) == results.ACCEPTED
    if end == "checkpoints":
        wall = r.meter_for(3, wall)
    assert r.device.meter.account.credited == 40 * AMOUNT
    return r, tokens, codes, wall


def records_by_seq(sent):
    """Event record number -> record, of the ``evt`` entries in ``sent``."""
    out = {}
    for leaf, body in sent.values():
        if leaf == "evt" and isinstance(body.get("seq"), int):
            out[body["seq"]] = body
    return out


def damage(path, how, rnd):
    data = bytearray(open(path, "rb").read())
    if how == "payload_bit":
        i = rnd.randrange(30, len(data) - 4)
        data[i] ^= 1 << rnd.randrange(8)
    elif how == "seq_bit":
        data[6 + 12 + 7] ^= 1  # lowest bit of the sequence number
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray(len(data))
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def fast_dir(tmp_path):
    """A directory on tmpfs when there is one: ~1,000 fsynced commits per case."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = tempfile.mkdtemp(prefix="pmeter-damage-", dir="/dev/shm")
        yield pathlib.Path(d)
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


@pytest.mark.parametrize("end", ["topup", "checkpoints"])
def test_one_damaged_file_is_survived_or_reported_never_silent(fast_dir, end):
    tmp_path = fast_dir
    base = str(tmp_path / "run")
    os.mkdir(base)
    r, tokens, codes, wall = run_history(base, end)
    final = r.device.meter
    final_energy = final.energy_wh
    rnd = random.Random(7)
    outcomes = {}
    for name in sorted(os.listdir(base)):
        for how in ("payload_bit", "seq_bit", "truncated", "zeros"):
            d = str(tmp_path / ("%s-%s" % (name, how)))
            shutil.copytree(base, d)
            damage(os.path.join(d, name), how, rnd)
            m = Rig(d, seed=2, wall=wall + 100)
            dev = m.device
            meter = dev.meter
            label = "%s %s" % (name, how)
            if dev.state_lost:
                outcomes[label] = "lost"
                assert meter.relay_state == "guarantee", label
                assert meter.records("state_lost")[0].reason in ("rolled_back", "no_valid_state"), label
            else:
                # The last committed state: every credit there, energy at most one checkpoint short.
                outcomes[label] = "kept"
                assert meter.account.credited == 40 * AMOUNT, label
                assert final_energy - 34 <= meter.energy_wh <= final_energy, label  # 107 pulses = 33 Wh
            credited = meter.account.credited
            # Every token and keypad code again: none is accepted a second time.
            for i, tok in enumerate(tokens):
                code = m.send(1000 + i, tok, "again%d" % i, wall + 200)
                assert code in (results.ALREADY_USED, results.TOO_OLD), (label, i, code)
            for digits in codes:
                assert m.keypad(digits, wall + 200) != results.ACCEPTED, label
            assert meter.account.credited == credited, label
            # Outbox entries after the restart (from its boot on) never reuse
            # an (epoch, q) the head-end has seen for another entry (re-sending
            # one not yet acknowledged is how the outbox works).
            m.meter_for(2, wall + 300)
            m.send(2000, r.fleet.topup_token(MID, 2000, AMOUNT, W), "new", wall + 400)
            reused = [k for k in m.sent if k in r.sent and m.sent[k] != r.sent[k]]
            assert len(m.sent) > 3 and not reused, (label, reused[:3])
            # Nor an event record number (the head-end ties credits to them).
            old = records_by_seq(r.sent)
            new = records_by_seq(m.sent)
            clash = [q for q in new if q in old and new[q] != old[q]]
            assert not clash, (label, clash[:3])
    assert sorted(os.listdir(base)) == sorted(FILES)
    # Damage to the marks record (or to an older copy) never costs the state.
    for label, outcome in outcomes.items():
        if label.startswith("mark."):
            assert outcome == "kept", (label, outcomes)
    assert "kept" in outcomes.values() and "lost" in outcomes.values(), outcomes


def test_damaged_newest_base_after_quiet_checkpoints_is_not_silent(fast_dir):
    """Only checkpoints (no marks record) since a top-up, two new bases among
    them: damage to the newest base must not load an older one silently."""
    from agent.device import Device
    from agent.events import Pulses, Tick, TopUp
    from agent.store import OsFS, Store
    from linked_rig import config

    d = str(fast_dir)
    cfg = config()
    dev = Device(cfg, Store(OsFS(), d, MID))
    dev.boot(W, 0)
    dev.feed(TopUp(500 * AMOUNT, "t1", W + 1, 1000))  # far from any alarm during the test
    marks = full = None
    wall = W + 1
    while marks != dev.store.mark_writes or dev.store.full_writes < full + 2:
        if marks != dev.store.mark_writes:  # count bases from the last marks record on
            marks, full = dev.store.mark_writes, dev.store.full_writes
        wall += 60
        dev.feed(Pulses(107, wall, (wall - W) * 1000))
        dev.feed(Tick(wall, (wall - W) * 1000 + 1))
    for _ in range(3):  # checkpoints against the newest base
        wall += 60
        dev.feed(Pulses(107, wall, (wall - W) * 1000))
        dev.feed(Tick(wall, (wall - W) * 1000 + 1))
    assert dev.store.mark_writes == marks  # nothing but checkpoints since the last marks record
    energy = dev.meter.energy_wh
    newest = os.path.join(d, "state." + dev.store.full.current)
    damage(newest, "payload_bit", random.Random(3))
    dev2 = Device(cfg, Store(OsFS(), d, MID))
    dev2.boot(wall + 100, 0)
    if not dev2.state_lost:
        assert dev2.meter.energy_wh >= energy - 34, (dev2.meter.energy_wh, energy)
    else:
        assert dev2.meter.records("state_lost")[0].reason == "rolled_back"
