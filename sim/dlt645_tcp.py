"""``pmeter sim run --dlt645 tcp://HOST:PORT``: a simulated meter a DL/T 645 master can talk to.

One meter runs in real time: the real core (``agent.meter.Meter``) on the
simulated backend (``hw.sim``: latching relay model, a constant household
load), with its DL/T 645-2007 slave (``agent.dlt645.slave``) served on a
TCP port by ``hw.serial_link``.  A tester's master (a concentrator, a
handheld reader, vendor test software, or ``socat`` bridging a serial
port) reads its registers and sends it control frames; a control frame
goes through the core like on a Pi, and the reply waits for its Ack.

Nothing is stored: the meter starts from its configuration every run.
"""

import signal
import threading

from agent.config import validate
from agent.dlt645.config import SCHEMA as DLT645_SCHEMA
from agent.dlt645.slave import Slave
from agent.meter import Meter, load_config
from hw.base import Loop, feed
from hw.config import validate_hw
from hw.serial_link import SlaveLink, TcpSlaveServer, parse_hostport
from hw.sim import SimBackend
from pmeter.cli import fail
from sim.runner import meter_config, money

LOAD_W = 1000  # the simulated household's constant load


SIM_PASSWORD = "02000000"  # level 02, password 000000


def parse_url(url):
    """``tcp://HOST:PORT`` -> (host, port); ValueError naming ``--dlt645`` otherwise."""
    if not url.startswith("tcp://"):
        raise ValueError("--dlt645: %r must look like tcp://HOST:PORT (a TCP port to listen on)" % (url,))
    return parse_hostport(url[6:], "--dlt645")


class TcpMeter:
    """One simulated meter in real time with its DL/T 645 slave on a TCP port.

    ``cfg`` is a raw core configuration (``agent.meter.SCHEMA``); the slave
    uses the defaults of the ``dlt645`` section (address = the meter id)
    with control on and the password ``02000000`` (SIM_PASSWORD).  ``log(line)`` gets one line per
    event record and command result.  ``clock`` is a ``hw.sim`` clock
    (default: the system's).
    """

    def __init__(self, cfg, host="127.0.0.1", port=0, load_w=LOAD_W, clock=None, log=print):
        core = load_config(cfg)
        self.log = log
        self.meter = Meter(core)
        self.backend = SimBackend(validate_hw({}), load_w=load_w, constant=core["meter"]["constant"],
                                  clock=clock, feedback=core["relay"]["feedback"])
        self.lock = threading.RLock()  # the main loop and the TCP client threads share the core
        self.loop = Loop(self.backend, self.meter, self._other)
        # A simulated meter switches no one's supply: control on, with the
        # well-known test password (a real agent has no default: docs/dlt645.md).
        dc = validate({"control": True, "password": SIM_PASSWORD}, DLT645_SCHEMA)
        dc["address"] = core["meter"]["id"]
        self.address = dc["address"]
        self.password = dc["password"]
        self.link = SlaveLink(Slave(dc, core["meter"]["tz_offset_min"]), self.meter, self._dispatch, self.lock)
        self.server = TcpSlaveServer(self.link, host, port)
        self.host, self.port = self.server.host, self.server.port

    def _other(self, action):
        # Persist has nothing to do (no store); records and results are shown.
        if action.kind == "publish":
            rec = action.record
            self.log("event %s %s: balance %s, relay %s" % (rec.kind, rec.reason, money(self.meter.balance), self.meter.relay_state))
        elif action.kind == "ack":
            self.log("command %s: result %s, balance %s" % (action.ref, action.code, money(action.balance)))

    def _dispatch(self, events):
        # Runs on a client's thread under self.lock: the slave's events through the core.
        actions = []
        for event in events:
            done = self.meter.handle(event)
            feed(self.backend, done, self._other)
            actions.extend(done)
        return actions

    def start(self):
        """Boot the meter and start listening; returns self."""
        with self.lock:
            self.loop.boot()
        self.server.start()
        return self

    def step(self):
        """One pass of the meter's loop (inputs, pulses, ticks)."""
        with self.lock:
            self.loop.step()

    def run(self, stop):
        """Step every ``hw.poll_ms`` until the ``threading.Event`` ``stop`` is set."""
        poll_s = self.backend.cfg["poll_ms"] / 1000.0
        while not stop.is_set():
            self.step()
            stop.wait(poll_s)

    def close(self):
        """Stop serving and release the simulated hardware."""
        self.server.stop()
        self.backend.close()


# Options of ``sim run`` that make no sense for one meter served in real
# time, with their defaults: given, they are refused rather than ignored.
NOT_WITH_DLT645 = (
    ("meters", None), ("days", None), ("seed", None), ("step", None), ("start", None),
    ("scenario", None), ("report", None), ("live", None), ("json", False), ("progress", False),
    ("runtime", "cpython"), ("customers", "auto"),
)


def _say(line):
    print(line, flush=True)


def cmd_serve(args, base):
    """``sim run --dlt645 URL``: serve until SIGINT/SIGTERM; exit code 2 for bad arguments."""
    for name, default in NOT_WITH_DLT645:
        if getattr(args, name, default) != default:
            return fail("--%s cannot be combined with --dlt645 (it serves one meter in real time until stopped)" % name)
    try:
        host, port = parse_url(args.dlt645)
    except ValueError as exc:
        return fail(str(exc))
    cfg = meter_config(base, 0)
    if base.get("meter", {}).get("id"):
        cfg["meter"]["id"] = base["meter"]["id"]
    if args.feedback:
        cfg.setdefault("relay", {})["feedback"] = True
    try:
        sim = TcpMeter(cfg, host, port, log=_say)
    except OSError as exc:
        return fail("--dlt645: cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    sim.start()
    _say("simulated meter %s: DL/T 645 slave on tcp://%s:%d (control password %s, load %d W, balance %s); Ctrl-C stops"
         % (sim.address, sim.host, sim.port, sim.password, sim.backend.load_w, money(sim.meter.balance)))
    try:
        sim.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    m = sim.meter
    _say("stopped: energy %d Wh, balance %s, relay %s" % (m.energy_wh, money(m.balance), m.relay_state))
    return 0
