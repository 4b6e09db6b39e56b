"""``pmeter sim ...``: run the simulator."""

import json
import os
import sys

from agent.calendar import parse_datetime
from agent.config import ConfigError
from agent.meter import load_config
from pmeter.cli import fail, positive_int
from sim import board
from sim.runner import DEFAULT_CONFIG, DEFAULT_START, TZ_S, meter_config, render, run

RUN_DEFAULTS = {"meters": 1, "days": 30, "seed": 1, "step": 900, "start": DEFAULT_START}


def register(sub):
    """Add the ``sim`` subcommands."""
    sim = sub.add_parser("sim", help="run virtual meters", description="Simulate prepaid meters without hardware.")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    simsub.required = True
    p = simsub.add_parser(
        "run",
        help="simulate meters for some days and print a summary",
        description="Simulate households, meters, relays and customers who top up. "
        "With no options: one meter for 30 days on the embedded demo configuration (no broker needed). "
        "With --scenario FILE: a village described in TOML (see docs/fleet.md); "
        "--meters, --days, --seed, --step and --start given explicitly override the scenario's.",
    )
    p.add_argument("--meters", type=positive_int("--meters", 100000), default=None, help="number of meters (default 1)")
    p.add_argument("--days", type=positive_int("--days", 3660), default=None, help="days to simulate (default 30)")
    p.add_argument("--seed", type=int, default=None, help="random seed: same seed, same output (default 1)")
    p.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython", help="where the meter cores run (default cpython; live mode: cpython only)")
    p.add_argument("--step", type=positive_int("--step", 86400), default=None, help="longest simulated step in seconds (default 900)")
    p.add_argument("--start", default=None, help="local start time 'YYYY-MM-DD HH:MM' (default %s)" % DEFAULT_START)
    p.add_argument("--config", metavar="FILE", help="a TOML file with the meter configuration (see README)")
    p.add_argument("--scenario", metavar="FILE", help="a TOML fleet scenario: households, customers, operators, faults, thieves (see docs/fleet.md)")
    p.add_argument(
        "--customers",
        choices=("auto", "mixed", "prompt", "waits_for_cut", "payday"),
        default="auto",
        help="how customers top up (default auto: a lone meter's customer waits for the cut, a fleet is mixed)",
    )
    p.add_argument("--feedback", action="store_true", help="wire the relay's feedback contact")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr even when it is not a terminal")
    p.add_argument("--report", metavar="DIR", help="write an HTML report, PNG plots and per-meter daily CSV into DIR")
    p.add_argument("--live", metavar="URL", help="run against a real MQTT broker, mqtt://HOST:PORT or, with TLS, mqtts://HOST:PORT (see docs/fleet.md)")
    p.add_argument("--live-seconds", type=positive_int("--live-seconds", 86400), default=None, help="live mode: how long to run, real seconds (default 30)")
    p.add_argument("--headend-workers", type=positive_int("--headend-workers", 64), default=None, help="live mode: head-end workers on the shared subscription (default 2)")
    p.add_argument("--topup-rate", type=positive_int("--topup-rate", 10000), default=None, help="live mode: top-ups vended per second (default 5)")
    p.add_argument("--ca", metavar="FILE", help="live mode, mqtts://: the CA certificate that signed the broker's certificate (PEM)")
    p.add_argument("--cert", metavar="FILE", help="live mode, mqtts://: client certificate every simulated client presents (PEM)")
    p.add_argument("--key", metavar="FILE", help="live mode, mqtts://: the client certificate's private key (PEM)")
    p.add_argument("--dlt645", metavar="tcp://HOST:PORT", help="serve one simulated meter in real time as a DL/T 645 slave on this TCP port until Ctrl-C, for a DL/T 645 master to read and control (see docs/dlt645.md)")
    p.set_defaults(handler=cmd_run)
    b = simsub.add_parser(
        "board",
        help="run the real board entry on the MicroPython unix port against a real broker",
        description="The board agent (hw.mpy.main) on the MicroPython unix port with fake pins: a constant load drives "
        "the pulse input, the relay coils drive a latching-relay model; the network and the broker are real. "
        "Logs until Ctrl-C (see docs/simulator.md).",
    )
    b.add_argument("--config", metavar="FILE", required=True, help="the board's config.json (the agent's schema)")
    b.add_argument("--data", metavar="DIR", required=True, help="the board's folder: its entry script and data/ (the durable store)")
    b.add_argument("--firmware", metavar="PATH", help="a 32-bit frozen firmware (scripts/flash.sh firmware unix32); default: the pip unix port with this checkout's agent")
    b.add_argument("--heap", help="MicroPython heap size, e.g. 256K (default 256K with --firmware, 2M on the pip port)")
    b.add_argument("--load-w", type=positive_int("--load-w", 100000), default=1000, help="the constant load in watts (default 1000)")
    b.set_defaults(handler=lambda args: board.cmd_board(args, fail))


