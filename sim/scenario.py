"""Fleet scenarios: a TOML file describing a village to simulate.

A scenario says how many meters live for how long, what configuration they
run, which households and customers they serve, what the operators do and
when, which faults strike and which customers steal.  It is checked with
the same schema machinery as the meter configuration (``agent.config``):
an unknown key, a wrong type or a value out of range is rejected with a
message naming the key, before anything runs.

Rates are whole numbers per thousand meters (``*_per_mille``) or per
million (``*_ppm``): the schema machinery knows integers, not floats, and
a scenario stays exact and reproducible.  See ``docs/fleet.md``.
"""

from agent.calendar import parse_datetime
from agent.config import BOOL, INT, LIST, STR, TABLE, ConfigError, Field, between, validate
from agent.meter import COMMAND_NAMES, load_config
from sim.customer import KINDS as CUSTOMER_KINDS
from sim.household import PROFILES

THEFT_KINDS = ("meter_bypass", "relay_bypass", "stopped", "pulse_tamper")


def _date(value):
    # The timezone does not matter for the check, only the shape.
    if parse_datetime(value, 0) is None:
        return "must be a local time 'YYYY-MM-DD HH:MM', got %r" % (value,)
    return None


def _weights(known):
    def check(value):
        for key in sorted(value):
            if key not in known:
                return "unknown kind %r (known: %s)" % (key, ", ".join(sorted(known)))
            w = value[key]
            if not isinstance(w, int) or isinstance(w, bool) or w < 0:
                return "weight of %r must be an integer >= 0, got %r" % (key, w)
        if value and not sum(value[k] for k in value):
            return "weights must not all be 0"
        return None

    return check


def _outages(value):
    for i, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 2 or not all(isinstance(x, str) for x in item):
            return "item %d must be a pair of local times [\"YYYY-MM-DD HH:MM\", \"YYYY-MM-DD HH:MM\"], got %r" % (i, item)
        a = parse_datetime(item[0], 0)
        b = parse_datetime(item[1], 0)
        if a is None or b is None:
            return "item %d: times must be 'YYYY-MM-DD HH:MM', got %r" % (i, item)
        if b <= a:
            return "item %d: the outage must end after it starts, got %r" % (i, item)
    return None


def _indices(value):
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return "must list meter numbers (integers >= 0), got %r" % (v,)
    return None


RUN = {
    "meters": Field(INT, 100, between(1, 100000), doc="number of virtual meters"),
    "days": Field(INT, 30, between(1, 3660), doc="days to simulate"),
    "seed": Field(INT, 1, None, None, doc="random seed: same seed, same output"),
    "start": Field(STR, "2026-01-01 00:00", _date, None, doc="local start time"),
    "step_s": Field(INT, 900, between(1, 86400), doc="longest simulated step near a money threshold"),
    "feedback": Field(BOOL, False, None, None, doc="relays have a feedback contact wired"),
}

OPERATOR = {
    "at": Field(STR, check=_date, doc="local time the operator sends the command"),
    "command": Field(STR, check=lambda v: None if v in COMMAND_NAMES else "must be a meter command (%s), got %r" % (", ".join(COMMAND_NAMES), v), doc="command name"),
    "args": Field(TABLE, {}, None, None, doc="command arguments"),
    "per_mille": Field(INT, 1000, between(0, 1000), doc="share of meters it goes to, per thousand (seeded choice)"),
    "meters": Field(LIST, None, _indices, None, doc="exact meter numbers (0-based) instead of a share"),
    "label": Field(STR, "", None, None, doc="name of the action in the report"),
}

FAULTS = {
    "power_cuts_per_year": Field(INT, 0, between(0, 1000), doc="mean supply outages per meter per year, at random instants"),
    "power_cut_min_s": Field(INT, 60, between(1, 7 * 86400), doc="shortest outage"),
    "power_cut_max_s": Field(INT, 4 * 3600, between(1, 7 * 86400), doc="longest outage"),
    "relay_welded_per_mille": Field(INT, 0, between(0, 1000), doc="meters whose relay contacts weld closed on a random day"),
    "relay_stuck_per_mille": Field(INT, 0, between(0, 1000), doc="meters whose relay armature sticks on a random day"),
    "relay_open_set_per_mille": Field(INT, 0, between(0, 1000), doc="meters whose close (set) coil breaks on a random day"),
    "relay_open_reset_per_mille": Field(INT, 0, between(0, 1000), doc="meters whose open (reset) coil breaks on a random day"),
    "relay_miss_ppm": Field(INT, 0, between(0, 1000000), doc="chance per relay operation that a good relay does not move, per million"),
    "relay_repair_days": Field(INT, 0, between(0, 3660), doc="days until a failed relay is repaired (0 = never)"),
    "clock_drift_ppm": Field(INT, 0, between(0, 1000), doc="each meter's clock runs up to this fast or slow (ppm)"),
    "clock_sync_days": Field(INT, 7, between(1, 3660), doc="days between the head-end's clock corrections"),
    "tamper_per_mille": Field(INT, 0, between(0, 1000), doc="honest meters with a cover-open event (a meter reader, a repair)"),
    "register_drift_ppm": Field(INT, 0, between(0, 100000), doc="honest meters' register vs pulse deviation, up to (ppm)"),
    "vacation_per_mille": Field(INT, 0, between(0, 1000), doc="households away 7-21 days (use drops to 10 %)"),
    "broker_outages": Field(LIST, [], _outages, None, doc="windows when no top-up or command reaches the meters"),
}

