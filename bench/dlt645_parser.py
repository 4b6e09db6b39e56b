"""Throughput of the DL/T 645 stream parser and the slave's read path.

    .venv/bin/python bench/dlt645_parser.py
    MICROPYPATH=.:tests .venv/bin/micropython -X heapsize=128K bench/dlt645_parser.py
"""

import sys
import time

sys.path.insert(0, "tests")
sys.path.insert(0, ".")

from agent.dlt645 import frame as F  # noqa: E402
from agent.dlt645 import master as M  # noqa: E402
from portable.dlt645_view import WALL, View, make_slave  # noqa: E402


def _ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


def main():
    req = M.read_request("123456781012", 0x0001FF00)
    unit = (b"\x00\x68\x12" + req) * 16  # 16 frames with garbage, a multiple of 16 bytes
    chunks = [unit[i : i + 16] for i in range(0, len(unit), 16)]
    n = len(unit) * 125
    t0 = _ms()
    p = F.Parser()
    frames = 0
    for _ in range(125):
        for c in chunks:
            frames += len(p.feed(c))
    dt = max(_ms() - t0, 1)
    print("parser: %d frames, %d bytes in %d ms = %d kB/s" % (frames, n, dt, n * 1000 // dt // 1024))
    slave = make_slave()
    view = View()
    fr = F.decode_one(req)
    t0 = _ms()
    for _ in range(500):
        slave.handle(fr, view, WALL, 0)
    dt = max(_ms() - t0, 1)
    print("slave block read: %d us per request" % (dt * 1000 // 500))


main()
