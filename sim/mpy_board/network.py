"""A stand-in for MicroPython's ``network`` module on the unix port.

``WLAN(STA_IF)`` joins on the second ``isconnected()`` poll after
``connect`` (a real join takes a while), and ``refuse(n)`` makes the
next ``n`` joins fail, so a board shell's join backoff is exercised.
The unix port's network is the host's: once "joined", sockets just work.
"""

STA_IF = 0
AP_IF = 1

_state = {"refuse": 0, "joins": 0}


def refuse(n):
    """Make the next ``n`` join attempts fail."""
    _state["refuse"] = n


def joins():
    """Join attempts so far."""
    return _state["joins"]


class WLAN:
    """A station interface that joins any network."""

    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False
        self._polls = None  # polls left before the join completes; None = not joining
        self._up = False
        self.ssid = None

    def active(self, on=None):
        """Get or set the interface's power."""
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._up = False
        return None

    def connect(self, ssid, key=None):
        """Start joining ``ssid``."""
        if not self._active:
            raise OSError("WLAN not active")
        _state["joins"] += 1
        self.ssid = ssid
        if _state["refuse"]:
            _state["refuse"] -= 1
            self._polls = None
            return
        self._polls = 2

    def isconnected(self):
        """True once joined."""
        if self._polls is not None and not self._up:
            self._polls -= 1
            if self._polls <= 0:
                self._up = True
                self._polls = None
        return self._up

    def disconnect(self):
        """Leave the network."""
        self._up = False

    def ifconfig(self):
        """(ip, netmask, gateway, dns)."""
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
