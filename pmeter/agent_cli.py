"""``pmeter agent`` and ``pmeter diag``: the agent process and its troubleshooting.

``pmeter agent --config FILE [--hw sim|pi] [--data DIR]`` loads the
settings (agent/settings.py), opens the durable store in the data
directory, builds the hardware backend (hw.make_backend), the Device and
the LinkedMeter, the MQTT transport when ``mqtt.host`` is set and the
DL/T 645 slave when ``dlt645.device`` is set, then runs the main loop:
hardware inputs into the core, a Tick at least every ``agent.tick_ms``
and at the core's next deadline, the broker's messages, idle keypad
upkeep, the watchdog.  The broker being down never stops it: metering,
debiting and cutting go on and the outbox waits.  SIGTERM/SIGINT feed a
Shutdown event (a clean commit) and exit 0.  Logs go to stderr (the
journal under systemd).

``pmeter diag --config FILE [--data DIR] [--json]`` walks the utility's
"failed remote cut/reconnect" path and prints findings with the fix to
try; exit 1 when something is wrong, 2 for a bad config.
"""

import argparse
import binascii
import json
import logging
import os
import signal
import sys
import threading
import time

from agent import results
from agent.config import ConfigError

log = logging.getLogger("pmeter.agent")

STATUS_FILE = "agent-status.json"  # runtime facts for diag (coil pulses, faults, broker), written on change
CPYTHON_BACKENDS = ("sim", "pi")


def register(subparsers):
    """Add ``agent`` and ``diag`` to the ``pmeter`` command."""
    p = subparsers.add_parser("agent", help="run the meter agent (simulated hardware on a desktop, GPIO on a Pi)")
    p.add_argument("--config", required=True, help="agent config file (TOML; see deploy/agent.toml)")
    p.add_argument("--hw", choices=CPYTHON_BACKENDS, help="hardware backend (default: agent.hw in the config)")
    p.add_argument("--data", help="store directory (default: agent.data_dir in the config)")
    p.set_defaults(handler=cmd_agent)
    d = subparsers.add_parser("diag", help="troubleshoot a failed remote cut/reconnect: relay, power, broker, clock, store, keys")
    d.add_argument("--config", required=True, help="agent config file")
    d.add_argument("--data", help="store directory (default: agent.data_dir in the config)")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the broker")
    d.set_defaults(handler=cmd_diag)


def _fail(message, code=2):
    print("pmeter: %s" % message, file=sys.stderr)
    return code


def _bad_config(e):
    """Exit 2 for a ConfigError, naming --config when the file itself is the problem."""
    return _fail("--config: %s" % e.rule if e.key == "(file)" else str(e))


def _load(args):
    """(cfg, data_dir) or raise ConfigError naming the key."""
    from agent import settings

    cfg = settings.load(args.config)
    return cfg, args.data or cfg["agent"]["data_dir"]


# ====================================================================== agent


