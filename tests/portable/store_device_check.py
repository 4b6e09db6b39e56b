"""Device boot, top-up commit and recovery on whichever runtime runs this."""

from agent.config import validate
from agent.device import Device
from agent.events import Pulses, TopUp
from agent.meter import SCHEMA
from agent.store import OsFS, Store
from portable.scratch import scratch_dir

MID = "000000000006"
W = 1700000000


def _device(d):
    cfg = validate({"meter": {"id": MID}, "account": {"opening_balance": 10000}}, SCHEMA)
    return Device(cfg, Store(OsFS(), d, MID))


def test_store_device_survives_restart():
    d = scratch_dir("device")
    dev = _device(d)
    dev.boot(W, 0)
    acts = dev.feed(TopUp(5000, "r1", W + 1, 1000))
    assert [a.code for a in acts if a.kind == "ack"] == ["accepted"]
    dev.feed(Pulses(320, W + 70, 70000))
    dev2 = _device(d)
    acts = dev2.boot(W + 100, 0)
    assert not dev2.state_lost
    assert dev2.meter.balance == dev.meter.balance
    assert dev2.meter.energy_wh == 100
    assert [a.record.reason for a in acts if a.kind == "publish" and a.record.kind == "store"] == ["unaccounted_energy"]
