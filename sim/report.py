"""Reports of a simulator run: per-meter daily CSV, PNG plots, one HTML page.

``write(directory, rep, daily)`` writes

- ``daily.csv``: one row per meter and day (``sim.runner.DAILY_FIELDS``);
- ``meters.csv``: one row per meter (the JSON report's figures);
- ``suspects.csv``: the anti-theft analytics' ranked list (with a scenario);
- ``*.png``: fleet consumption and faults, balances, relay timeline,
  latencies, suspects (``figures``), dated, with the scenario's operator
  actions and broker outages marked (needs matplotlib: ``pip install -e
  '.[report]'``; without it the PNGs are skipped with a message and the
  rest is still written);
- ``report.html``: a self-contained page (plots embedded as data URIs).

Returns lines to show the user (what was written, what was skipped).
"""

import base64
import csv
import datetime
import html
import os

from sim.runner import DAILY_FIELDS, DAY_S, RESTORE_TARGET_S, TZ_S, duration, kwh, money, pct, rate, restore_figures, silent_detail, silent_relay_failure

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
        w.writerow(cols + ("silent_relay_failure", "theft"))
        for r in rep["meters"]:
            w.writerow([r[c] for c in cols] + [int(silent_relay_failure(r)), (r.get("truth") or {}).get("theft") or ""])
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
    """Per day: total kWh, meters cut at some point, median and 10th-percentile balance (CNY)."""
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


def local_time(wall):
    """A wall second as a naive local datetime (the simulator's time zone), for date axes."""
    return EPOCH + datetime.timedelta(seconds=wall + TZ_S)


def day_start(rep, day):
    """Local midnight that begins day ``day`` of the run (``DAILY_FIELDS`` "day")."""
    first = (rep["start"] + TZ_S) // DAY_S
    return EPOCH + datetime.timedelta(days=first + day)


TIMELINE_LIMIT = 40  # rows of the relay timeline: more are unreadable


def timeline_meters(rep, daily, limit=TIMELINE_LIMIT):
    """The meters worth a row in the relay timeline, most telling first.

    Returns ``(rows, left_out)``: rows are ``(meter id, reasons)``; a meter
    with a silent relay failure comes first, then relay faults, suspects and
    thieves, then the meters cut longest; meters never cut and with nothing
    to tell are left out.
    """
    reasons = {}  # id -> [(rank, text)]

    def add(mid, rank, text):
        reasons.setdefault(mid, []).append((rank, text))

    for mid in rep.get("silent_relay_failures", []):
        add(mid, 0, "silent relay failure")
    for r in rep["meters"]:
        faults = sorted(set(detail for _, what, detail in r.get("faults", []) if what == "relay fault"))
        if faults:
            add(r["id"], 1, "relay " + "/".join(faults))
    th = rep.get("theft")
    if th:
        for s in th["suspects"]:
            if s["suspect"]:
                add(s["id"], 2, "suspect %d%s" % (s["score"], ", " + s["thief"] if s["thief"] else ""))
        for r in rep["meters"]:
            theft = (r.get("truth") or {}).get("theft")
            if theft and r["truth"]["stolen_wh"] and r["id"] not in reasons:
                add(r["id"], 3, "missed thief, " + theft)
    cut_s = dict((mid, sum(row[3] for row in daily[mid])) for mid in daily)
    for mid in cut_s:
        if mid not in reasons and cut_s[mid]:
            add(mid, 4, "cut %s" % duration(cut_s[mid]))
    order = sorted(reasons, key=lambda mid: (min(reasons[mid])[0], -cut_s.get(mid, 0), mid))
    rows = [(mid, "; ".join(text for _, text in sorted(reasons[mid]))) for mid in order]
    return rows[:limit], len(rows) - len(rows[:limit])


def _markers(ax, rep, numbers=True):
    """Operators' actions (numbered dashed lines) and broker outages (shaded) on a date axis."""
    for a, b in rep.get("broker_outages", []):
        ax.axvspan(local_time(a), local_time(b), color="tab:orange", alpha=0.35, linewidth=0)
    for k, op in enumerate(rep.get("operator_actions", []), 1):
        at = local_time(op["wall"])
        ax.axvline(at, color="tab:purple", linestyle="--", linewidth=1)
        if numbers:
            ax.annotate(str(k), (at, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10), textcoords="offset points", color="tab:purple", fontsize=8, fontweight="bold")