def load_toml(path):
    """Read and check a meter configuration file; returns (config, error message)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        return None, "--config: cannot read %s: %s" % (path, exc.strerror)
    except UnicodeDecodeError:
        return None, "--config: %s is not a UTF-8 text file" % (path,)
    except tomllib.TOMLDecodeError as exc:
        return None, "--config: %s is not valid TOML: %s" % (path, exc)
    return raw, None


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.last = -1

    def __call__(self, done, total):
        width = 40
        filled = done * width // total
        pct = done * 100 // total
        if pct == self.last:
            return
        self.last = pct
        self.stream.write("\r[%s%s] %3d %% %d/%d meters" % ("#" * filled, "." * (width - filled), pct, done, total))
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


LIVE_DEFAULTS = {"live_seconds": 30, "headend_workers": 2, "topup_rate": 5}
LIVE_ONLY = ("live_seconds", "headend_workers", "topup_rate", "ca", "cert", "key")
# Options a live run cannot honour (option, its default, why): refused rather than ignored.
NOT_LIVE = (
    ("scenario", None, "live meters get no scenario's faults, operators or thieves; give their configuration with --config"),
    ("report", None, "a live run writes no report files; --json gives all its figures"),
    ("days", None, "a live run lasts --live-seconds real seconds"),
    ("step", None, "live meters run in real time"),
    ("start", None, "live meters run at the current time"),
    ("customers", "auto", "in a live run a vendor tops up random meters at --topup-rate"),
    ("feedback", False, "live meters have no relay model"),
)


def _option(dest):
    return "--" + dest.replace("_", "-")


def check_mode(args):
    """The error message for an option the chosen mode (simulated or --live) cannot honour, or None."""
    if args.live:
        for dest, default, why in NOT_LIVE:
            if getattr(args, dest) != default:
                return "%s cannot be used with --live: %s" % (_option(dest), why)
        if args.runtime == "micropython":
            return "--runtime micropython cannot be used with --live: live meters run the agent stack in this CPython process"
        return None
    for dest in LIVE_ONLY:
        if getattr(args, dest) is not None:
            return "%s is for live runs only (with --live URL)" % _option(dest)
    return None


def cmd_run(args):
    refused = check_mode(args)
    if refused:
        return fail(refused)
    base = DEFAULT_CONFIG
    scenario = None
    settings = dict(RUN_DEFAULTS)
    if args.start is not None and parse_datetime(args.start, TZ_S) is None:
        return fail("--start must be 'YYYY-MM-DD HH:MM' local time, got %r" % (args.start,))
    if args.config:
        base, error = load_toml(args.config)
        if error:
            return fail(error)
    try:
        load_config(base)
        load_config(meter_config(base, 0))
    except ConfigError as exc:
        where = args.config or "the embedded configuration"
        return fail("%s in %s" % (exc, where))
    if args.dlt645:
        from sim import dlt645_tcp

        return dlt645_tcp.cmd_serve(args, base)
    feedback = args.feedback
    if args.scenario:
        from sim import scenario as scenario_mod

        try:
            scenario = scenario_mod.load(args.scenario, base, TZ_S)
        except OSError as exc:
            return fail("--scenario: cannot read %s: %s" % (args.scenario, exc.strerror))
        except UnicodeDecodeError:
            return fail("--scenario: %s is not a UTF-8 text file" % (args.scenario,))
        except ConfigError as exc:
            return fail("scenario %s: %s" % (args.scenario, exc))
        base = scenario.config
        r = scenario.data["run"]
        settings.update(meters=r["meters"], days=r["days"], seed=r["seed"], step=r["step_s"], start=r["start"])
        feedback = feedback or r["feedback"]
    for key in RUN_DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.report:
        try:
            os.makedirs(args.report, exist_ok=True)
        except OSError as exc:
            return fail("--report: cannot create directory %s: %s" % (args.report, exc.strerror))
    progress = Progress() if args.progress or sys.stderr.isatty() else None
    if args.live:
        return _run_live(args, settings, base, progress)
    try:
        rep = run(settings["meters"], settings["days"], settings["seed"], args.runtime, settings["step"], settings["start"], base, feedback,
                  args.customers, scenario, progress)
    except ValueError as exc:
        return fail(str(exc))
    except RuntimeError as exc:
        return fail(str(exc), 1)
    daily = rep.pop("daily")
    if args.report:
        from sim import report as report_mod

        for line in report_mod.write(args.report, rep, daily):
            print(line, file=sys.stderr)
    if args.json:
        json.dump(rep, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(render(rep))
    return 0


def _run_live(args, settings, base, progress):
    from sim import live

    try:
        secure = live.parse_url(args.live)[2]
    except ValueError as exc:
        return fail("--live: %s" % exc)
    tls = None
    if secure:
        try:
            tls = live.check_tls(args.ca, args.cert, args.key)
        except ValueError as exc:
            return fail(str(exc))
    elif args.ca or args.cert or args.key:
        return fail("--ca/--cert/--key are for a TLS broker: give --live mqtts://HOST:PORT, got %s" % args.live)
    opts = dict(LIVE_DEFAULTS)
    for dest in LIVE_DEFAULTS:
        if getattr(args, dest) is not None:
            opts[dest] = getattr(args, dest)
    try:
        rep = live.run_live(args.live, settings["meters"], opts["live_seconds"], settings["seed"], base, opts["headend_workers"],
                            topup_rate=opts["topup_rate"], progress=progress, tls=tls)
    except ValueError as exc:
        return fail("--live: %s" % exc)
    except (OSError, RuntimeError) as exc:
        return fail("live run failed: %s" % exc, 1)
    if args.json:
        json.dump(rep, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(live.render(rep))
    return 0