class AgentRuntime:
    """The agent process minus argument parsing: build with a validated config, then ``run``."""

    def __init__(self, cfg, hw_name, data_dir, backend_options=None):
        from agent.app import App
        from agent.store import OsFS
        from hw import make_backend
        from hw.mqtt_paho import nonce_prefix

        self.cfg = cfg
        self.data_dir = data_dir
        mid = cfg["meter"]["id"]
        self.meter_id = mid
        # Devices before anything starts: one missing at start is a config
        # error (exit 2); one lost later is reopened by its reader.
        check_dlt645_device(cfg["dlt645"]["device"])
        self.keypad = None
        if cfg["agent"]["keypad"]:
            from hw.keypad import open_keypad

            try:
                self.keypad = open_keypad(cfg["agent"]["keypad"], cfg["agent"]["keypad_baud"])
            except ValueError as exc:
                raise ConfigError("agent.keypad", str(exc))
            log.info("keypad on %s", self.keypad.name)
        opts = dict(backend_options or {})
        opts.setdefault("log", lambda m: log.warning("%s", m))
        if hw_name == "sim":
            opts.setdefault("load_w", cfg["sim"]["load_w"])
            opts.setdefault("feedback", cfg["sim"]["feedback"])
        self.backend = make_backend(hw_name, cfg, **opts)
        self.app = App(cfg, OsFS(), data_dir, nonce_prefix(), on_clock=self.backend.set_wall,
                       on_record=self._log_record, on_refusal=self._log_refusal)
        self.store = self.app.store
        self.device = self.app.device
        self.guard = self.app.guard
        self.session = self.app.session
        self.linked = self.app.linked
        self.lock = threading.RLock()  # the core is driven by the loop and the DL/T 645 threads
        self.transport = None
        self.slave = None
        self.dlt645 = None
        if cfg["dlt645"]["device"] is not None:
            from agent.dlt645.lockout import LockoutPart
            from agent.dlt645.slave import Slave

            dc = dict(cfg["dlt645"])
            if dc["address"] is None:
                dc["address"] = mid
            self.dlt645 = Slave(dc, cfg["meter"]["tz_offset_min"])
            self.device.add_part("dlt645", LockoutPart(self.dlt645))  # the password lockout survives restarts
        self.master = None
        self.master_check = None  # CrossCheck of the host meter's register (dlt645_master)
        self.master_address = cfg["dlt645_master"]["address"]
        self.master_reads = 0  # register reads that worked
        self.pending_outs = []
        self.stop = threading.Event()
        self.errors = 0
        self._status = None
        self._connects = 0

    # ------------------------------------------------------------ plumbing

    def _log_record(self, rec):
        log.info("event %d %s %s %s", rec.seq, rec.kind, rec.reason, json.dumps(rec.data, sort_keys=True, default=repr))

    @staticmethod
    def _log_refusal(source, ref, code, why):
        log.warning("token refused (%s, ref %s): %s%s", source, "-" if ref is None else ref, code,
                    "" if not why or why == code else " (%s)" % why)

    def execute(self, actions):
        """Carry out hardware actions (coil pulses run to completion)."""
        for a in actions:
            self.backend.execute(a)

    def send(self, outs):
        if outs and self.transport is not None:
            self.transport.send(outs)

    def feed(self, event):
        """One event through the linked meter; hardware and MQTT carried out."""
        self.run_step(self.app.event(event, self.backend.wall()))

    def run_step(self, result):
        """Carry out one step's (hardware actions, Outs)."""
        hw, outs = result
        self.execute(hw)
        self.send(outs)

    def _dispatch(self, events):
        # DL/T 645 frames that ask the meter to act; runs under self.lock.
        actions, outs = self.app.dispatch(events, self.backend.wall())
        self.execute([a for a in actions if a.kind != "ack"])
        self.pending_outs.extend(outs)  # the transport belongs to the main loop
        return actions

    # ------------------------------------------------------------ start / stop

    def boot(self):
        """Load the store, boot the core, start the transport and the slave."""
        b = self.backend
        with self.lock:
            hw, outs = self.app.boot(b.wall(), b.mono())
            self.execute(hw)
            for ev in b.start():
                self.feed(ev)
        m = self.linked.meter
        log.info("meter %s booted (%s backend): balance %d, energy %d Wh, relay %s, store %s",
                 self.meter_id, b.name, m.balance, m.energy_wh, m.relay_state, self.device.source or "new")
        if self.device.state_lost:
            log.error("stored state was lost: supply kept on (guarantee) until the head-end restores the balance")
        mq = self.cfg["mqtt"]
        if mq["host"] is not None:
            self.transport = self._transport(mq)
            log.info("MQTT broker %s:%d", mq["host"], mq["port"])
        else:
            log.info("no mqtt.host: running offline")
        if self.cfg["dlt645"]["device"] is not None:
            self.slave = self._slave()
        if self.cfg["dlt645_master"]["device"] is not None:
            self.master = threading.Thread(target=self._master_loop, name="dlt645-master", daemon=True)
            self.master.start()

    def _transport(self, mq):
        import paho.mqtt.client as mqtt

        from hw.mqtt_paho import TLS, PahoTransport

        tls = TLS(mq["ca"], mq["cert"], mq["key"]) if mq["tls"] else None
        return PahoTransport(
            self.app, mq["host"], mq["port"], mq["client_id"] or self.meter_id,
            tls=tls, username=mq["username"], password=mq["password"], keepalive=mq["keepalive_s"],
            on_hw=self.execute, log=lambda m: log.warning("mqtt: %s", m),
            protocol=mqtt.MQTTv5 if mq["protocol"] == 5 else mqtt.MQTTv311)

    def _slave(self):
        from hw.serial_link import SlaveLink, open_slave

        dc = self.dlt645.cfg
        link = SlaveLink(self.dlt645, self.linked.meter, self._dispatch, self.lock, persist=self._commit_part)
        # hw.rs485_de_pin: the Pi backend turns the transceiver round for each reply
        direction = getattr(self.backend, "rs485_transmit", None) if self.cfg["hw"]["rs485_de_pin"] is not None else None
        server = open_slave(link, dc["device"], dc["baud"], dc["parity"], dc["reply_delay_ms"], direction=direction)
        log.info("DL/T 645 slave %s on %s (control %s)", dc["address"], dc["device"], "on" if dc["control"] else "off")
        return server

    def _commit_part(self):
        # A part changed outside any event (the DL/T 645 lockout); runs under self.lock.
        hw, outs = self.linked.commit_part()
        self.execute(hw)
        self.pending_outs.extend(outs)

    def _master_loop(self):
        # Read the host meter's register every interval_s until stopped.
        while not self.stop.is_set():
            self.master_pass()
            self.stop.wait(self.cfg["dlt645_master"]["interval_s"])

    def master_pass(self):
        """One read of the host meter's energy register, cross-checked against the pulses.

        Runs in the master thread.  A drift or a register going backwards
        goes to the core as an ``Anomaly`` (logged as a ``plausibility``
        record, committed and published); its Outs wait for the main loop,
        which owns the transport.  Returns the findings fed; a host meter
        that is absent or silent is logged and retried next interval.
        """
        from agent.dlt645.master import CrossCheck
        from agent.events import Anomaly
        from hw.serial_link import SerialMaster

        mc = self.cfg["dlt645_master"]
        if self.master_check is None:
            self.master_check = CrossCheck(mc["drift_wh"], mc["drift_permille"])
        try:
            with SerialMaster(mc["device"], mc["baud"], mc["parity"], mc["timeout_ms"] / 1000.0) as port:
                if self.master_address is None:
                    self.master_address = port.read_address()
                register_wh = port.read_energy_wh(self.master_address)
        except Exception as e:  # an absent or silent host meter must not stop the agent
            log.warning("dlt645 master: %s: %s", mc["device"], e)
            return []
        found = []
        with self.lock:
            self.master_reads += 1
            for reason, data in self.master_check.update(self.linked.meter.energy_wh, register_wh):
                b = self.backend
                hw, outs = self.app.event(Anomaly(reason, data, b.wall(), b.mono()), b.wall())
                self.execute(hw)
                self.pending_outs.extend(outs)
                found.append((reason, data))
        return found

    def close_devices(self):
        """Release the hardware and the keypad of a runtime that never booted."""
        if self.keypad is not None:
            self.keypad.close()
        self.backend.close()

    def shutdown(self):
        """Clean stop: Shutdown event (a clean commit), status offline, hardware safe."""
        from agent.events import Shutdown

        b = self.backend
        with self.lock:
            self.feed(Shutdown(b.wall(), b.mono()))
            self.write_status(force=True)
            if self.transport is not None:
                if self.transport.connected:
                    self.transport.send([self.session.will()])
                    self.transport.step(0.1)
                self.transport.close()
        if self.slave is not None:
            self.slave.stop()
        self.close_devices()
        log.info("stopped: balance %d, energy %d Wh, %d commits", self.linked.meter.balance,
                 self.linked.meter.energy_wh, self.device.commits)

    # ------------------------------------------------------------ the loop

    def step(self):
        """One pass: inputs, timers, the broker, idle work, the watchdog."""
        b = self.backend
        with self.lock:
            for ev in b.poll():
                self.feed(ev)
            mono = b.mono()
            wall = b.wall()
            self.run_step(self.app.tick(wall, mono))
            if self.keypad is not None:
                for digits in self.keypad.poll(mono):
                    code, hw, outs = self.app.keypad(digits, wall, mono)
                    if code == results.ACCEPTED:
                        log.info("keypad code: accepted")
                    self.run_step((hw, outs))
            if self.pending_outs:
                outs, self.pending_outs = self.pending_outs, []
                self.send(outs)
            t = self.transport
            if t is not None:
                t.step(0)
                if t.connects != self._connects:
                    self._connects = t.connects
                    log.info("MQTT connected to %s:%d (connection %d)", t.host, t.port, t.connects)
            self.app.idle()
            b.feed_watchdog()
            self.write_status()

    def run(self):
        """Boot, loop until ``stop`` is set, shut down; returns the exit code."""
        self.boot()
        poll = self.backend.cfg["poll_ms"]
        while not self.stop.is_set():
            try:
                self.step()
            except Exception:  # keep metering: one bad pass must not end the process
                self.errors += 1
                log.exception("main loop pass failed (%d so far)", self.errors)
                if self.app.fault is not None:
                    return self.abandon()
            self.stop.wait(poll / 1000.0)
        self.shutdown()
        return 0

    def abandon(self):
        """The core failed half-way through a step: stop without committing or
        sending anything it made, so the restart (systemd) begins from the store."""
        log.error("the core failed during a step: exiting without a commit; the store holds the last good state")
        if self.transport is not None:
            self.transport.close()
        if self.slave is not None:
            self.slave.stop()
        self.close_devices()
        return 1

    # ------------------------------------------------------------ status for diag

    def status(self):
        """Runtime facts diag cannot read from the store."""
        st = self.backend.status()
        t = self.transport
        st["mqtt"] = None if t is None else {"connected": t.connected, "connects": t.connects,
                                             "callback_errors": t.callback_errors}
        # Nothing here changes with every message (the outbox is in the store):
        # the file is rewritten only when something diag cares about changed.
        st["store_error"] = self.device.store_error
        st["loop_errors"] = self.errors
        st["pid"] = os.getpid()
        return st

    def write_status(self, force=False):
        """Write the status file when it changed (rarely: spares the flash)."""
        st = self.status()
        if not force and st == self._status:
            return
        self._status = st
        path = os.path.join(self.data_dir, STATUS_FILE)
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(dict(st, written=int(time.time())), f, sort_keys=True)
            os.replace(path + ".tmp", path)
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)


