"""Keypad input for the agent shells (CPython): key presses in, whole codes out.

The keypad sends one ASCII character per key press over a line-oriented
byte stream: a serial port (a 4x4 matrix scanned by a small
microcontroller that writes each key to its UART, or a USB-serial keypad),
a FIFO, or stdin.  The ``*`` ... ``#`` protocol (``KeyCollector``) and the
reading loop (``KeypadSource``) are portable, in hw/keys.py (a board uses
them on its UART); this module opens the CPython devices.

``KeypadSource`` reads a device without blocking and feeds a collector::

    src = open_keypad("/dev/ttyAMA0")     # or "-" (stdin), a FIFO path, "socket://..."
    for digits in src.poll(mono_ms):      # in the main loop, once per pass
        code, actions, outs = linked.keypad(digits, wall, mono_ms)

Whether a code is valid is for ``LinkedMeter.keypad`` to say; this
module only says where an entry starts and ends.
"""

import logging
import os
import select
import stat
import sys

from hw.keys import MAX_DIGITS, TIMEOUT_MS, KeyCollector, KeypadSource  # noqa: F401 (the CPython shell's names)

log = logging.getLogger("pmeter.keypad")

_READ = 256  # bytes per read: a person types a few keys a second


def _log_info(message):
    log.info("%s", message)


def _log_warning(message):
    log.warning("%s", message)


def _fd_reader(fd):
    def read():
        r, _, _ = select.select([fd], [], [], 0)
        if not r:
            return None
        return os.read(fd, _READ)

    return read


def _serial_reader(port):
    def read():
        n = port.in_waiting
        if not n:
            return None
        return port.read(min(n, _READ))

    return read


def open_keypad(device, baud=9600, collector=None):
    """A ``KeypadSource`` for ``device``: "-" is stdin, a FIFO path is read
    as such, anything else is opened with pyserial (a path or a URL such as
    ``socket://host:port``).

    ValueError names the device when it cannot be opened.
    """
    if collector is None:
        collector = KeyCollector(log=_log_info)
    if device == "-":
        fd = sys.stdin.fileno()
        return KeypadSource(_fd_reader(fd), "stdin", collector, log=_log_warning)
    try:
        is_fifo = stat.S_ISFIFO(os.stat(device).st_mode)
    except OSError:
        is_fifo = False
    if is_fifo:
        # O_RDWR keeps the FIFO open when a writer goes away (no EOF storm)
        # and lets the open succeed before any writer appears.
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
        return KeypadSource(_fd_reader(fd), device, collector, lambda: os.close(fd), _log_warning)
    import serial  # only needed for serial devices

    try:
        port = serial.serial_for_url(device, baudrate=baud, timeout=0)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ValueError("keypad device %r: cannot open (%s)" % (device, exc))
    return KeypadSource(_serial_reader(port), device, collector, port.close, _log_warning)
