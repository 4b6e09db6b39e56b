"""The virtual board's outside world, run on MicroPython beside the board entry.

`pmeter sim board` (sim/board.py) starts ``hw.mpy.main(extra=world(...))``
with the fake ``machine`` (machine.py here): a constant load drives the
pulse input at the meter constant while the latching relay is closed, and
the relay latches on the coil pulses the agent drives (the fake pins'
write log).  Every ``STATUS_MS`` a ``status`` line gives the meter's
energy and balance and the relay model's position.
"""

import asyncio
import time

import machine

PULSE_MS = 40  # a pulse is held active this long, past the core's 25 ms input filter
MIN_OPERATE_MS = 20  # a shorter coil pulse does not move the armature
STATUS_MS = 2000


class Relay:
    """A latching relay: a set-coil pulse closes it, a reset-coil pulse opens it."""

    def __init__(self, set_pin, reset_pin, log):
        self.coils = {set_pin: True, reset_pin: False}
        self.closed = True  # a latching relay keeps its position; the agent drives it where it wants it
        self.log = log
        self._since = {}  # coil pin -> ticks_ms its pulse started

    def poll(self):
        """Apply the coil pulses the agent drove since the last poll."""
        for ticks, pin, level in machine.writes:
            if pin not in self.coils:
                continue
            if level:
                self._since[pin] = ticks
            elif pin in self._since and time.ticks_diff(ticks, self._since.pop(pin)) >= MIN_OPERATE_MS:
                if self.closed != self.coils[pin]:
                    self.closed = self.coils[pin]
                    self.log("relay model: %s" % ("closed" if self.closed else "open"))
        del machine.writes[:]


def world(watts, constant, pulse_pin, active_low, set_pin, reset_pin, log=print):
    """The ``extra`` coroutine for hw.mpy.main: the load, the relay model and the status lines.

    One pulse per ``1000 / constant`` Wh: pulse ``n`` falls due at
    ``n * 3600000000 // (watts * constant)`` ms (whole milliseconds, no drift).
    """
    relay = Relay(set_pin, reset_pin, log)
    active = 0 if active_low else 1

    async def pulses():
        period = 3600000000  # ms per hour times Wh per kWh
        n = 0
        last = time.ticks_ms()
        while True:
            n += 1
            step = n * period // (watts * constant) - (n - 1) * period // (watts * constant)
            last = time.ticks_add(last, step)
            wait = time.ticks_diff(last, time.ticks_ms())
            await asyncio.sleep_ms(wait if wait > 0 else 0)
            relay.poll()
            if relay.closed:
                machine.drive(pulse_pin, active)
                await asyncio.sleep_ms(PULSE_MS)
                machine.drive(pulse_pin, 1 - active)

    async def run(agent):
        machine.drive(pulse_pin, 1 - active)  # the idle level
        asyncio.create_task(pulses())
        while True:
            await asyncio.sleep_ms(STATUS_MS)
            relay.poll()
            m = agent.app.meter
            log("status energy %d Wh, balance %d, relay %s, relay model %s" % (
                m.energy_wh, m.balance, m.relay_state, "closed" if relay.closed else "open"))

    return run
