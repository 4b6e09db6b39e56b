"""The DL/T 645 slave's wrong-password lockout as a durable Device part.

Kept across restarts like the keypad's lockout: a power cycle must not give
a password guesser a fresh set of tries.  Its own module so the slave
stays small enough to import in a 128 KB MicroPython heap.
"""


class LockoutPart:
    """``Device.add_part("dlt645", LockoutPart(slave))``: snapshot/restore of the slave's lockout.

    The shell commits it whenever ``slave.dirty`` is set, before the reply
    to the frame that changed it goes out.
    """

    def __init__(self, slave):
        self.slave = slave

    def snapshot(self):
        """``[wrong passwords, local day]`` for the store."""
        return [self.slave.bad_passwords, self.slave.bad_password_day]

    def restore(self, snap):
        """Load a ``snapshot()`` (None: nothing stored); ValueError if it does not fit."""
        if snap is None:
            snap = [0, None]
        if not (isinstance(snap, list) and len(snap) == 2 and type(snap[0]) is int and snap[0] >= 0
                and (snap[1] is None or type(snap[1]) is int)):
            raise ValueError("dlt645 snapshot: must be [wrong passwords, day]")
        self.slave.bad_passwords, self.slave.bad_password_day = snap
        self.slave.dirty = False
