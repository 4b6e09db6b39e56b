"""`pmeter agent` takes keypad codes: typed into a FIFO, decoded, credited
and committed; wrong codes lock the keypad out."""

import os

from agent import settings
from agent.tokens import keypad
from pmeter.agent_cli import AgentRuntime

MID = "000000000042"
KEYPAD_KEY = "a1" * 16


def _runtime(tmp_path, fifo):
    cfg = settings.load({
        "meter": {"id": MID},
        "account": {"opening_balance": 0},
        "tokens": {"key": "11" * 32, "keypad_key": KEYPAD_KEY, "keypad_divider": 1},
        "agent": {"data_dir": str(tmp_path), "keypad": str(fifo)},
        "sim": {"load_w": 0},
    })
    return AgentRuntime(cfg, "sim", str(tmp_path))


def test_a_code_typed_on_the_keypad_credits_the_meter_once(tmp_path):
    fifo = tmp_path / "keypad"
    os.mkfifo(fifo)
    rt = _runtime(tmp_path, fifo)
    rt.boot()
    try:
        chain = keypad.Chain(bytes.fromhex(KEYPAD_KEY))
        digits = chain.token(25, 2)  # ADD 25 CNY at count 2
        with open(fifo, "w") as f:
            f.write("*%s#\n" % digits)
        for _ in range(20):
            rt.step()
            if rt.linked.meter.balance:
                break
        assert rt.linked.meter.balance == 25 * 10000
        assert rt.linked.meter.records("topup")[0].data["source"] == "keypad"
        with open(fifo, "w") as f:  # the same code again: refused, nothing added
            f.write("*%s#\n" % digits)
        for _ in range(5):
            rt.step()
        assert rt.linked.meter.balance == 25 * 10000
    finally:
        rt.shutdown()
    # The credit was committed: a new runtime on the same store has it.
    rt2 = _runtime(tmp_path, fifo)
    rt2.boot()
    try:
        assert rt2.linked.meter.balance == 25 * 10000
    finally:
        rt2.shutdown()


def test_a_bad_keypad_device_is_a_clear_error_before_anything_starts(tmp_path):
    try:
        _runtime(tmp_path, "/dev/does-not-exist-keypad")
        raise AssertionError("started with a missing keypad device")
    except settings.ConfigError as exc:
        assert exc.key == "agent.keypad" and "does-not-exist-keypad" in str(exc)
    assert not any(name.startswith("state") for name in os.listdir(tmp_path))  # no store was written
