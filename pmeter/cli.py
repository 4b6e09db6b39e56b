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


def build_parser():
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="pmeter",
        description="Prepaid electricity meter agent, simulator and head-end tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in REGISTRARS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    """Run ``pmeter`` with ``argv``; returns the exit code."""
    parser = build_parser()
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
