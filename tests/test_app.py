"""agent/app.py, the composition root: a step that fails half-way stops the App,
so nothing it made (an ack, a relay close) leaves before the store has it."""

import pytest
from apps import fleet_app

from agent import store
from agent.events import Tick
from headend.link import Fleet

MID = "000000000042"
MASTER = bytes(range(100, 132))
W = 1790000000


def test_a_step_that_fails_in_its_commit_stops_the_app_and_nothing_it_made_goes_out(tmp_path, monkeypatch):
    fleet = Fleet(MASTER)
    app = fleet_app(fleet, MID, tmp_path)
    app.boot(W, 0)
    pack = store.msgpack.pack
    failed = []

    def pack_or_fail(value, *more):
        # The state's encoding runs out of memory once, as on a board.
        if isinstance(value, dict) and "meter" in value and not failed:
            failed.append(1)
            raise MemoryError("memory allocation failed")
        return pack(value, *more)

    monkeypatch.setattr(store.msgpack, "pack", pack_or_fail)
    topic, payload = fleet.seal_token(MID, 1, fleet.topup_token(MID, 1, 250000, W), "t1", W)
    with pytest.raises(MemoryError):
        app.received(topic, payload, W, 1000)
    assert app.fault is not None and failed
    # The credit is in memory only: every later step refuses, so its ack never goes out.
    for step in (lambda: app.event(Tick(W + 1, 2000), W + 1), lambda: app.tick(W + 5, 6000),
                 lambda: app.connected(W + 5, 6000)):
        with pytest.raises(MemoryError):
            step()
    # A restart begins from the store: the top-up never happened; the head-end re-sends it.
    again = fleet_app(fleet, MID, tmp_path)
    again.boot(W + 10, 0)
    assert again.meter.balance == 0
    again.received(topic, payload, W + 10, 1000)
    assert again.meter.balance == 250000
