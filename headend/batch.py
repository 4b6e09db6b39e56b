"""One command to many meters, from a CSV of meter ids.

The CSV has a header with a ``meter_id`` column (other columns ignored), or
no header and the meter id in the first column.  Everything is checked
before anything is issued (``plan``): every id is 12 digits and appears
once, and the command and its arguments pass the meter core's own rules
(``check_command`` runs them through a real ``agent.meter.Meter``, so the
head-end and the meters can never disagree about what is well formed).
``pmeter batch`` then issues, publishes and collects acknowledgements.
"""

import csv
import io

from agent import results

from . import check_meter_id, vend

PROBE_METER = "000000000000"


def read_meter_ids(text):
    """Meter ids from CSV text: [(line number, raw id)]."""
    rows = list(csv.reader(io.StringIO(text)))
    out = []
    start = 0
    col = 0
    if rows and rows[0] and "meter_id" in [c.strip() for c in rows[0]]:
        col = [c.strip() for c in rows[0]].index("meter_id")
        start = 1
    for i in range(start, len(rows)):
        row = rows[i]
        if not row or not "".join(row).strip():
            continue
        out.append((i + 1, row[col].strip() if col < len(row) else ""))
    return out


def plan(text):
    """``[(line, meter_id)]`` of CSV ``text``; ValueError naming the first bad line."""
    return check_ids(read_meter_ids(text))


def check_ids(rows):
    """``rows`` (``[(line, meter_id)]``) if every id is 12 digits and appears once; ValueError naming the line."""
    if not rows:
        raise ValueError("no meter ids in the file")
    seen = {}
    for line, meter_id in rows:
        try:
            check_meter_id(meter_id)
        except ValueError as e:
            raise ValueError("line %d: %s" % (line, e))
        if meter_id in seen:
            raise ValueError("line %d: meter %s is already on line %d" % (line, meter_id, seen[meter_id]))
        seen[meter_id] = line
    return rows


def check_command(name, args):
    """None if the meter core would take command ``name`` with ``args``, else why not.

    The arguments go through a fresh core (``Meter.handle(Command)``): a
    ``bad_argument`` or ``unknown_command`` answer there is the reason.  The
    probe's limits leave every single alarm value possible, so ``set_limits``
    is refused here only for rules that hold on every meter.
    """
    if name not in vend.COMMANDS:
        return "unknown command %r (known: %s)" % (name, ", ".join(vend.COMMANDS))
    from agent.events import Ack, Boot, Command
    from agent.meter import Meter, load_config

    meter = Meter(load_config({"meter": {"id": PROBE_METER}}))
    wall = 1767225600  # any valid time: no command's rules depend on it
    meter.handle(Boot(wall, 0))
    limits = dict(meter.account.limits)
    limits.update(alarm1=1 << 40, alarm2=0)
    meter.account.limits = limits
    code = None
    for action in meter.handle(Command(name, dict(args), "probe", wall, 1000)):
        if isinstance(action, Ack):
            code = action.code
    if code in (results.BAD_ARGUMENT, results.UNKNOWN_COMMAND):
        return "the meter answers %s to %s with %s" % (code, name, _show(args))
    return None


def _show(args):
    if not args:
        return "no arguments"
    return ", ".join("%s=%r" % (k, args[k]) for k in sorted(args))
