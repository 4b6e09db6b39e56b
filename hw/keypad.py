"""Keypad input for the agent shells (CPython): key presses in, whole codes out.

The keypad sends one ASCII character per key press over a line-oriented
byte stream: a serial port (a 4x4 matrix scanned by a small
microcontroller that writes each key to its UART, or a USB-serial keypad),
a FIFO, or stdin.  ``KeyCollector`` (no I/O, time as an input) turns the
characters into codes:

- ``*`` starts an entry (and throws away a half-typed one);
- digits are appended; digits typed without a ``*`` first start an entry
  too, so a keypad without ``*`` still works;
- ``#``, CR or LF ends the entry: its digits are one code;
- an entry with a key older than ``timeout_ms`` is cleared, as is one
  longer than ``max_digits`` (20: an extended restricted-digit OpenPAYGO
  token) or one with any other character in it (line noise must not turn
  into a wrong guess that feeds the lockout); spaces and tabs are ignored.

``KeypadSource`` reads a device without blocking and feeds a collector::

    src = open_keypad("/dev/ttyAMA0")     # or "-" (stdin), a FIFO path, "socket://..."
    for digits in src.poll(mono_ms):      # in the main loop, once per pass
        code, actions, outs = linked.keypad(digits, wall, mono_ms)

Whether a code is valid is for ``LinkedMeter.keypad`` to say; this
module only says where an entry starts and ends.
"""

import errno
import logging
import os
import select
import stat
import sys

log = logging.getLogger("pmeter.keypad")

MAX_DIGITS = 20
TIMEOUT_MS = 30000
_READ = 256  # bytes per read: a person types a few keys a second


class KeyCollector:
    """Characters to codes with the ``*`` ... ``#`` protocol (no I/O)."""

    __slots__ = ("max_digits", "timeout_ms", "digits", "started", "last_ms", "bad", "rejected")

    def __init__(self, max_digits=MAX_DIGITS, timeout_ms=TIMEOUT_MS):
        if not isinstance(max_digits, int) or max_digits < 1:
            raise ValueError("keypad max_digits must be a positive int, got %r" % (max_digits,))
        if not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ValueError("keypad timeout_ms must be a positive int (ms), got %r" % (timeout_ms,))
        self.max_digits = max_digits
        self.timeout_ms = timeout_ms
        self.digits = []
        self.started = False  # an entry is open
        self.last_ms = None
        self.bad = None  # why the open entry will be dropped, once it ends
        self.rejected = []  # reasons entries were dropped (the caller may drain it, e.g. to beep)

    def _drop(self, reason):
        if self.started and (self.digits or reason != "cancelled"):
            self.rejected.append(reason)
            log.info("keypad entry dropped: %s", reason)
        self.digits = []
        self.started = False
        self.bad = None

    def tick(self, mono):
        """Clear a half-typed entry whose last key is older than the timeout."""
        if self.started and self.last_ms is not None and mono - self.last_ms > self.timeout_ms:
            self._drop("timeout")

    def feed(self, data, mono):
        """Feed ``data`` (bytes or str) received at ``mono`` ms; return the completed codes."""
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        self.tick(mono)
        out = []
        for b in data:
            ch = chr(b)
            if ch == "*":
                self._drop("cancelled")
                self.started = True
            elif "0" <= ch <= "9":
                self.started = True
                if len(self.digits) >= self.max_digits:
                    self.bad = "longer than %d digits" % self.max_digits
                else:
                    self.digits.append(ch)
            elif ch in "#\r\n":
                if self.started:
                    if self.bad is not None:
                        self._drop(self.bad)
                    elif self.digits:
                        out.append("".join(self.digits))
                        self.digits = []
                        self.started = False
                    else:
                        self._drop("empty")
            elif ch in " \t":
                pass
            elif self.started:
                self.bad = "unexpected character %r" % ch
            self.last_ms = mono
        return out


class KeypadSource:
    """A byte stream (file descriptor or pyserial port) feeding a ``KeyCollector``."""

    def __init__(self, reader, name, collector=None, closer=None):
        self._read = reader  # () -> bytes, b"" when nothing is waiting; never blocks
        self._close = closer
        self.name = name
        self.collector = collector if collector is not None else KeyCollector()
        self.eof = False

    def poll(self, mono):
        """Read what is waiting (never blocks); return the codes it completed."""
        codes = []
        while not self.eof:
            try:
                data = self._read()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                log.warning("keypad %s: read failed (%s); input stopped", self.name, exc)
                self.eof = True
                break
            if data is None:  # nothing waiting
                break
            if not data:
                self.eof = True  # end of file: stdin closed, FIFO writer gone
                break
            codes.extend(self.collector.feed(data, mono))
        self.collector.tick(mono)
        return codes

    def close(self):
        if self._close is not None:
            self._close()
            self._close = None


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
    if device == "-":
        fd = sys.stdin.fileno()
        return KeypadSource(_fd_reader(fd), "stdin", collector)
    try:
        is_fifo = stat.S_ISFIFO(os.stat(device).st_mode)
    except OSError:
        is_fifo = False
    if is_fifo:
        # O_RDWR keeps the FIFO open when a writer goes away (no EOF storm)
        # and lets the open succeed before any writer appears.
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
        return KeypadSource(_fd_reader(fd), device, collector, lambda: os.close(fd))
    import serial  # only needed for serial devices

    try:
        port = serial.serial_for_url(device, baudrate=baud, timeout=0)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ValueError("keypad device %r: cannot open (%s)" % (device, exc))
    return KeypadSource(_serial_reader(port), device, collector, port.close)
