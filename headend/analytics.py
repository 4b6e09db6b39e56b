"""Anti-theft analytics on the head-end: a ranked list of suspect meters.

Input: per meter, the daily series the head-end collects anyway (daily
freezes, trip/close events, power-down records, cover-open and
plausibility events, and the host meter's register read over DL/T 645),
as rows of ``FIELDS``.  Output: suspects with a score and the reasons,
highest score first.

The rules are those of collection terminals (see
``shared/reference/cost-control.md``, "Anti-theft rules"):

==================  =====================================================  =====
rule                signal                                                 score
==================  =====================================================  =====
reading_down        the register went down                                 100
cut_consumption     energy registered while the supply should be cut       80+
                    (more than 0.1 kWh: a bypass around the relay)
meter_stopped       expected energy (the meter's own average power x       90
                    time) above 0.1 kWh for 2+ whole days while the
                    register does not move
energy_deviation    pulses vs register beyond 10 % on days where the       70
                    register moved more than 0.01 kWh (3+ days)
running_fast        pulses more than 10x the register                      60
history_drop        use falls against the customer's own history and       drop %
                    stays down (halved if it recovers: a holiday)
cover_open          cover / terminal cover opened                          20 each,
                                                                           +30 near
                                                                           a drop
plausibility        the meter's own plausibility events                    10
==================  =====================================================  =====

A meter is a suspect from ``threshold`` (default 50): a cover-open event
alone, or a holiday, is not enough; a sustained large drop, a stopped
meter, a deviation or consumption while cut is.  Days with a power cut or
a supply cut are left out of the history comparisons (low use is then
explained).  Integer arithmetic only, so the same data give the same list.
"""

FIELDS = ("day", "energy_wh", "register_wh", "cut_s", "cut_wh", "cover_opens", "flags", "down_s", "balance")
HISTORY_DAYS = 28
WINDOW_DAYS = 14
STOPPED_WH = 100  # expected energy above 0.1 kWh ...
DEVIATION_MIN_WH = 10  # ... deviation skipped when expected <= 0.01 kWh
DEVIATION_PCT = 10
FAST_RATIO = 10
DROP_PCT = 35


