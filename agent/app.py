"""The composition root: the whole meter endpoint built from a config.

Every runtime (the Pi's ``pmeter agent``, the board's ``hw.mpy.main``,
the live simulator, tests) builds its endpoint here and nowhere else:
``App(cfg, fs, data_dir, nonce_prefix)`` takes a config validated by
``agent.settings``, a file system (the store's fs adapter: ``OsFS`` on
a Pi or a board, a RAM one in the simulator) and 8 random bytes for the
link's nonces, and wires the Meter inside its Device (durable store,
checkpoints), the TokenGuard (MQTT and keypad tokens), the link Session
and the LinkedMeter over them.

Still sans-I/O: the shell reads its clocks and devices and feeds the App
through one step API, each call taking the time and returning what to
do - hardware actions (PulseCoil, Alarm, Acks of DL/T 645 commands) and
MQTT ``Out``s to publish:

- ``boot(wall, mono)`` once;
- ``event(ev, wall)`` for a local event (pulses, edges, power fail,
  shutdown);
- ``tick(wall, mono)``: a Tick when one is due (``agent.tick_ms`` since
  the last, or the core's next deadline reached), else nothing;
- ``received(topic, payload, wall, mono, retained)``,
  ``connected(wall, mono)`` and ``puback(seq, wall)`` for the MQTT
  transport (which takes the App as its handler);
- ``keypad(digits, wall, mono)`` -> (code, actions, Outs);
- ``idle()`` for upkeep between passes;
- ``sleep_ms(wall, mono)``: how long the shell may wait before the next
  ``tick`` is due.

An exception out of a step (a MemoryError on a board, a bug) may leave the
meter ahead of its store, with an ack or a relay close made but not yet
committed.  The App then refuses every later step (``fault`` holds the
exception, each call raises it again), so nothing it made is ever carried
out: the shell restarts from the store (a board resets; the head-end
re-sends what was not acknowledged).
"""

import binascii

from agent.device import Device
from agent.events import Tick
from agent.link.agent import LinkedMeter
from agent.link.envelope import LinkKeys
from agent.link.session import Session
from agent.store import Store
from agent.tokens import TokenGuard


class App:
    """One meter endpoint: Meter + Device + TokenGuard + Session + LinkedMeter.

    ``on_clock(wall)`` sets the shell's clock when a verified command
    sets it; ``on_record(record)`` and ``on_refusal(source, ref, code,
    why)`` see every event record and every refused token (for logs).
    ``telemetry_s`` and ``telemetry_offset_s`` override ``link.telemetry_s``
    and the meter's own second in the period (the simulator runs faster
    periods than a config allows and spreads its fleet itself).
    """

    def __init__(self, cfg, fs, data_dir, nonce_prefix, on_clock=None, on_record=None, on_refusal=None,
                 telemetry_s=None, telemetry_offset_s=None):
        mid = cfg["meter"]["id"]
        self.cfg = cfg
        self.meter_id = mid
        self.tick_ms = cfg["agent"]["tick_ms"]
        self.keypad_budget = cfg["agent"]["keypad_budget"]
        self.store = Store(fs, data_dir, mid)
        self.device = Device(cfg, self.store)
        self.guard = TokenGuard.from_config(mid, cfg["tokens"])
        lk = cfg["link"]["key"]
        # Without a link key nothing is ever sealed (no mqtt.host); the
        # outbox still keeps the events (bounded) for the day one is set.
        keys = LinkKeys(binascii.unhexlify(lk) if lk else bytes(32))
        self.session = Session(mid, keys, nonce_prefix, prefix=cfg["link"]["prefix"], fw=cfg["agent"]["fw"],
                               key_rev=self.guard.revision, ha=cfg["link"])
        period = telemetry_s or cfg["link"]["telemetry_s"]
        offset = int(mid) % period if telemetry_offset_s is None else telemetry_offset_s
        self.linked = LinkedMeter(self.device, self.guard, self.session, telemetry_s=period,
                                  telemetry_offset_s=offset, on_clock=on_clock, on_record=on_record,
                                  on_refusal=on_refusal)
        self.last_tick = None  # mono ms of the last Tick
        self.fault = None  # the exception a step raised: the App is done (see the module doc)

    def _step(self, fn, *args):
        if self.fault is not None:
            raise self.fault
        try:
            return fn(*args)
        except Exception as e:
            self.fault = e
            raise

    @property
    def meter(self):
        """The core (None before ``boot``)."""
        return self.device.meter

    # ------------------------------------------------------------ the step API

    def boot(self, wall, mono):
        """Load the store and boot the core: (actions, Outs)."""
        self.last_tick = mono
        return self._step(self.linked.boot, wall, mono)

    def event(self, ev, wall):
        """A local event into the core: (actions, Outs)."""
        return self._step(self.linked.handle, ev, wall)

    def tick(self, wall, mono):
        """A Tick if one is due now: (actions, Outs), both empty when none is."""
        deadline = self.linked.next_deadline()
        if self.last_tick is not None and mono - self.last_tick < self.tick_ms \
                and (deadline is None or wall < deadline):
            return [], []
        self.last_tick = mono
        return self._step(self.linked.handle, Tick(wall, mono), wall)

    def sleep_ms(self, wall, mono):
        """Milliseconds the shell may wait before ``tick`` has work (0 = now)."""
        if self.last_tick is None:
            return 0
        left = self.tick_ms - (mono - self.last_tick)
        deadline = self.linked.next_deadline()
        if deadline is not None and (deadline - wall) * 1000 < left:
            left = (deadline - wall) * 1000
        return left if left > 0 else 0

    def keypad(self, digits, wall, mono):
        """A code typed on the keypad: (result code, actions, Outs)."""
        return self._step(self.linked.keypad, digits, wall, mono)

    def idle(self):
        """Idle-time upkeep (the keypad's checkpoint table); returns the work done."""
        if self.keypad_budget:
            return self.linked.idle(self.keypad_budget)
        return 0

    def next_deadline(self):
        """Wall second of the next Tick the core, a checkpoint or telemetry needs (or None)."""
        return self.linked.next_deadline()

    # ------------------------------------------------------------ MQTT transport handler

    def connected(self, wall, mono):
        """The transport connected: birth, status, state and the outbox replay (Outs)."""
        return self._step(self.linked.connected, wall, mono)

    def received(self, topic, payload, wall, mono, retained=False):
        """A message from the broker: (actions, Outs).  Never raises."""
        return self._step(self.linked.received, topic, payload, wall, mono, retained)

    def puback(self, seq, wall):
        """The broker's PUBACK of outbox entry ``seq``: the Outs it lets go."""
        return self._step(self.linked.puback, seq, wall)

    def dispatch(self, events, wall):
        """Core events from the DL/T 645 slave: (actions incl. their Acks, Outs)."""
        return self._step(self.linked.dispatch, events, wall)