def cmd_agent(args):
    """Run the agent until SIGTERM; exit 0 after a clean shutdown, 2 on bad config."""
    from agent.config import ConfigError

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg, data_dir = _load(args)
    except ConfigError as e:
        return _bad_config(e)
    hw_name = args.hw or cfg["agent"]["hw"]
    if hw_name not in CPYTHON_BACKENDS:
        return _fail("config key 'agent.hw': %r runs on a MicroPython board (mpy/main.py), not under pmeter; "
                     "use --hw sim or --hw pi" % hw_name)
    for key in ("ca", "cert", "key"):
        path = cfg["mqtt"][key]
        if cfg["mqtt"]["host"] is not None and path is not None and not os.path.isfile(path):
            return _fail("config key 'mqtt.%s': no such file %r" % (key, path))
    # Everything is checked before the data directory is created.
    try:
        rt = AgentRuntime(cfg, hw_name, data_dir)
    except ConfigError as e:
        return _fail(str(e))
    except ValueError as e:
        return _fail("cannot start: %s" % e)
    except (ImportError, RuntimeError, OSError) as e:  # e.g. --hw pi without RPi.GPIO or /dev/gpiomem
        return _fail("cannot start the %s backend: %s" % (hw_name, e), 1)
    where = "--data" if args.data else "agent.data_dir"
    problem = None
    try:
        os.makedirs(data_dir, exist_ok=True)
        if not os.access(data_dir, os.W_OK):
            problem = "%s: the data directory %r is not writable" % (where, data_dir)
    except OSError as e:
        problem = "%s: cannot create the data directory %r: %s" % (where, data_dir, e)
    if problem is not None:
        rt.close_devices()
        return _fail(problem)

    def on_signal(signum, frame):
        log.info("signal %d: shutting down", signum)
        rt.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return rt.run()
    except ConfigError as e:  # the stored state belongs to another config: nothing was written
        rt.backend.close()
        if rt.keypad is not None:
            rt.keypad.close()
        return _fail(str(e))
    except OSError as e:  # e.g. the DL/T 645 port cannot be bound
        log.error("cannot run: %s", e)
        return 1


