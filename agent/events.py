"""Inputs to the meter core and the actions it returns.

The core never reads a clock or touches I/O: a shell (hardware backend,
simulator, MQTT link) feeds it these small event objects and carries out
the actions it gets back.  Time always arrives as an input:

- ``wall``: wall-clock seconds since the Unix epoch (UTC), an int;
- ``mono``: a monotonic tick in milliseconds, an int (may restart at boot).

Plain classes with ``__slots__`` rather than dataclasses or enums, so the
same file runs on MicroPython.
"""


class Event:
    """Base of everything fed into the core."""

    __slots__ = ()
    kind = "event"

    def __repr__(self):
        fields = ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)
        return "%s(%s)" % (self.__class__.__name__, fields)


class Boot(Event):
    """The device has (re)started; the core's state was loaded (or is new)."""

    __slots__ = ("wall", "mono")
    kind = "boot"

    def __init__(self, wall, mono):
        self.wall = wall
        self.mono = mono


class Tick(Event):
    """Time passes: lets the core run timers, freezes and tariff switches."""

    __slots__ = ("wall", "mono")
    kind = "tick"

    def __init__(self, wall, mono):
        self.wall = wall
        self.mono = mono


class Edge(Event):
    """A level change on the pulse input (1 = pulse active), at ``mono`` ms."""

    __slots__ = ("level", "mono")
    kind = "edge"

    def __init__(self, level, mono):
        self.level = level
        self.mono = mono


class Pulses(Event):
    """``count`` already-filtered pulses counted up to ``wall``/``mono``.

    Used with hardware counters and by the fast simulator: all the pulses
    are attributed to the event's time, so the cost is O(1) per interval.
    """

    __slots__ = ("count", "wall", "mono")
    kind = "pulses"

    def __init__(self, count, wall, mono):
        self.count = count
        self.wall = wall
        self.mono = mono


class TopUp(Event):
    """Credit to add, already authenticated by the token layer.

    ``ref`` identifies the token (for the acknowledgement and de-duplication
    by the caller); ``amount`` is in money minor units.
    """

    __slots__ = ("amount", "ref", "wall", "mono", "source")
    kind = "topup"

    def __init__(self, amount, ref, wall, mono, source="mqtt"):
        self.amount = amount
        self.ref = ref
        self.wall = wall
        self.mono = mono
        self.source = source


class Command(Event):
    """A management command, already authenticated.

    ``name`` is one of ``agent.commands.NAMES``; ``args`` a dict of
    arguments whose keys depend on the command.
    """

    __slots__ = ("name", "args", "ref", "wall", "mono")
    kind = "command"

    def __init__(self, name, args, ref, wall, mono):
        self.name = name
        self.args = args if args is not None else {}
        self.ref = ref
        self.wall = wall
        self.mono = mono


class Button(Event):
    """The customer pressed the meter's button (used for close-allowed)."""

    __slots__ = ("wall", "mono")
    kind = "button"

    def __init__(self, wall, mono):
        self.wall = wall
        self.mono = mono


class RelayFeedback(Event):
    """The relay's auxiliary contact reads ``closed`` (True/False)."""

    __slots__ = ("closed", "mono")
    kind = "feedback"

    def __init__(self, closed, mono):
        self.closed = closed
        self.mono = mono


class PowerFail(Event):
    """The supply-voltage detector says power is going: commit now."""

    __slots__ = ("wall", "mono")
    kind = "power_fail"

    def __init__(self, wall, mono):
        self.wall = wall
        self.mono = mono


class Shutdown(Event):
    """Clean shutdown (SIGTERM): commit now."""

    __slots__ = ("wall", "mono")
    kind = "shutdown"

    def __init__(self, wall, mono):
        self.wall = wall
        self.mono = mono


class SetClock(Event):
    """The wall clock is set to ``wall`` (time sync, RTC reset)."""

    __slots__ = ("wall", "mono", "source")
    kind = "set_clock"

    def __init__(self, wall, mono, source="sync"):
        self.wall = wall
        self.mono = mono
        self.source = source


class Tamper(Event):
    """The meter or terminal cover switch changed (``opened`` True/False)."""

    __slots__ = ("opened", "wall", "mono")
    kind = "tamper"

    def __init__(self, opened, wall, mono):
        self.opened = opened
        self.wall = wall
        self.mono = mono


class Anomaly(Event):
    """A plausibility finding from outside the pulse path, to log and report.

    For example a DL/T 645 cross-check of the host meter's register
    against the pulse count (``reason`` "register_drift").
    """

    __slots__ = ("reason", "data", "wall", "mono")
    kind = "anomaly"

    def __init__(self, reason, data, wall, mono):
        self.reason = reason
        self.data = data if data is not None else {}
        self.wall = wall
        self.mono = mono


# ---------------------------------------------------------------- actions


class Action:
    """Base of everything the core asks its shell to do."""

    __slots__ = ()
    kind = "action"

    def __repr__(self):
        fields = ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)
        return "%s(%s)" % (self.__class__.__name__, fields)

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )


class PulseCoil(Action):
    """Energise one coil of the latching relay for ``width_ms``.

    ``coil`` is ``"set"`` (close: supply on) or ``"reset"`` (open: supply
    off).  The core never asks for a pulse while another may still be
    running, so the two coils are never energised together.
    """

    __slots__ = ("coil", "width_ms")
    kind = "pulse_coil"

    def __init__(self, coil, width_ms):
        self.coil = coil
        self.width_ms = width_ms


class Persist(Action):
    """Commit the core's state now (``reason`` says why).

    ``urgent`` actions (money, relay decisions, power-fail) must be durable
    before the shell acknowledges anything or drives a relay closed.
    """

    __slots__ = ("reason", "urgent")
    kind = "persist"

    def __init__(self, reason, urgent):
        self.reason = reason
        self.urgent = urgent


class Publish(Action):
    """An event record to log and send to the head-end."""

    __slots__ = ("record",)
    kind = "publish"

    def __init__(self, record):
        self.record = record


class Alarm(Action):
    """Switch the balance alarm ``level`` (1 = light, 2 = sound) on or off."""

    __slots__ = ("level", "on")
    kind = "alarm"

    def __init__(self, level, on):
        self.level = level
        self.on = on


class Ack(Action):
    """Result of a top-up or command, for the sender.

    ``code`` is a result code from ``agent.results``; ``balance`` the
    balance after it, in minor units.  Only ever emitted after the Persist
    action that makes the result durable.
    """

    __slots__ = ("ref", "code", "balance")
    kind = "ack"

    def __init__(self, ref, code, balance):
        self.ref = ref
        self.code = code
        self.balance = balance