THEFT = {
    "thieves_per_mille": Field(INT, 0, between(0, 1000), doc="meters whose customer steals"),
    "kinds": Field(TABLE, {}, _weights(THEFT_KINDS), None, doc="weights of theft kinds"),
    "start_day_min": Field(INT, 20, between(0, 3660), doc="theft starts no earlier than this day"),
    "cover_open_pct": Field(INT, 60, between(0, 100), doc="thieves who trip the cover switch while installing"),
    "fraction_pct_min": Field(INT, 40, between(1, 100), doc="share of the load a bypass or a pulse tamper hides, at least"),
    "fraction_pct_max": Field(INT, 90, between(1, 100), doc="... at most"),
}

ANALYTICS = {
    "threshold": Field(INT, 50, between(1, 1000), doc="score from which a meter is a suspect"),
}

SCHEMA = {
    "name": Field(STR, "", None, None, doc="scenario name"),
    "description": Field(STR, "", None, None, doc="what the scenario shows"),
    "run": Field(TABLE, {}, None, RUN, doc="size, length and seed"),
    "config": Field(TABLE, None, None, None, doc="meter configuration (as a --config file); default: the embedded demo"),
    "households": Field(TABLE, {}, _weights(sorted(PROFILES)), None, doc="weights of household profiles (rural, small, large)"),
    "customers": Field(TABLE, {}, _weights(sorted(CUSTOMER_KINDS)), None, doc="weights of customer kinds"),
    "operator": Field(LIST, [], None, None, doc="operators' actions ([[operator]] tables)"),
    "faults": Field(TABLE, {}, None, FAULTS, doc="faults"),
    "theft": Field(TABLE, {}, None, THEFT, doc="planted thieves (ground truth for the analytics)"),
    "analytics": Field(TABLE, {}, None, ANALYTICS, doc="anti-theft analytics"),
}


class Scenario:
    """A checked scenario: ``data`` (defaults filled) plus derived values."""

    __slots__ = ("data", "path", "config", "operators", "outages")

    def __init__(self, data, path, config, operators, outages):
        self.data = data
        self.path = path
        self.config = config
        self.operators = operators
        self.outages = outages

    def section(self, name):
        return self.data[name]


def check(raw, default_config, tz_s=28800, path="scenario"):
    """Validate a raw scenario dict; returns a Scenario or raises ConfigError."""
    data = validate(raw, SCHEMA)
    f = data["faults"]
    if f["power_cut_max_s"] < f["power_cut_min_s"]:
        raise ConfigError("faults.power_cut_max_s", "must be >= power_cut_min_s (%d), got %d" % (f["power_cut_min_s"], f["power_cut_max_s"]))
    th = data["theft"]
    if th["fraction_pct_max"] < th["fraction_pct_min"]:
        raise ConfigError("theft.fraction_pct_max", "must be >= fraction_pct_min (%d), got %d" % (th["fraction_pct_min"], th["fraction_pct_max"]))
    if th["thieves_per_mille"] and not th["kinds"]:
        th["kinds"] = dict((k, 1) for k in THEFT_KINDS)
    config = data["config"] if data["config"] is not None else default_config
    probe = {}
    for section in config:
        if not isinstance(config[section], dict):
            raise ConfigError("config." + section, "must be a table")
        probe[section] = dict(config[section])
    probe.setdefault("meter", {})["id"] = "100000000001"
    try:
        load_config(probe)
    except ConfigError as exc:
        raise ConfigError("config." + exc.key, exc.rule)
    operators = []
    for i, item in enumerate(data["operator"]):
        op = validate(item, OPERATOR, "operator[%d]." % i)
        op["wall"] = parse_datetime(op["at"], tz_s)
        if not op["label"]:
            op["label"] = "%s %s" % (op["command"], op["at"])
        if op["meters"] is not None:
            n = data["run"]["meters"]
            for m in op["meters"]:
                if m >= n:
                    raise ConfigError("operator[%d].meters" % i, "meter %d does not exist (run.meters = %d)" % (m, n))
        operators.append(op)
    operators.sort(key=lambda o: o["wall"])
    outages = sorted((parse_datetime(a, tz_s), parse_datetime(b, tz_s)) for a, b in f["broker_outages"])
    return Scenario(data, path, config, operators, outages)


def load(path, default_config, tz_s=28800):
    """Read and check a scenario TOML file; raises ConfigError or OSError."""
    import tomllib

    with open(path, "rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", "not valid TOML: %s" % (exc,))
    return check(raw, default_config, tz_s, path)