def _marker_legend(rep):
    """Legend handles for ``_markers``: one per operator action, one for broker outages."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    for k, op in enumerate(rep.get("operator_actions", []), 1):
        label = op["label"] if op["at"] in op["label"] else "%s (%s)" % (op["label"], op["at"])
        handles.append(Line2D([], [], color="tab:purple", linestyle="--", linewidth=1, label="%d: %s" % (k, label)))
    if rep.get("broker_outages"):
        handles.append(Patch(color="tab:orange", alpha=0.35, label="broker outage"))
    return handles


def _legend_below(ax, handles, ncol=2):
    """The legend under the plot, below the dates, where it hides no data."""
    # borderaxespad is in legend font sizes (7 pt): 5 clears the tick labels and the year.
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0), borderaxespad=5, ncol=ncol, frameon=False)


def _date_axis(ax, rep):
    """Dates on the x axis over the whole run."""
    import matplotlib.dates as mdates

    ax.set_xlim(day_start(rep, 0), day_start(rep, rep["days"]))
    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, show_offset=False))
    first, last = day_start(rep, 0).year, day_start(rep, rep["days"] - 1).year
    ax.set_xlabel("%d" % first if first == last else "%d-%d" % (first, last), fontsize=8)


def figures(rep, daily):
    """The report's plots as matplotlib figures, by file name (the caller saves and closes them)."""
    import matplotlib.pyplot as plt

    figs = {}
    series = _fleet_series(daily)
    noon = [day_start(rep, s[0]) + HALF_DAY for s in series]
    markers = _marker_legend(rep)

    # Consumption and cuts, with the fleet's faults per day below.
    fig, (ax, axf) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    energy = ax.plot(noon, [s[1] for s in series], color="tab:blue", label="fleet energy (left axis)")[0]
    ax.set_ylabel("fleet energy, kWh/day", color="tab:blue")
    ax.set_ylim(0, max([s[1] for s in series] + [1.0]) * 1.1)
    axc = ax.twinx()
    cuts = axc.bar(noon, [s[2] for s in series], width=0.8, color="tab:red", alpha=0.3, label="meters cut that day (right axis)")
    axc.set_ylabel("meters cut that day", color="tab:red")
    axc.set_ylim(0, max([s[2] for s in series] + [1]) * 1.15)
    # The energy line in front of the bars.
    ax.set_zorder(axc.get_zorder() + 1)
    ax.patch.set_visible(False)
    _markers(ax, rep)
    ax.set_title("Consumption and cuts")
    power, relay = _faults_per_day(rep, len(series))
    pc = axf.bar(noon, power, width=0.8, color="tab:blue", alpha=0.6, label="power cuts starting that day (meters)")
    rf = axf.bar(noon, relay, width=0.8, bottom=power, color="tab:red", label="relay faults starting that day (meters)")
    axf.set_ylim(bottom=0)
    axf.set_ylabel("faults\nstarting", fontsize=8)
    _legend_below(axf, [energy, cuts, pc, rf] + markers)
    _markers(axf, rep, numbers=False)
    _date_axis(axf, rep)
    fig.tight_layout()
    figs["consumption.png"] = fig

    fig, ax = plt.subplots(figsize=(9, 3.8))
    ends = [day_start(rep, s[0] + 1) for s in series]
    ax.plot(ends, [s[3] for s in series], label="median")
    ax.plot(ends, [s[4] for s in series], label="10th percentile")
    ax.axhline(0, color="black", linewidth=0.5)
    _markers(ax, rep)
    _date_axis(ax, rep)
    ax.set_ylabel("balance at midnight, CNY")
    _legend_below(ax, ax.get_lines()[:2] + markers)
    ax.set_title("Balances")
    fig.tight_layout()
    figs["balances.png"] = fig

    rows, left_out = timeline_meters(rep, daily)
    if rows:
        figs["relay_timeline.png"] = _timeline(rep, daily, rows, left_out, markers)

    delays = sorted(d for r in rep["meters"] for d in r["restore_delays_s"])
    alarm = sorted(d for r in rep["meters"] for d in r["alarm_topup_delays_s"])
    if delays or alarm:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        tot = rep["totals"]
        _log_hist(axes[0], alarm, tot["alarm_topup_p50_s"], "tab:orange", "alarm 1 -> top-up")
        _log_hist(axes[1], delays, tot["restore_p50_s"], "tab:green", "top-up -> supply restored", target=RESTORE_TARGET_S, never=tot["unrestored_topups"])
        fig.tight_layout()
        figs["latencies.png"] = fig

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
        figs["suspects.png"] = fig
    return figs


