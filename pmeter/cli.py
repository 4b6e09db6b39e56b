"""``pmeter``: one command, with a subcommand per job.

Each area registers its own subcommands (``register(subparsers)``), and
every handler returns an exit code: 0 success, 1 a failure at run time,
2 bad input (arguments, configuration), with a message naming what was
wrong.
"""

import argparse
import importlib
import sys

# Modules that add subcommands, in the order --help lists them.
REGISTRARS = ("sim.cli", "headend.cli", "headend.mqtt_cli", "headend.service", "headend.pki", "pmeter.agent_cli")
# Commands the meter itself runs get a parser from their own module only: the
# agent process never imports head-end code, and a Pi bundle (scripts/flash.sh
# pi) ships no headend/ package.
METER_COMMANDS = {"agent": "pmeter.agent_cli", "diag": "pmeter.agent_cli"}


def build_parser(registrars=REGISTRARS):
    """The argument parser with the commands of ``registrars``.

    A registrar whose package is not installed (a Pi bundle has no
    ``headend``) is left out and named in the help.
    """
    parser = argparse.ArgumentParser(
        prog="pmeter",
        description="Prepaid electricity meter agent, simulator and head-end tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    missing = []
    for name in registrars:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name.partition(".")[0]:
                raise  # a broken install, not a package left out on purpose
            missing.append(e.name)
            continue
        module.register(sub)
    if missing:
        parser.epilog = "Not installed here: the %s commands." % ", ".join(sorted(set(missing)))
    return parser


def main(argv=None):
    """Run ``pmeter`` with ``argv``; returns the exit code."""
    if argv is None:
        argv = sys.argv[1:]
    meter = METER_COMMANDS.get(argv[0]) if argv else None
    parser = build_parser((meter,) if meter else REGISTRARS)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def positive_int(name, limit=None):
    """An argparse type: a whole number >= 1 (and <= limit), naming the option on error."""

    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be a whole number, got %r" % (name, text))
        if value < 1 or (limit is not None and value > limit):
            raise argparse.ArgumentTypeError("%s must be between 1 and %s, got %d" % (name, limit or "any", value))
        return value

    return convert


def fail(message, code=2):
    """Print an error for the user and return the exit code."""
    print("pmeter: %s" % message, file=sys.stderr)
    return code