def check_dlt645_device(device):
    """Raise ConfigError naming ``dlt645.device`` when it cannot be opened now."""
    if device is None:
        return
    import serial

    from hw.serial_link import parse_hostport

    try:
        if device.startswith("tcp://"):
            parse_hostport(device[6:], "dlt645.device")  # bound by the slave at boot
        else:
            serial.serial_for_url(device).close()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ConfigError("dlt645.device", "cannot open %r (%s)" % (device, exc))


# ====================================================================== diag


class Findings:
    """Findings in the order the troubleshooting path visits them."""

    def __init__(self):
        self.items = []

    def add(self, check, status, finding, fix=""):
        self.items.append({"check": check, "status": status, "finding": finding, "fix": fix})

    @property
    def ok(self):
        return not any(i["status"] == "fail" for i in self.items)


def _records(meter, kinds, limit=5):
    out = []
    for kind in kinds:
        out.extend(meter.records(kind))
    out.sort(key=lambda r: -r.seq)
    return out[:limit]


def _read_status(data_dir):
    try:
        with open(os.path.join(data_dir, STATUS_FILE)) as f:
            st = json.load(f)
        return st if isinstance(st, dict) else None
    except (OSError, ValueError):
        return None


def _load_state(cfg, data_dir, f):
    """The newest restorable stored value (dict) or None; store findings added."""
    from agent.store import OsFS, Store

    mid = cfg["meter"]["id"]
    if not os.path.isdir(data_dir):
        f.add("store", "fail", "no data directory %s" % data_dir,
              "check --data / agent.data_dir; the agent creates it on its first run")
        return None
    store = Store(OsFS(), data_dir, mid)
    loads, findings, had = store.load()
    for fd in findings:
        f.add("store", "warn", "%s: %s (%s)" % (fd.file, fd.problem, fd.detail),
              "the other copy is used and the next commit rewrites this one; if it keeps happening the "
              "SD card or flash is failing: replace it")
    if not had:
        f.add("store", "warn", "no stored state in %s: the agent never ran here" % data_dir,
              "start the agent once, or point --data at the right directory")
        return None
    from agent.meter import Meter

    for loaded in loads:
        v = loaded.value
        try:
            if not isinstance(v, dict):
                raise ValueError("not a map")
            meter = Meter.restore(cfg, v.get("meter"))
        except (ValueError, TypeError) as e:
            f.add("store", "fail", "%s does not fit this config: %s" % (loaded.source, e),
                  "meter.id or the config changed since it was written; use the config it was written with")
            continue
        dev = v.get("device") if isinstance(v.get("device"), dict) else {}
        if dev.get("lost"):
            f.add("store", "fail", "state was lost (both copies damaged) at %s; the balance is a fresh default"
                  % dev.get("lost"), "supply is kept on; restore the balance from the head-end (set_credit) "
                  "after checking the ledger")
        else:
            f.add("store", "ok", "state from %s: balance %d, energy %d Wh, last commit '%s'%s" % (
                loaded.source, meter.balance, meter.energy_wh, dev.get("reason"),
                " (clean)" if dev.get("clean") else ""))
        return v, meter
    f.add("store", "fail", "no valid state: every copy in %s is damaged" % data_dir,
          "the agent boots with the supply on and raises state_lost; restore the balance from the head-end "
          "(set_credit) after checking the ledger")
    return None