HALF_DAY = datetime.timedelta(hours=12)
EPOCH = datetime.datetime(1970, 1, 1)


def _faults_per_day(rep, days):
    """Power cuts and relay faults starting on each day of the run, over the fleet."""
    power = [0] * days
    relay = [0] * days
    first = (rep["start"] + TZ_S) // DAY_S
    for r in rep["meters"]:
        for wall, what, _ in r.get("faults", []):
            day = (wall + TZ_S) // DAY_S - first
            if 0 <= day < days:
                if what == "power cut":
                    power[day] += 1
                elif what == "relay fault":
                    relay[day] += 1
    return power, relay


def _timeline(rep, daily, rows, left_out, markers):
    """One row per chosen meter, dark where its supply was cut, with its faults marked."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    days = rep["days"]
    grid = []
    for mid, _ in rows:
        line = [WHITE] * days
        for r in daily.get(mid, []):
            if 0 <= r[0] < days:
                line[r[0]] = _cell(r)
        grid.append(line)
    fig, ax = plt.subplots(figsize=(10, 2.6 + 0.2 * len(rows)))
    x0, x1 = mdates.date2num(day_start(rep, 0)), mdates.date2num(day_start(rep, days))
    ax.imshow(grid, aspect="auto", interpolation="nearest", extent=(x0, x1, len(rows) - 0.5, -0.5))
    row_of = dict((mid, k) for k, (mid, _) in enumerate(rows))
    by_id = dict((r["id"], r) for r in rep["meters"])
    style = {"power cut": ("o", "tab:blue"), "relay fault": ("X", "tab:red"), "relay repaired": ("P", "tab:green")}
    for mid, k in row_of.items():
        for wall, what, _ in by_id[mid].get("faults", []):
            m, c = style[what]
            ax.plot(local_time(wall), k, marker=m, color=c, markersize=5, linestyle="none")
    _markers(ax, rep)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["%s  %s" % (mid, why) for mid, why in rows], fontsize=7)
    _date_axis(ax, rep)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    title = "Relay timeline: %d meter%s cut, faulty or suspected (grey: reported cut)" % (len(rows), "" if len(rows) == 1 else "s")
    if left_out:
        title += " (%d more in meters.csv)" % left_out
    ax.set_title(title, fontsize=10)
    handles = [
        Patch(color="black", label="cut all day"),
        Patch(color="0.6", label="cut part of the day"),
        Patch(color=SILENT, label="dark, no cut reported"),
        Line2D([], [], marker="o", color="tab:blue", linestyle="none", label="power cut"),
        Line2D([], [], marker="X", color="tab:red", linestyle="none", label="relay fault"),
        Line2D([], [], marker="P", color="tab:green", linestyle="none", label="relay repaired"),
    ] + markers
    _legend_below(ax, handles, ncol=3)
    fig.tight_layout()
    return fig


WHITE = (1.0, 1.0, 1.0)
SILENT = (0.85, 0.1, 0.1)


def _cell(row):
    """A day's colour in the relay timeline: grey as the share of the day reported cut,
    red where the contact was open with no cut reported (ground truth)."""
    cut = min(1.0, row[3] / float(DAY_S))
    silent = min(1.0, max(0, row[10] - row[3]) / float(DAY_S))
    if silent * DAY_S >= 600:  # ten minutes: a relay that lagged a cut by a step is no failure
        k = max(silent, 0.4)
        return tuple(1.0 - k * (1.0 - c) for c in SILENT)
    return (1.0 - cut, 1.0 - cut, 1.0 - cut)


HUMAN_TICKS = ((1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (DAY_S, "1 d"), (10 * DAY_S, "10 d"), (100 * DAY_S, "100 d"))
# More ticks for a narrow axis (up to three decades), where the ones above leave one or two.
DENSE_TICKS = tuple(sorted(HUMAN_TICKS + ((30, "30 s"), (300, "5 min"), (6 * 3600, "6 h"), (3 * DAY_S, "3 d"), (30 * DAY_S, "30 d"))))


def log_bins(values, n=30, target=None):
    """Bin edges spaced evenly on a log scale over every value (sorted seconds),
    from the tick at or below the smallest (at least 1 s) to just above the
    largest (or above ``target``, so the target is on the axis).

    A latency of 0 s (the relay closed with the top-up) falls in the first bin."""
    lo = 1
    for t, _ in HUMAN_TICKS:
        if t <= values[0] and (target is None or t <= target):
            lo = t
    hi = max(values[-1], 2 * lo, 2 * (target or 0)) * 1.05
    return [lo * (hi / lo) ** (k / float(n)) for k in range(n + 1)]


def _log_hist(ax, values, median, color, what, target=None, never=0):
    """The whole distribution of ``values`` (sorted seconds) on a log axis: nothing capped."""
    ax.set_xlabel("%s (log scale)" % what)
    ax.set_ylabel("count")
    if not values:
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center")
        return
    bins = log_bins(values, target=target)
    counts = ax.hist([max(v, bins[0]) for v in values], bins=bins, color=color)[0]
    ax.set_xscale("log")
    if max(counts) > 50:
        ax.set_yscale("log")  # the tail's single cases stay visible beside a tall bar
    else:
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(bins[0], bins[-1])
    ticks = DENSE_TICKS if bins[-1] <= 1000 * bins[0] else HUMAN_TICKS
    shown = [t for t in ticks if bins[0] <= t[0] <= bins[-1]]
    ax.set_xticks([t[0] for t in shown])
    # The first bin also holds what was faster (a relay closed with the top-up: 0 s).
    ax.set_xticklabels([("<= " if values[0] < bins[0] else "") + shown[0][1]] + [t[1] for t in shown[1:]], fontsize=8)
    ax.minorticks_off()
    worst = max(values[-1], bins[0])
    ax.axvline(worst, color="tab:red", linewidth=1)
    # The label on the side of the line with room for it.
    right_half = worst * worst > bins[0] * bins[-1]
    ax.annotate("worst %s" % duration(values[-1]), (worst, 1.0), xycoords=("data", "axes fraction"), xytext=(-3 if right_half else 3, -12),
                textcoords="offset points", ha="right" if right_half else "left", color="tab:red", fontsize=8)
    if target is not None:
        ax.axvline(target, color="black", linestyle=":", linewidth=1)
        ax.annotate("target %s" % duration(target), (target, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -24), textcoords="offset points", fontsize=8)
    ax.set_title("%s: %d, median %s%s" % (what, len(values), duration(median), ", %d never" % never if never else ""), fontsize=9)


def _plots(directory, rep, daily):
    import matplotlib.pyplot as plt

    names = []
    for name, fig in figures(rep, daily).items():
        fig.savefig(os.path.join(directory, name), dpi=90, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names


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
        ("top-up -> supply restored", restore_figures(tot)),
        ("power cuts survived", str(tot["power_cuts"])),
        ("silent relay failures (relay open, should supply)", str(tot["silent_relay_failures"])),
    ]
    th = rep.get("theft")
    if th:
        rows.append(("theft: planted / stole / flagged / caught", "%d / %d / %d / %d" % (th["planted_all"], th["planted"], th["flagged"], th["true_positives"])))
        rows.append(("theft: precision / recall", "%s / %s" % (pct(th["precision_pm"]), pct(th["recall_pm"]))))
    for k, v in rows:
        parts.append("<tr><th class='l'>%s</th><td>%s</td></tr>" % (e(k), e(v)))
    parts.append("</table>")
    silent = rep.get("silent_relay_failures")
    if silent:
        by_id = dict((r["id"], r) for r in rep["meters"])
        parts.append("<h2 class='thief'>Silent relay failures</h2><p>These meters end the run with the relay open "
                     "although their core wants the supply on: the customer has credit and is in the dark, "
                     "and without a feedback contact the meter does not know.</p>"
                     "<table><tr><th>meter</th><th>why it should supply</th><th>balance</th></tr>")
        for mid in silent:
            r = by_id[mid]
            parts.append("<tr><td>%s</td><td class='l'>%s</td><td>%s</td></tr>" % (e(mid), e(silent_detail(r)), money(r["balance_end"])))
        parts.append("</table>")
    if rep.get("operator_actions"):
        parts.append("<h2>Operators' actions</h2><table><tr><th>action</th><th>at</th><th>sent</th><th>accepted</th></tr>")
        for op in rep["operator_actions"]:
            parts.append("<tr><td class='l'>%s</td><td>%s</td><td>%d</td><td>%d</td></tr>" % (e(op["label"]), e(op["at"]), op["sent"], op["accepted"]))
        parts.append("</table>")
    if rep.get("broker_outages"):
        from agent.calendar import format_wall

        parts.append("<p>Broker outages (top-ups and commands held until the end): %s.</p>" % ", ".join(
            "%s to %s" % (format_wall(a, TZ_S)[:16], format_wall(b, TZ_S)[:16]) for a, b in rep["broker_outages"]))
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
