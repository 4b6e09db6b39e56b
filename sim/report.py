"""Reports of a simulator run: per-meter daily CSV, PNG plots, one HTML page.

``write(directory, rep, daily)`` writes

- ``daily.csv``: one row per meter and day (``sim.runner.DAILY_FIELDS``);
- ``meters.csv``: one row per meter (the JSON report's figures);
- ``suspects.csv``: the anti-theft analytics' ranked list (with a scenario);
- ``*.png``: fleet consumption, balances, relay timeline, latencies
  (needs matplotlib: ``pip install -e '.[report]'``; without it the PNGs
  are skipped with a message and the rest is still written);
- ``report.html``: a self-contained page (plots embedded as data URIs).

Returns lines to show the user (what was written, what was skipped).
"""

import base64
import csv
import html
import os

from sim.runner import DAILY_FIELDS, TZ_S, duration, kwh, money, pct, rate

MONEY_SCALE = 10000


def write(directory, rep, daily):
    """Write the report files into ``directory``; returns messages for the user."""
    notes = []
    ids = sorted(daily)
    with open(os.path.join(directory, "daily.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("meter",) + DAILY_FIELDS)
        for mid in ids:
            for row in daily[mid]:
                w.writerow([mid] + list(row))
    cols = ("id", "energy_wh", "charged", "credited", "balance_start", "balance_end", "cuts", "reconnects", "alarms", "topups", "relay", "relay_state", "power_cuts")
    with open(os.path.join(directory, "meters.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + ("theft",))
        for r in rep["meters"]:
            w.writerow([r[c] for c in cols] + [(r.get("truth") or {}).get("theft") or ""])
    files = ["daily.csv", "meters.csv"]
    th = rep.get("theft")
    if th:
        with open(os.path.join(directory, "suspects.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("rank", "meter", "score", "suspect", "planted_theft", "reasons"))
            for k, s in enumerate(th["suspects"], 1):
                w.writerow((k, s["id"], s["score"], int(s["suspect"]), s["thief"] or "", "; ".join(s["reasons"])))
        files.append("suspects.csv")
    pngs = []
    try:
        import matplotlib
    except ImportError:
        notes.append("matplotlib is not installed: PNG plots skipped (pip install -e '.[report]' adds them)")
    else:
        matplotlib.use("Agg")
        pngs = _plots(directory, rep, daily)
        files.extend(pngs)
    with open(os.path.join(directory, "report.html"), "w") as f:
        f.write(_html(directory, rep, pngs))
    files.append("report.html")
    notes.insert(0, "report written to %s: %s" % (directory, ", ".join(files)))
    return notes


def _fleet_series(daily):
    """Per day: total kWh, meters cut at some point, median balance (CNY)."""
    days = {}
    for mid in daily:
        for row in daily[mid]:
            d = days.setdefault(row[0], [0, 0, []])
            d[0] += row[1]
            if row[3]:
                d[1] += 1
            d[2].append(row[8])
    out = []
    for day in sorted(days):
        e, cut, bal = days[day]
        bal.sort()
        out.append((day, e / 1000.0, cut, bal[len(bal) // 2] / MONEY_SCALE, bal[len(bal) // 10] / MONEY_SCALE))
    return out


def _plots(directory, rep, daily):
    import matplotlib.pyplot as plt

    names = []
    series = _fleet_series(daily)
    x = [s[0] for s in series]

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(x, [s[1] for s in series], color="tab:blue")
    ax.set_xlabel("day")
    ax.set_ylabel("fleet energy, kWh/day")
    ax2 = ax.twinx()
    ax2.bar(x, [s[2] for s in series], color="tab:red", alpha=0.3)
    ax2.set_ylabel("meters cut that day", color="tab:red")
    ax.set_title("Consumption and cuts")
    fig.tight_layout()
    names.append(_save(fig, directory, "consumption.png"))

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(x, [s[3] for s in series], label="median")
    ax.plot(x, [s[4] for s in series], label="10th percentile")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("day")
    ax.set_ylabel("balance at midnight, CNY")
    ax.legend()
    ax.set_title("Balances")
    fig.tight_layout()
    names.append(_save(fig, directory, "balances.png"))

    # Relay timeline: one line per meter (up to 100), dark where the supply was cut.
    ids = sorted(daily)[:100]
    if ids:
        grid = []
        for mid in ids:
            grid.append([min(1.0, r[3] / 86400.0) for r in daily[mid]])
        width = max(len(g) for g in grid)
        grid = [g + [0.0] * (width - len(g)) for g in grid]
        fig, ax = plt.subplots(figsize=(9, max(2.5, len(ids) * 0.06 + 1)))
        ax.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel("day")
        ax.set_ylabel("meter (first %d)" % len(ids))
        ax.set_title("Relay timeline: share of each day the supply was cut")
        fig.tight_layout()
        names.append(_save(fig, directory, "relay_timeline.png"))

    delays = sorted(d for r in rep["meters"] for d in r["restore_delays_s"])
    alarm = sorted(d for r in rep["meters"] for d in r["alarm_topup_delays_s"])
    if delays or alarm:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        if alarm:
            axes[0].hist([a / 3600.0 for a in alarm], bins=40, color="tab:orange")
        axes[0].set_xlabel("alarm 1 -> top-up, hours")
        axes[0].set_ylabel("top-ups")
        if delays:
            axes[1].hist([min(d, 3600) for d in delays], bins=40, color="tab:green")
        axes[1].set_xlabel("top-up -> supply restored, s (capped at 3600)")
        fig.tight_layout()
        names.append(_save(fig, directory, "latencies.png"))

    th = rep.get("theft")
    if th and th["suspects"]:
        top = th["suspects"][:25]
        fig, ax = plt.subplots(figsize=(9, 0.25 * len(top) + 1.2))
        ax.barh(range(len(top)), [s["score"] for s in top], color=["tab:red" if s["thief"] else "tab:gray" for s in top])
        ax.set_yticks(range(len(top)))
        ax.set_yticklabels([s["id"] for s in top], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("suspicion score (red: planted thief)")
        ax.set_title("Anti-theft suspects")
        fig.tight_layout()
        names.append(_save(fig, directory, "suspects.png"))
    return names


def _save(fig, directory, name):
    import matplotlib.pyplot as plt

    fig.savefig(os.path.join(directory, name), dpi=90)
    plt.close(fig)
    return name


def _html(directory, rep, pngs):
    tot = rep["totals"]
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Simulator report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#eee}td.l{text-align:left}img{max-width:100%}.thief{color:#b00;font-weight:bold}</style></head><body>",
        "<h1>Simulator report%s</h1>" % (": " + e(str(rep["scenario"])) if rep.get("scenario") else ""),
        "<p>%d meters, %d days, seed %d, %s core.</p>" % (tot["meters"], rep["days"], rep["seed"], e(rep["runtime"])),
        "<h2>Summary</h2><table>",
    ]
    rows = [
        ("energy", "%s kWh" % kwh(tot["energy_wh"])),
        ("revenue (charged)", money(tot["charged"])),
        ("credited (top-ups)", money(tot["credited"])),
        ("cuts / reconnections", "%d / %d" % (tot["cuts"], tot["reconnects"])),
        ("remote cuts done", rate(tot["remote_cuts_done"], tot["remote_cuts"])),
        ("remote reconnections done", rate(tot["remote_reconnects_done"], tot["remote_reconnects"])),
        ("alarm 1 -> top-up, median / p90", "%s / %s" % (duration(tot["alarm_topup_p50_s"]), duration(tot["alarm_topup_p90_s"]))),
        ("top-up -> restore, p50 / p90 / p99 / worst", "%s / %s / %s / %s" % (duration(tot["restore_p50_s"]), duration(tot["restore_p90_s"]), duration(tot["restore_p99_s"]), duration(tot["restore_max_s"]))),
        ("power cuts survived", str(tot["power_cuts"])),
    ]
    th = rep.get("theft")
    if th:
        rows.append(("theft: planted / stole / flagged / caught", "%d / %d / %d / %d" % (th["planted_all"], th["planted"], th["flagged"], th["true_positives"])))
        rows.append(("theft: precision / recall", "%s / %s" % (pct(th["precision_pm"]), pct(th["recall_pm"]))))
    for k, v in rows:
        parts.append("<tr><th class='l'>%s</th><td>%s</td></tr>" % (e(k), e(v)))
    parts.append("</table>")
    if rep.get("operator_actions"):
        parts.append("<h2>Operators' actions</h2><table><tr><th>action</th><th>at</th><th>sent</th><th>accepted</th></tr>")
        for op in rep["operator_actions"]:
            parts.append("<tr><td class='l'>%s</td><td>%s</td><td>%d</td><td>%d</td></tr>" % (e(op["label"]), e(op["at"]), op["sent"], op["accepted"]))
        parts.append("</table>")
    for name in pngs:
        with open(os.path.join(directory, name), "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append("<h2>%s</h2><img alt='%s' src='data:image/png;base64,%s'>" % (e(name[:-4].replace("_", " ")), e(name), data))
    if not pngs:
        parts.append("<p><em>No plots: matplotlib is not installed (pip install -e '.[report]').</em></p>")
    if th:
        parts.append("<h2>Suspects (ranked)</h2><table><tr><th>#</th><th>meter</th><th>score</th><th>planted</th><th>reasons</th></tr>")
        for k, s in enumerate(th["suspects"][:50], 1):
            cls = " class='thief'" if s["thief"] else ""
            parts.append("<tr><td>%d</td><td%s>%s</td><td>%d%s</td><td>%s</td><td class='l'>%s</td></tr>" % (k, cls, e(s["id"]), s["score"], "" if s["suspect"] else " (below threshold)", e(s["thief"] or ""), e("; ".join(s["reasons"]))))
        parts.append("</table>")
    parts.append("<h2>Meters</h2><table><tr><th>meter</th><th>kWh</th><th>charged</th><th>credited</th><th>balance</th><th>cuts</th><th>reconn.</th><th>relay</th></tr>")
    for r in rep["meters"][:500]:
        parts.append(
            "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%s</td></tr>"
            % (e(r["id"]), kwh(r["energy_wh"]), money(r["charged"]), money(r["credited"]), money(r["balance_end"]), r["cuts"], r["reconnects"], e(r["relay"]))
        )
    parts.append("</table>")
    if len(rep["meters"]) > 500:
        parts.append("<p>First 500 meters shown; all are in meters.csv.</p>")
    if rep.get("timeline"):
        from agent.calendar import format_wall

        parts.append("<h2>Timeline</h2><table>")
        for w, what, detail in rep["timeline"]:
            parts.append("<tr><td>%s</td><td class='l'>%s</td><td class='l'>%s</td></tr>" % (format_wall(w, TZ_S)[:16], e(what), e(detail)))
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
