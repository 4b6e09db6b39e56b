"""The agent's settings and the whole endpoint (agent/app.py: LinkedMeter on a Device), on CPython and MicroPython alike
(run by tests/test_agent_micropython.py; not test_-prefixed: the whole stack needs more than
the 128K heap the portable runner gives)."""

import gc

from agent import results, settings
from agent.app import App
from agent.config import ConfigError
from agent.link import envelope, topics
from agent.store import OsFS
from agent.tokens import keypad as kp
from agent.tokens import mqtt as tm
from portable.scratch import scratch_dir

MID = "000000000043"
KEY = bytes(range(32))
LINK = bytes(range(32, 64))
KPKEY = bytes(range(64, 80))
W = 1790000000


def _hex(b):
    return "".join("%02x" % x for x in b)


def _raw():
    return {
        "meter": {"id": MID},
        "account": {"opening_balance": 0, "trip_delay_s": 0},
        "tokens": {"key": _hex(KEY), "keypad_key": _hex(KPKEY), "keypad_starting_code": kp.Chain(KPKEY).start},
        "agent": {"data_dir": "/tmp/x"},
        "link": {"key": _hex(LINK)},
    }


def _build(d, cfg):
    app = App(cfg, OsFS(), d, b"\x01" * 8)
    app.boot(W, 0)
    app.connected(W, 0)
    return app


def test_agent_settings_load_and_errors():
    cfg = settings.load(_raw())
    assert cfg["hw"]["poll_ms"] == 20 and cfg["store"]["checkpoint_s"] == 60
    assert cfg["mqtt"]["host"] is None and cfg["dlt645"]["device"] is None
    bad = _raw()
    bad["hw"] = {"pulse_pin": 4, "relay_set_pin": 4}
    try:
        settings.load(bad)
        raise AssertionError("shared pin accepted")
    except ConfigError as e:
        assert e.key == "hw"
    bad = _raw()
    del bad["link"]
    bad["mqtt"] = {"host": "broker"}
    try:
        settings.load(bad)
        raise AssertionError("broker without link key accepted")
    except ConfigError as e:
        assert e.key == "link.key"
    bad = _raw()
    bad["tokens"]["key"] = "zz"
    try:
        settings.load(bad)
        raise AssertionError("bad key accepted")
    except ConfigError as e:
        assert e.key == "tokens.key"


def test_agent_linked_topup_keypad_restart():
    d = scratch_dir("agent")
    cfg = settings.load(_raw())
    app = _build(d, cfg)
    t = tm.Token(MID, 1, tm.TOPUP, W, W + 600, 0, amount=120000)
    token = tm.encode(t, KEY)
    topic = topics.topic(MID, topics.CMD)
    payload = envelope.seal_command(envelope.LinkKeys(LINK), b"\x02" * 16, topic, MID, 1, "token",
                                    {"token": token}, "r1", W, W + 600)
    commits = app.device.commits
    hw, outs = app.received(topic, payload, W, 100)
    assert app.device.commits == commits + 1
    acks = [o for o in outs if o.topic.endswith("/ack")]
    assert len(acks) == 1
    body = envelope.open_uplink(envelope.LinkKeys(LINK), acks[0].topic, acks[0].payload, "ack", MID)["b"]
    assert body["code"] == results.ACCEPTED and body["bal"] == 120000
    chain = kp.Chain(KPKEY)
    code, hw, outs = app.keypad(chain.token(3, 2), W, 200)
    assert code == results.ACCEPTED and app.meter.balance == 150000
    code, hw, outs = app.keypad("000000000", W, 300)
    assert code == results.BAD_MAC
    lock = app.guard.lockout.snapshot()
    app = None
    gc.collect()  # one agent's worth of heap at a time, as on a board
    # Restart on the same store: balance, used token and lockout are all there.
    again = _build(d, cfg)
    assert again.meter.balance == 150000
    assert again.guard.check(token, W)[0] == results.ALREADY_USED
    assert again.guard.lockout.snapshot() == lock
