"""Bad input that must end in a clear refusal, never a crash or a silent change:
commands with odd maps, config files, sequence jumps, old keypad codes,
`pmeter token decode --count`; and DL/T 645 control (off unless a password
is configured; the wrong-password lockout survives a kill)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openpaygo
import pytest
from mosquitto import free_port
from openpaygo.token_shared import TokenType

from agent import results, settings
from agent.config import ConfigError
from agent.device import Device
from agent.dlt645 import frame as F
from agent.dlt645 import master as M
from agent.dlt645.config import SCHEMA as DLT645
from agent.dlt645.slave import Slave
from agent.link import envelope, topics
from agent.link.agent import LinkedMeter
from agent.link.replay import ReplayGuard
from agent.link.session import Session
from agent.store import OsFS, Store
from agent.tokens import TokenGuard
from agent.tokens import keypad as kp
from agent.tokens import mqtt as tm
from headend import cli as hcli
from headend import keys as hkeys
from headend.link import Fleet

ROOT = Path(__file__).resolve().parent.parent
MID = "000000000042"
MASTER = bytes(range(100, 132))
W = 1790000000
PY = sys.executable


def _tokens(keypad=False):
    fleet = Fleet(MASTER)
    t = {"key": fleet.meter_key(MID).hex()}
    if keypad:
        kk = hkeys.keypad_key(MASTER, MID)
        t.update(keypad_key=kk.hex(), keypad_starting_code=kp.Chain(kk).start)
    return t


class Rig:
    """A LinkedMeter on a real store, fed sealed messages; the Outs opened as the head-end does."""

    def __init__(self, tmp_path, keypad=False):
        self.fleet = Fleet(MASTER)
        self.cfg = settings.load({"meter": {"id": MID}, "account": {"opening_balance": 0, "trip_delay_s": 0},
                                  "tokens": _tokens(keypad)})
        self.device = Device(self.cfg, Store(OsFS(), str(tmp_path), MID))
        self.guard = TokenGuard.from_config(MID, self.cfg["tokens"])
        self.session = Session(MID, self.fleet.keys(MID), os.urandom(8))
        self.linked = LinkedMeter(self.device, self.guard, self.session)
        self.linked.boot(W, 0)
        self.linked.connected(W, 0)

    def send(self, n, token, ref):
        topic, payload = self.fleet.seal_token(MID, n, token, ref, W)
        _hw, outs = self.linked.received(topic, payload, W, 1000)
        acks = {}
        for o in outs:
            if o.topic.endswith("/" + topics.ACK):
                b = envelope.open_uplink(self.fleet.keys(MID), o.topic, o.payload, topics.ACK, MID)["b"]
                acks[b["r"]] = b["code"]
        return acks


# ------------------------------------------------------------------ set_tariff


@pytest.mark.parametrize("tariff", [{1: 2}, {3: 4, 5: 6}])
def test_set_tariff_with_non_string_keys_is_refused_with_an_ack(tmp_path, tariff):
    r = Rig(tmp_path)
    token = r.fleet.command_token(MID, 1, "set_tariff", {"tariff": tariff}, W)
    acks = r.send(1, token, "tf")  # must not raise
    assert acks == {"tf": results.BAD_ARGUMENT}
    assert r.send(1, token, "tf-again") == {"tf-again": results.ALREADY_USED}  # the sequence was used, answered


def test_a_command_the_core_chokes_on_is_answered_and_its_sequence_used(tmp_path, monkeypatch):
    r = Rig(tmp_path)
    commits = r.device.commits

    def boom(event):
        raise KeyError("a bug in the core")

    monkeypatch.setattr(r.device.meter, "handle", boom)
    acks = r.send(1, r.fleet.command_token(MID, 1, "freeze", {}, W), "f")
    assert acks == {"f": results.REFUSED}
    assert r.device.commits > commits and r.session.guard.check(1) == results.ALREADY_USED


# ------------------------------------------------------------------ config files


def _cfg_text(**extra):
    d = {"meter": {"id": MID}, "tokens": _tokens()}
    d.update(extra)
    return json.dumps(d)


def test_config_non_string_keys_are_config_errors():
    with pytest.raises(ConfigError) as e:
        settings.load({"meter": {"id": MID, 5: 1}, "tokens": _tokens()})
    assert e.value.key == "meter.5" and "strings" in str(e.value)
    with pytest.raises(ConfigError):
        settings.load({("x",): 1})


def test_config_file_duplicate_json_keys_and_deep_nesting(tmp_path):
    dup = tmp_path / "dup.json"
    dup.write_text('{"meter": {"id": "%s", "constant": 1000, "constant": 3200}, "tokens": %s}'
                   % (MID, json.dumps(_tokens())))
    with pytest.raises(ConfigError) as e:
        settings.load(str(dup))
    assert e.value.key == "constant" and "twice" in str(e.value)
    ok = tmp_path / "ok.json"
    ok.write_text('{"meter": {"id": "%s", "constant": 3200}, "account": {"a\\"b": 1}}' % MID)
    with pytest.raises(ConfigError) as e:  # escaped quotes in keys are not duplicates; the unknown key is reported
        settings.load(str(ok))
    assert e.value.key == 'account.a"b'
    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"meter": ' + "[" * 100000 + "]" * 100000 + "}")
    deep_toml = tmp_path / "deep.toml"
    deep_toml.write_text("x = " + "[" * 100000 + "]" * 100000 + "\n")
    for path in (deep_json, deep_toml):
        with pytest.raises(ConfigError) as e:
            settings.load(str(path))
        assert "too deeply" in str(e.value)


def _keys_file(tmp_path):
    """A keys file next to the configs (the main config may not hold keys)."""
    path = tmp_path / "agent.keys"
    path.write_text('[tokens]\nkey = "%s"\n' % ("00" * 32))
    os.chmod(str(path), 0o600)
    return path.name


@pytest.mark.parametrize("text", [
    '{"meter": {"id": "%s", "id": "%s"}}' % (MID, MID),
    '{"meter": ' + "[" * 50000 + "]" * 50000 + "}",
])
def test_agent_refuses_such_config_files_with_exit_2(tmp_path, text):
    path = tmp_path / "agent.json"
    path.write_text(text)
    out = subprocess.run([PY, "-m", "pmeter", "agent", "--config", str(path), "--data", str(tmp_path / "d")],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "config" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ sequence jumps


def test_a_far_token_sequence_is_refused_and_does_not_poison_the_window(tmp_path):
    r = Rig(tmp_path)
    far = r.fleet.topup_token(MID, tm.SEQ_MAX, 10000, W)
    assert r.guard.check(far, W)[0] == results.REFUSED
    assert r.send(1, far, "far") == {"far": results.REFUSED}
    top = r.fleet.topup_token(MID, 2, 10000, W)
    assert r.send(2, top, "t2") == {"t2": results.ACCEPTED}
    edge = r.fleet.topup_token(MID, 2 + tm.MAX_JUMP, 10000, W)
    assert r.guard.check(edge, W)[0] == results.ACCEPTED
    assert r.guard.check(r.fleet.topup_token(MID, 3 + tm.MAX_JUMP, 10000, W), W)[0] == results.REFUSED


def test_a_far_command_sequence_is_refused_and_does_not_poison_the_link(tmp_path):
    g = ReplayGuard()
    assert g.check((1 << 64) - 1) == results.REFUSED
    r = Rig(tmp_path)
    assert r.send((1 << 64) - 1, r.fleet.topup_token(MID, 1, 10000, W), "far") == {"far": results.REFUSED}
    assert r.send(1, r.fleet.topup_token(MID, 1, 10000, W), "t1") == {"t1": results.ACCEPTED}


# ------------------------------------------------------------------ keypad: old codes


def test_keypad_codes_older_than_the_window_are_already_used_and_never_lock(tmp_path):
    r = Rig(tmp_path, keypad=True)
    chain = kp.Chain(hkeys.keypad_key(MASTER, MID), r.cfg["tokens"]["keypad_starting_code"])
    old = chain.token(5, 2)
    code, _hw, _outs = r.linked.keypad(old, W, 1000)
    assert code == results.ACCEPTED
    for count in range(4, 4 + 2 * 40, 2):  # 40 more top-ups: count 2 drops out of the window
        assert r.linked.keypad(chain.token(1, count), W, 1000 + count)[0] == results.ACCEPTED
    assert r.guard.keypad.last - 2 >= kp.WINDOW
    r = Rig(tmp_path, keypad=True)  # a restart: what is remembered is in the store
    for i in range(6):  # more than the free wrong entries
        assert r.linked.keypad(old, W, 5000 + i)[0] == results.ALREADY_USED
    assert r.guard.lockout.fails == 0 and r.guard.keypad_lock_ms(6000) == 0
    assert r.linked.keypad("123456789", W, 7000)[0] == results.BAD_MAC  # a real guess still counts
    assert r.guard.lockout.fails == 1


def _decode(capsys, digits, count, key):
    code = hcli.main(["token", "decode", digits, "--meter", MID, "--count", str(count), "--meter-key", key, "--json"])
    return code, json.loads(capsys.readouterr().out)["result"]


@pytest.mark.parametrize("kind", [TokenType.ADD_TIME, TokenType.COUNTER_SYNC])
def test_token_decode_count_n_says_already_used_like_the_meter(capsys, kind):
    key = hkeys.keypad_key(MASTER, MID)
    start = kp.Chain(key).start
    value = 5 if kind == TokenType.ADD_TIME else None
    n, digits = openpaygo.generate_token(secret_key=key.hex(), count=2, value=value, token_type=kind,
                                         starting_code=start)
    assert _decode(capsys, digits, n, key.hex()) == (1, results.ALREADY_USED)
    assert _decode(capsys, digits, n - 1 - (n % 2 == 0), key.hex())[1] == results.ACCEPTED
    # The meter after accepting it, and the reference with it in its used counts, agree.
    st = kp.KeypadState(key, start)
    st.accept(st.decode(digits))
    assert st.decode(digits) == kp.USED
    if kind == TokenType.ADD_TIME:
        ref = openpaygo.decode_token(token=digits, secret_key=key.hex(), count=n, used_counts=[n], starting_code=start)
        assert ref[0] is None and ref[1] == TokenType.ALREADY_USED
    # Older than the window: already used (the reference says the same).
    assert _decode(capsys, digits, n + 200, key.hex()) == (1, results.ALREADY_USED)


# ------------------------------------------------------------------ DL/T 645 control


def test_dlt645_control_is_off_by_default_and_needs_a_password():
    cfg = settings.load({"meter": {"id": MID}, "tokens": _tokens()})
    assert cfg["dlt645"]["control"] is False and cfg["dlt645"]["password"] is None
    with pytest.raises(ConfigError) as e:
        settings.load({"meter": {"id": MID}, "tokens": _tokens(), "dlt645": {"control": True}})
    assert e.value.key == "dlt645.password"
    # A slave built without a password refuses every control frame, whatever 'control' says.
    from agent.config import validate

    slave = Slave(dict(validate({"address": MID}, DLT645), control=True), 480)
    frames = F.Parser().feed(M.control_request(MID, bytes((2, 0, 0, 0)), 0x3A, W + 600, 480))
    reply, events = slave.handle(frames[0], None, W, 1000)
    assert events == [] and F.decode_one(reply).data == bytes((F.ERR_PASSWORD,))


def test_agent_refuses_control_without_password_exit_2(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[meter]\nid = "%s"\n[agent]\nkeys = "%s"\n[dlt645]\ncontrol = true\n' % (MID, _keys_file(tmp_path)))
    out = subprocess.run([PY, "-m", "pmeter", "agent", "--config", str(path), "--data", str(tmp_path / "d")],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "dlt645.password" in out.stderr, out.stderr


def _agent(config, log):
    return subprocess.Popen([PY, "-m", "pmeter", "agent", "--config", str(config), "--hw", "sim"], cwd=str(ROOT),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _wait_log(log, text, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in Path(log).read_text():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _control(port, password):
    """One control frame (alarm on); None if accepted, else the error byte."""
    from hw.serial_link import SerialMaster

    with SerialMaster("socket://127.0.0.1:%d" % port, timeout=3.0, retries=0) as m:
        try:
            m.request(M.control_request(MID, password, 0x2A, int(time.time()) + 3600, 480), F.CONTROL, MID)
        except M.ReplyError as e:
            return e.err
    return None


def test_dlt645_wrong_password_lockout_survives_a_kill(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "agent.toml"
    config.write_text(
        '[meter]\nid = "%s"\n[agent]\nkeys = "%s"\ndata_dir = "%s"\n'
        '[dlt645]\ndevice = "tcp://127.0.0.1:%d"\ncontrol = true\npassword = "02123456"\npassword_tries = 2\n'
        % (MID, _keys_file(tmp_path), data, port))
    good, bad = bytes((2, 0x12, 0x34, 0x56)), bytes((2, 0, 0, 0))
    day = (int(time.time()) + 8 * 3600) // 86400
    procs = []
    try:
        procs.append(_agent(config, tmp_path / "1.log"))
        assert _wait_log(tmp_path / "1.log", "DL/T 645 slave", procs[-1]), (tmp_path / "1.log").read_text()
        assert _control(port, good) is None  # control works with the password
        assert _control(port, bad) == F.ERR_PASSWORD
        assert _control(port, bad) == F.ERR_PASSWORD
        assert _control(port, good) == F.ERR_PASSWORD  # locked for the day
        procs[-1].kill()  # a power cut: no clean commit
        procs[-1].wait()
        procs.append(_agent(config, tmp_path / "2.log"))
        assert _wait_log(tmp_path / "2.log", "DL/T 645 slave", procs[-1]), (tmp_path / "2.log").read_text()
        if (int(time.time()) + 8 * 3600) // 86400 == day:  # (the lock ends at local midnight)
            assert _control(port, good) == F.ERR_PASSWORD  # still locked after the restart
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