def _median(values):
    s = sorted(values)
    return s[len(s) // 2] if s else 0


def _normal(row):
    """A day with the supply on all day: its use says something about the customer."""
    return row[3] == 0 and row[7] == 0


def score_meter(rows):
    """(score, reasons) of one meter's daily rows (lists in ``FIELDS`` order)."""
    score = 0
    reasons = []
    if any(r[1] < 0 or r[2] < 0 for r in rows):
        score += 100
        reasons.append("reading went down")

    cut_wh = sum(r[4] for r in rows)
    if cut_wh > STOPPED_WH:
        score += 80 + min(20, cut_wh // 10000)
        reasons.append("%d.%01d kWh used while cut" % (cut_wh // 1000, cut_wh % 1000 // 100))

    # Meter stopped: a run of whole supplied days with nothing registered
    # while the meter's own recent average says there should be.
    run = 0
    worst = 0
    history = []
    for r in rows:
        if not _normal(r):
            run = 0
            continue
        expected = _median(history[-HISTORY_DAYS:]) if len(history) >= 7 else 0
        if r[1] == 0 and r[2] == 0 and expected > STOPPED_WH:
            run += 1
            worst = max(worst, run)
        else:
            run = 0
            history.append(r[1])
    if worst >= 2:
        score += 90
        reasons.append("meter stopped for %d days" % worst)

    # Energy deviation between the pulse count and the meter's register.
    bad = 0
    fast = 0
    for r in rows:
        if r[2] > DEVIATION_MIN_WH:
            if abs(r[1] - r[2]) * 100 > DEVIATION_PCT * r[2]:
                bad += 1
            if r[1] > FAST_RATIO * r[2]:
                fast += 1
    if bad >= 3:
        score += 70
        reasons.append("pulses and register deviate >%d %% on %d days" % (DEVIATION_PCT, bad))
    if fast >= 1:
        score += 60
        reasons.append("meter running fast on %d days" % fast)

    # Drop against the customer's own history.
    drop, start, recovered = _history_drop([r for r in rows if _normal(r)])
    covers = [r[0] for r in rows if r[5]]
    if drop:
        pts = drop if not recovered else drop // 2
        score += pts
        reasons.append("use fell %d %% from day %d%s" % (drop, start, " (recovered)" if recovered else ""))
        if any(abs(c - start) <= 3 for c in covers):
            score += 30
            reasons.append("cover opened when the use fell")
    n_cover = sum(r[5] for r in rows)
    if n_cover:
        score += min(40, 20 * n_cover)
        reasons.append("cover opened %d time%s" % (n_cover, "" if n_cover == 1 else "s"))
    flags = sum(r[6] for r in rows)
    if flags:
        score += 10
        reasons.append("%d plausibility event%s" % (flags, "" if flags == 1 else "s"))
    return score, reasons


def _history_drop(rows):
    """Largest sustained fall of daily use against the preceding weeks.

    Returns (drop %, day it began, recovered?) or (0, None, False).  The
    median of each 14-day window is compared with the median of the 28
    days before it; a drop counts from DROP_PCT.  "Recovered" means the
    last 14 days are back above the threshold.
    """
    n = len(rows)
    if n < HISTORY_DAYS // 2 + WINDOW_DAYS:
        return 0, None, False
    best = 0
    best_start = None
    for i in range(HISTORY_DAYS // 2, n - WINDOW_DAYS + 1):
        base = _median([r[1] for r in rows[max(0, i - HISTORY_DAYS):i]])
        if base < 500:  # under 0.5 kWh/day: too little to compare
            continue
        now = _median([r[1] for r in rows[i:i + WINDOW_DAYS]])
        drop = (base - now) * 100 // base
        if drop > best:
            best = drop
            best_start = rows[i][0]
            base_at = base
    if best < DROP_PCT:
        return 0, None, False
    tail = _median([r[1] for r in rows[-WINDOW_DAYS:]])
    recovered = (base_at - tail) * 100 // base_at < DROP_PCT
    return best, best_start, recovered


def suspects(daily, threshold=50):
    """Ranked suspects from ``daily`` (meter id -> daily rows).

    Returns every meter with a score above zero as dicts {id, score,
    reasons, suspect (score >= threshold)}, highest score first (ties by
    id), so a utility can work down the list.
    """
    out = []
    for mid in sorted(daily):
        score, reasons = score_meter(daily[mid])
        if score:
            out.append({"id": mid, "score": score, "reasons": reasons, "suspect": score >= threshold})
    out.sort(key=lambda s: (-s["score"], s["id"]))
    return out


def evaluate(found, truth):
    """Precision and recall of ``found`` (from ``suspects``) against ``truth``
    (meter id -> theft kind or None).  Rates in per mille (ints)."""
    planted = sorted(m for m in truth if truth[m])
    flagged = [s for s in found if s["suspect"]]
    tp = [s for s in flagged if truth.get(s["id"])]
    by_kind = {}
    caught = set(s["id"] for s in tp)
    for m in planted:
        k = by_kind.setdefault(truth[m], [0, 0])
        k[0] += 1
        if m in caught:
            k[1] += 1
    return {
        "planted": len(planted),
        "flagged": len(flagged),
        "true_positives": len(tp),
        "precision_pm": len(tp) * 1000 // len(flagged) if flagged else None,
        "recall_pm": len(tp) * 1000 // len(planted) if planted else None,
        "by_kind": dict((k, {"planted": v[0], "caught": v[1]}) for k, v in sorted(by_kind.items())),
        "suspects": [dict(s, thief=truth.get(s["id"])) for s in found[:50]],
    }
