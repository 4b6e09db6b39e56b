"""Wires for the DL/T 645 tests: a linked pair of real Linux ptys.

Each end is a real tty that pyserial opens by name; a relay thread copies
bytes between the two pty masters (what ``socat pty,raw pty,raw`` does).
Not a test module.
"""

import os
import select
import threading
import tty


class PtyPair:
    """Two tty device names whose bytes cross over: ``a`` <-> ``b``."""

    def __init__(self):
        self._ma, self._sa = os.openpty()
        self._mb, self._sb = os.openpty()
        # raw before anyone opens them: a cooked pty echoes and rewrites bytes
        tty.setraw(self._sa)
        tty.setraw(self._sb)
        self.a = os.ttyname(self._sa)
        self.b = os.ttyname(self._sb)
        self.sent = {self._ma: 0, self._mb: 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self):
        peer = {self._ma: self._mb, self._mb: self._ma}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    self.sent[fd] += len(data)
                    os.write(peer[fd], data)

    def close(self):
        """Stop the relay and close every descriptor."""
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self._ma, self._sa, self._mb, self._sb):
            try:
                os.close(fd)
            except OSError:
                pass
