"""One meter's simulated month, fed to the core as a board would see it.

Runs on MicroPython and CPython: 2,976 fifteen-minute pulse counts, a tick
each minute of the first hour, a top-up every 10 days and a daily command.
Prints the number of events and, on MicroPython, the heap in use at the
end.  bench/core.py runs it under different heap sizes to find the
smallest heap that completes the month.
"""

import gc

from agent.events import Command, Pulses, Tick, TopUp, Boot
from agent.meter import Meter, load_config

T0 = 1767196800


def month(events_only=False):
    m = Meter(load_config({"tariff": {"kind": "tiered", "tier_kwh": [260, 600], "tier_prices": [5883, 6383, 8883]}, "account": {"opening_balance": 1000000}}))
    m.handle(Boot(T0, 0))
    n = 1
    for k in range(1, 31 * 96 + 1):
        w = T0 + k * 900
        m.handle(Pulses(200 + (k * 37) % 270, w, k * 900000))
        n += 1
        if k % 960 == 0:
            m.handle(TopUp(500000, "t%d" % k, w, k * 900000))
            n += 1
        if k % 96 == 0:
            m.handle(Command("freeze", {}, "c%d" % k, w, k * 900000))
            m.handle(Tick(w + 1, k * 900000 + 1000))
            n += 2
    return m, n


if __name__ == "__main__":
    gc.collect()
    m, n = month()
    gc.collect()
    alloc = gc.mem_alloc() if hasattr(gc, "mem_alloc") else -1
    print("events", n, "energy_wh", m.energy_wh, "balance", m.balance, "heap_in_use", alloc)