def _relay_checks(cfg, meter, status, f):
    hwname = cfg["agent"]["hw"]
    # 1. relay feedback against the last command
    wants = "closed" if meter.relay_closed else "open"
    recent = _records(meter, ("trip", "close", "relay_state", "relay_failed"), 5)
    failed = [r for r in recent if r.kind == "relay_failed"]
    moved = [r for r in recent if r.kind in ("trip", "close")]
    if failed and (not moved or failed[0].seq > moved[0].seq):
        d = failed[0].data
        f.add("relay", "fail", "relay did not follow the last command: expected %s, feedback %s (%s attempts, %s)" % (
            d.get("expected"), d.get("observed"), d.get("attempts", "?"), failed[0].reason),
            "check the coil driver supply, transistors/H-bridge and flyback diodes; relay.pulse_ms long enough "
            "for this relay (40-100 ms typical); the feedback contact wiring and hw.feedback_closed_level")
    else:
        f.add("relay", "ok", "policy state %s: the relay should be %s" % (meter.relay_state, wants))
    if meter.relay_state == "close_allowed":
        f.add("relay", "warn", "reconnection is allowed but waits for the customer's button",
              "ask the customer to hold the button, or send close_direct")
    if meter.relay_state == "tripped_arrears" and meter.balance > meter.limits.get("close_allowed", 0):
        f.add("relay", "warn", "tripped for arrears although the balance %d is above the close threshold" % meter.balance,
              "a Tick re-evaluates it; if it stays open check relay.reconnect ('button' waits for the customer)")
    feedback_wired = cfg["relay"]["feedback"] and (hwname == "sim" or cfg["hw"]["feedback_pin"] is not None)
    if not feedback_wired:
        f.add("relay", "warn", "no relay feedback contact configured: a cut or reconnect that fails is not seen",
              "wire the auxiliary contact to hw.feedback_pin and set relay.feedback = true")
    # 2. coil operation history
    if status is None:
        f.add("coil", "warn", "no runtime status (%s): the agent is not running here or never wrote it" % STATUS_FILE,
              "start the agent (systemctl start pmeter-agent) and run diag again")
    else:
        pulses = status.get("coil_pulses") or []
        if status.get("coil_refused"):
            f.add("coil", "fail", "%d coil pulses refused by the driver: %s" % (
                status["coil_refused"], "; ".join(status.get("faults") or [])),
                "check relay.pulse_ms against hw.coil_min_ms..hw.coil_max_ms")
        else:
            f.add("coil", "ok", "%d recent coil pulses: %s" % (len(pulses), ", ".join(
                "%s %d ms" % (p[0], p[2] - p[1]) for p in pulses[-5:]) or "none since start"))
    # 3. recent relay events
    if recent:
        f.add("relay_events", "ok", "; ".join("#%d %s %s at %s" % (r.seq, r.kind, r.reason, r.wall) for r in recent))
    else:
        f.add("relay_events", "ok", "no relay events recorded")


