"""Keypad codes from key presses: the ``*`` ... ``#`` protocol (portable).

Runs on CPython and on a board (frozen with the board shell).  The keypad
sends one ASCII character per key press; ``KeyCollector`` (no I/O, time as
an input) turns the characters into codes:

- ``*`` starts an entry (and throws away a half-typed one);
- digits are appended; digits typed without a ``*`` first start an entry
  too, so a keypad without ``*`` still works;
- ``#``, CR or LF ends the entry: its digits are one code;
- an entry with a key older than ``timeout_ms`` is cleared, as is one
  longer than ``max_digits`` (20: an extended restricted-digit OpenPAYGO
  token) or one with any other character in it (line noise must not turn
  into a wrong guess that feeds the lockout); spaces and tabs are ignored.

``KeypadSource`` reads a non-blocking byte stream into a collector: a file
descriptor or serial port on a Pi (hw/keypad.py opens those), a
``machine.UART`` on a board (hw/mpy.py).  Whether a code is valid is for
the App (``LinkedMeter.keypad``) to say; this module only says where an
entry starts and ends.
"""

import errno

# MicroPython's errno has no EWOULDBLOCK (on Linux it equals EAGAIN).
_WOULD_BLOCK = (errno.EAGAIN, getattr(errno, "EWOULDBLOCK", errno.EAGAIN))


def _quiet(message):
    pass


MAX_DIGITS = 20
TIMEOUT_MS = 30000


class KeyCollector:
    """Characters to codes with the ``*`` ... ``#`` protocol (no I/O)."""

    __slots__ = ("max_digits", "timeout_ms", "digits", "started", "last_ms", "bad", "rejected", "log")

    def __init__(self, max_digits=MAX_DIGITS, timeout_ms=TIMEOUT_MS, log=None):
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
        self.log = log or _quiet

    def _drop(self, reason):
        if self.started and (self.digits or reason != "cancelled"):
            self.rejected.append(reason)
            self.log("keypad entry dropped: %s" % reason)
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
    """A byte stream (file descriptor, pyserial port, a board's UART) feeding a ``KeyCollector``.

    ``reader()`` returns the bytes waiting, None when there are none, b""
    at end of file, and never blocks.  ``log(message)`` gets read failures.
    """

    def __init__(self, reader, name, collector=None, closer=None, log=None):
        self._read = reader  # () -> bytes, b"" when nothing is waiting; never blocks
        self._close = closer
        self.name = name
        self.collector = collector if collector is not None else KeyCollector()
        self.eof = False
        self.log = log or _quiet

    def poll(self, mono):
        """Read what is waiting (never blocks); return the codes it completed."""
        codes = []
        while not self.eof:
            try:
                data = self._read()
            except OSError as exc:
                if exc.errno in _WOULD_BLOCK:
                    break
                self.log("keypad %s: read failed (%s); input stopped" % (self.name, exc))
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
