"""``pmeter sim ...``: run the simulator."""

import json
import sys

from agent.config import ConfigError
from agent.meter import load_config
from pmeter.cli import fail, positive_int
from sim.runner import DEFAULT_CONFIG, DEFAULT_START, meter_config, render, run


def register(sub):
    """Add the ``sim`` subcommands."""
    sim = sub.add_parser("sim", help="run virtual meters", description="Simulate prepaid meters without hardware.")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    simsub.required = True
    p = simsub.add_parser(
        "run",
        help="simulate meters for some days and print a summary",
        description="Simulate households, meters, relays and customers who top up. "
        "With no options: one meter for 30 days on the embedded demo configuration (no broker needed).",
    )
    p.add_argument("--meters", type=positive_int("--meters", 100000), default=1, help="number of meters (default 1)")
    p.add_argument("--days", type=positive_int("--days", 3660), default=30, help="days to simulate (default 30)")
    p.add_argument("--seed", type=int, default=1, help="random seed: same seed, same output (default 1)")
    p.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython", help="where the meter cores run (default cpython)")
    p.add_argument("--step", type=positive_int("--step", 86400), default=900, help="longest simulated step in seconds (default 900)")
    p.add_argument("--start", default=DEFAULT_START, help="local start time 'YYYY-MM-DD HH:MM' (default %(default)s)")
    p.add_argument("--config", metavar="FILE", help="a TOML file with the meter configuration (see README)")
    p.add_argument(
        "--customers",
        choices=("auto", "mixed", "prompt", "waits_for_cut", "payday"),
        default="auto",
        help="how customers top up (default auto: a lone meter's customer waits for the cut, a fleet is mixed)",
    )
    p.add_argument("--feedback", action="store_true", help="wire the relay's feedback contact")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_run)


def load_toml(path):
    """Read and check a meter configuration file; returns (config, error message)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        return None, "cannot read config file %s: %s" % (path, exc.strerror)
    except tomllib.TOMLDecodeError as exc:
        return None, "config file %s is not valid TOML: %s" % (path, exc)
    return raw, None


def cmd_run(args):
    base = DEFAULT_CONFIG
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
    try:
        rep = run(args.meters, args.days, args.seed, args.runtime, args.step, args.start, base, args.feedback, args.customers)
    except ValueError as exc:
        return fail(str(exc))
    except RuntimeError as exc:
        return fail(str(exc), 1)
    if args.json:
        json.dump(rep, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(render(rep))
    return 0