def _power_checks(cfg, status, v, f):
    hw = cfg["hw"]
    if hw["power_fail_pin"] is None and cfg["agent"]["hw"] != "sim":
        most = (cfg["meter"]["supply_max_w"] * cfg["store"]["checkpoint_s"] + 3599) // 3600
        f.add("power_fail", "warn", "no power-fail input: an unclean power cut may lose up to %d Wh" % most,
              "wire a supply-voltage detector to hw.power_fail_pin")
    elif status is not None and status.get("power_fail_level") is not None \
            and status["power_fail_level"] == hw["power_fail_level"]:
        f.add("power_fail", "fail", "the power-fail input says the supply is failing now",
              "check the supply and the detector; a relay cannot be driven reliably on a failing supply")
    else:
        f.add("power_fail", "ok", "power-fail input idle" if hw["power_fail_pin"] is not None or cfg["agent"]["hw"] == "sim"
              else "no power-fail input")
    dev = v.get("device") if v else None
    if isinstance(dev, dict) and dev.get("reason") not in ("shutdown", "power_fail") and status is None:
        f.add("power_fail", "warn", "the last commit was '%s', not a clean shutdown: the agent died or lost power"
              % dev.get("reason"), "check the journal (journalctl -u pmeter-agent) and the supply")


def _broker_check(cfg, f, timeout):
    mq = cfg["mqtt"]
    if mq["host"] is None:
        f.add("broker", "ok", "no mqtt.host: the meter runs offline (remote commands cannot reach it)")
        return
    for key in ("ca", "cert", "key"):
        if mq[key] is not None and not os.path.isfile(mq[key]):
            f.add("broker", "fail", "mqtt.%s: no such file %s" % (key, mq[key]), "fix the path in the config")
            return
    ok, why = probe_broker(mq, cfg["meter"]["id"], timeout)
    where = "%s:%d" % (mq["host"], mq["port"])
    if ok:
        f.add("broker", "ok", "connected to %s with the meter's credentials" % where)
        return
    fix = "check the broker is running and reachable (host, port, firewall)"
    low = why.lower()
    if "certificate" in low or "ssl" in low or "tls" in low:
        fix = "check mqtt.ca/mqtt.cert/mqtt.key belong to this broker and meter, and that the clock is right (certificate validity)"
    elif "not authori" in low or "bad user" in low or ("refused" in low and "connection refused" not in low):
        fix = "the broker refused the credentials: check the certificate CN / username and the ACL for this meter"
    f.add("broker", "fail", "cannot connect to %s: %s" % (where, why), fix)


