"""One command to many meters, from a CSV of meter ids.

The CSV has a header with a ``meter_id`` column (other columns ignored), or
no header and the meter id in the first column.  Each row gets a result:
``issued`` with its sequence and token, or ``rejected`` with the reason;
a bad row never stops the batch.
"""

import csv
import io

from . import check_meter_id, vend


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


def run(ledger, master, text, name, args, wall, ttl=vend.DEFAULT_TTL, operator=None):
    """Issue command ``name`` to every meter in CSV ``text``: list of result dicts."""
    results = []
    seen = set()
    for line, meter_id in read_meter_ids(text):
        row = {"line": line, "meter_id": meter_id, "status": "rejected", "seq": None, "token": None, "error": None}
        try:
            check_meter_id(meter_id)
            if meter_id in seen:
                raise ValueError("duplicate meter id in this batch")
            seq, tok = vend.command(ledger, master, meter_id, name, args, wall, ttl, operator)
        except ValueError as e:
            row["error"] = str(e)
        else:
            seen.add(meter_id)
            row.update(status="issued", seq=seq, token=tok.hex())
        results.append(row)
    return results
