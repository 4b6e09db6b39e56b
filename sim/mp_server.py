"""Serve meter cores over stdin/stdout: run under MicroPython by the simulator.

    micropython sim/mp_server.py     (MICROPYPATH must include the repo root)

Requests, one JSON array per line:
  ["new", cfg]            -> [index]
  ["ev", index, event]    -> [[action, ...], next_deadline, stats]
  ["stats", index]        -> stats list (sim.wire.stats)
  ["snap", index]         -> snapshot
  ["restore", index, cfg, snapshot] -> [index]  (a power cycle: rebuilt from the snapshot)
A request that fails answers ["error", "message"] and the server goes on.
"""

import json
import sys

from agent.meter import Meter, load_config
from sim.wire import action_to_wire, event_from_wire, stats

meters = []


def answer(req):
    op = req[0]
    if op == "new":
        meters.append(Meter(load_config(req[1])))
        return [len(meters) - 1]
    m = meters[req[1]]
    if op == "ev":
        acts = m.handle(event_from_wire(req[2]))
        return [[action_to_wire(a) for a in acts], m.next_deadline(), stats(m)]
    if op == "stats":
        return stats(m)
    if op == "snap":
        return m.snapshot()
    if op == "restore":
        meters[req[1]] = Meter.restore(load_config(req[2]), req[3])
        return [req[1]]
    raise ValueError("unknown request %r" % (op,))


def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        try:
            out = answer(json.loads(line))
        except Exception as exc:
            out = ["error", repr(exc)]
        sys.stdout.write(json.dumps(out))
        sys.stdout.write("\n")
        sys.stdout.flush()


main()