def probe_broker(mq, meter_id, timeout):
    """Try a connection with the configured credentials: (ok, why)."""
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()

    # Not the agent's client id: the broker would drop the running agent's session.
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="diag-%s-%d" % (meter_id, os.getpid()),
                    protocol=mqtt.MQTTv311)
    if mq["tls"]:
        c.tls_set(ca_certs=mq["ca"], certfile=mq["cert"], keyfile=mq["key"], cert_reqs=ssl.CERT_REQUIRED,
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if mq["username"] is not None:
        c.username_pw_set(mq["username"], mq["password"])
    c.on_connect = on_connect
    c.connect_timeout = timeout
    try:
        c.connect(mq["host"], mq["port"], keepalive=10)
    except Exception as e:
        return False, "%s" % (e,) or repr(e)
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        if c.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
            break
    try:
        c.disconnect()
    except Exception:
        pass
    rc = result.get("rc")
    if rc is None:
        return False, "no answer within %.1f s (TLS handshake or broker refused the client certificate?)" % timeout
    if rc.is_failure:
        return False, "broker refused: %s" % rc
    return True, ""


def _clock_check(v, f):
    now = int(time.time())
    if now < 1704067200:  # 2024-01-01: a Pi without RTC or network boots in the past
        f.add("clock", "fail", "the clock says %d (before 2024): it is not set" % now,
              "enable NTP (timedatectl set-ntp true) or fit an RTC; tariffs, expiry and TLS depend on it")
        return
    last = None
    if v and isinstance(v.get("device"), dict):
        last = v["device"].get("wall")
    if isinstance(last, int) and last > now + 300:
        f.add("clock", "fail", "the clock is %d s behind the last commit: it went backwards" % (last - now),
              "check the RTC battery and NTP; tokens and commands may be refused as expired meanwhile")
    else:
        f.add("clock", "ok", "clock %d (UTC)%s" % (now, "" if last is None else ", last commit at %d" % last))


def _key_check(cfg, v, f):
    tc = cfg["tokens"]
    tok = v.get("tokens") if v else None
    if not isinstance(tok, dict):
        f.add("keys", "ok", "key revision %d (configured; no stored token state)" % tc["revision"])
        return
    rev = tok.get("r")
    if not isinstance(rev, int):
        f.add("keys", "fail", "stored token state has no key revision", "the store is damaged: see store")
        return
    if rev < tc["revision"]:
        f.add("keys", "fail", "config says key revision %d but the meter's stored state is at %d: the agent cannot "
              "restore its token state" % (tc["revision"], rev),
              "put back the revision-%d key in tokens, or send the meter a key_change to %d" % (rev, tc["revision"]))
    elif rev > tc["revision"]:
        f.add("keys", "warn", "the meter moved to key revision %d by a key change; the config still says %d" % (
            rev, tc["revision"]), "update tokens.key/tokens.revision (pmeter keys derive --revision %d); the stored key "
            "is used meanwhile" % rev)
    elif binascii.hexlify(tok.get("ky", b"")).decode() != tc["key"].lower():
        f.add("keys", "fail", "the configured tokens.key differs from the stored key at the same revision %d" % rev,
              "derive the key again (pmeter keys derive --meter ID): head-end tokens are refused with bad_mac")
    else:
        f.add("keys", "ok", "key revision %d, matches the config" % rev)
    link = v.get("link") if v else None
    if isinstance(link, dict):
        items = (link.get("outbox") or {}).get("items") if isinstance(link.get("outbox"), dict) else None
        if items:
            f.add("outbox", "warn" if len(items) > 16 else "ok", "%d messages wait for the broker" % len(items),
                  "they go out in order once the broker is reachable" if len(items) > 16 else "")


def diagnose(cfg, data_dir, timeout=3.0):
    """Walk the failed cut/reconnect path; returns a Findings."""
    f = Findings()
    sf = Findings()
    state = _load_state(cfg, data_dir, sf)
    v, meter = state if state else (None, None)
    status = _read_status(data_dir)
    if meter is not None:
        _relay_checks(cfg, meter, status, f)
    else:
        f.add("relay", "warn", "no usable stored state: relay history unknown", "see store")
    _power_checks(cfg, status, v, f)
    _broker_check(cfg, f, timeout)
    _clock_check(v, f)
    f.items.extend(sf.items)
    if status is not None and status.get("store_error"):
        f.add("store", "fail", "the running agent cannot commit: %s" % status["store_error"],
              "free space or replace the SD card/flash; acks and reconnections are held until a commit works")
    _key_check(cfg, v, f)
    return f


def cmd_diag(args):
    """Print findings; exit 0 when nothing failed, 1 otherwise, 2 on bad config."""
    from agent.config import ConfigError

    try:
        cfg, data_dir = _load(args)
    except ConfigError as e:
        return _bad_config(e)
    if not 0 < args.timeout <= 60:  # also refuses nan
        return _fail("--timeout must be between 0 and 60 seconds, got %r" % args.timeout)
    f = diagnose(cfg, data_dir, args.timeout)
    if args.json:
        print(json.dumps({"ok": f.ok, "meter": cfg["meter"]["id"], "findings": f.items}, sort_keys=True))
    else:
        for i in f.items:
            print("%-5s %-12s %s" % (i["status"].upper(), i["check"], i["finding"]))
            if i["fix"] and i["status"] != "ok":
                print("      %-12s fix: %s" % ("", i["fix"]))
        print("meter %s: %s" % (cfg["meter"]["id"], "OK" if f.ok else "PROBLEMS FOUND"))
    return 0 if f.ok else 1


def reference_markdown():
    """The configuration reference of docs/agent.md, generated from the schemas."""
    from agent import settings

    out = []
    for line in settings.reference():
        if line.startswith("["):
            name, _, doc = line[1:].partition("] ")
            out.append("")
            out.append("### `[%s]`%s" % (name, (" - " + doc) if doc else ""))
            out.append("")
        else:
            key, _, rest = line.partition(": ")
            out.append("- `%s`: %s" % (key, rest.strip()))
    return "\n".join(out).strip() + "\n"


REF_BEGIN = "<!-- reference: generated by pmeter.agent_cli.write_reference() -->"
REF_END = "<!-- end of reference -->"


def write_reference(path="docs/agent.md"):
    """Regenerate the reference block of docs/agent.md from the schemas."""
    with open(path) as f:
        text = f.read()
    head, _, rest = text.partition(REF_BEGIN)
    _, _, tail = rest.partition(REF_END)
    with open(path, "w") as f:
        f.write(head + REF_BEGIN + "\n\n" + reference_markdown() + "\n" + REF_END + tail)


def main(argv=None):
    """``python -m pmeter.agent_cli agent ...`` without the rest of pmeter."""
    parser = argparse.ArgumentParser(prog="pmeter")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
