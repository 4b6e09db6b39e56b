"""The agent's whole configuration: every component's schema in one file.

Each component declares its own section next to its code; this module
only gathers them (it never copies a field), adds the sections that
belong to the agent shell itself (``agent``, ``link``, ``mqtt``, ``wifi``, ``sim``)
and checks the rules that span sections:

- the core's sections (``meter``, ``pulse``, ``account``, ``tariff``,
  ``relay``, ``freeze``: ``agent.meter.SCHEMA``);
- ``store`` (``agent.device.STORE_FIELDS``), ``tokens``
  (``agent.tokens.SCHEMA``), ``hw`` (``hw.config.SCHEMA``), ``dlt645`` and
  ``dlt645_master`` (``agent.dlt645.config``).

``load(path_or_dict)`` returns the validated config (defaults filled in)
or raises ``agent.config.ConfigError`` naming the dotted key.  Runs on
MicroPython (a board loads a JSON file; TOML needs CPython's tomllib).

Key material lives in its own file: a config *file* names it with
``agent.keys`` and may not hold ``[tokens]`` or ``link.key`` itself; the
keys file holds exactly those (``pmeter keys derive --out`` writes it) and
is refused if its group or others may read it.  A dict passed to ``load``
is a whole config, keys included (the simulator, the board, tests).
"""

from agent import config
from agent.config import BOOL, INT, STR, TABLE, ConfigError, Field, between, one_of

AGENT_FIELDS = {
    "data_dir": Field(STR, "/var/lib/pmeter", None, None, "directory of the durable store (state.a/.b, ckpt.a/.b)"),
    "hw": Field(STR, "sim", one_of("sim", "pi", "mpy"), None, "hardware backend when --hw is not given"),
    "tick_ms": Field(INT, 1000, between(50, 1000), None, "longest time between two Ticks of the core"),
    "keypad_budget": Field(
        INT, 200, between(0, 100000), None, "keypad table hashes spent per idle pass (0 = no upkeep)"
    ),
    "fw": Field(STR, "pmeter-agent", None, None, "firmware name reported in the MQTT birth message"),
    "keypad": Field(
        STR, "", None, None, "keypad input: empty = none, '-' = stdin, a FIFO path, or a serial device or URL; on a board 'uart:N' (codes typed between * and #)"
    ),
    "keypad_baud": Field(INT, 9600, between(300, 921600), None, "bit rate of a serial keypad"),
    "keys": Field(
        STR, None, None, None,
        "the keys file ([tokens] and [link] key; mode 0600), relative to this config's folder; pmeter keys derive --out writes it"
    ),
}


def _hex64(value):
    if len(value) != 64:
        return "must be 64 hex digits (pmeter keys derive writes it as [link] key), got %d characters" % len(value)
    for ch in value:
        if ch not in "0123456789abcdefABCDEF":
            return "must be hex digits (0-9, a-f)"
    return None


def _prefix(value):
    if not value or "/" in value or "+" in value or "#" in value:
        return "must be one topic level without '/', '+' or '#', got %r" % (value,)
    return None


LINK_FIELDS = {
    "key": Field(STR, None, _hex64, None, "link (payload sealing) key, 64 hex digits; required with mqtt.host"),
    "prefix": Field(STR, "pm", _prefix, None, "topic prefix: topics are <prefix>/<meter id>/<leaf>"),
    "telemetry_s": Field(INT, 300, between(10, 86400), None, "seconds between telemetry messages"),
}

MQTT_FIELDS = {
    "host": Field(STR, None, None, None, "broker host name or address; unset = run offline (no MQTT)"),
    "port": Field(INT, 8883, between(1, 65535), None, "broker port (8883 = MQTT over TLS)"),
    "tls": Field(BOOL, True, None, None, "use TLS (needs ca); false only on a trusted network"),
    "ca": Field(STR, None, None, None, "CA certificate file (PEM) the broker's certificate must chain to"),
    "cert": Field(STR, None, None, None, "this meter's client certificate (PEM)"),
    "key": Field(STR, None, None, None, "this meter's client private key (PEM)"),
    "username": Field(STR, None, None, None, "username (when the broker uses passwords, not certificates)"),
    "password": Field(STR, None, None, None, "password for username"),
    "client_id": Field(STR, None, None, None, "MQTT client id; unset = the meter id (the shipped broker replaces any id by the certificate's name or user)"),
    "keepalive_s": Field(INT, 30, between(5, 3600), None, "MQTT keepalive"),
    "protocol": Field(INT, 5, one_of(5, 4), None, "MQTT protocol: 5, or 4 for 3.1.1 (5 falls back to 3.1.1 by itself)"),
}

WIFI_FIELDS = {
    "ssid": Field(STR, None, None, None, "Wi-Fi network a board joins (unset = no Wi-Fi: a Pi, a wired board)"),
    "password": Field(STR, None, None, None, "Wi-Fi password"),
}

SIM_FIELDS = {
    "load_w": Field(INT, 1000, between(0, 100000), None, "constant load of the simulated household (W)"),
    "feedback": Field(BOOL, True, None, None, "the simulated relay has a feedback contact"),
}


def _schema():
    from agent.device import STORE_FIELDS
    from agent.dlt645.config import MASTER_SCHEMA
    from agent.dlt645.config import SCHEMA as DLT645
    from agent.link.session import HA_FIELDS
    from agent.meter import SCHEMA as CORE
    from agent.tokens import SCHEMA as TOKENS

    # hw/ lies outside agent/: a plain import would make the board-stub type
    # check follow hw/__init__ into the Pi and desktop backends.
    HW = __import__("hw.config", None, None, ["SCHEMA"]).SCHEMA

    schema = {}
    for part in (CORE, HW):
        for key in part:
            schema[key] = part[key]
    link = {}
    for part in (LINK_FIELDS, HA_FIELDS):
        for key in part:
            link[key] = part[key]
    schema["store"] = Field(TABLE, {}, None, STORE_FIELDS, "durable store: checkpoint interval")
    schema["tokens"] = Field(TABLE, None, None, TOKENS, "token keys (pmeter keys derive --meter ID prints this table)")
    schema["dlt645"] = Field(TABLE, {}, None, DLT645, "DL/T 645-2007 slave on RS-485 or TCP")
    schema["dlt645_master"] = Field(TABLE, {}, None, MASTER_SCHEMA, "DL/T 645 master reading the host meter")
    schema["agent"] = Field(TABLE, {}, None, AGENT_FIELDS, "the agent process")
    schema["link"] = Field(TABLE, {}, None, link, "MQTT link protocol: keys, topics, Home Assistant discovery")
    schema["mqtt"] = Field(TABLE, {}, None, MQTT_FIELDS, "MQTT broker connection")
    schema["wifi"] = Field(TABLE, {}, None, WIFI_FIELDS, "Wi-Fi (MicroPython boards)")
    schema["sim"] = Field(TABLE, {}, None, SIM_FIELDS, "simulated hardware (--hw sim)")
    return schema


_SCHEMA = []


def schema():
    """The full agent schema (built once: importing every component is not free on a board)."""
    if not _SCHEMA:
        _SCHEMA.append(_schema())
    return _SCHEMA[0]


def _cross_checks(cfg):
    # Rules that span sections: each error names the key to fix.
    from agent.dlt645.config import check_section as dlt645_check

    if cfg["tokens"] is None:
        raise ConfigError("agent.keys", "is required: the meter's keys file (pmeter keys derive --meter ID --out keys.toml writes it)")
    mq = cfg["mqtt"]
    if mq["host"] is not None:
        if cfg["link"]["key"] is None:
            raise ConfigError("link.key", "is required when mqtt.host is set: put it in the keys file (pmeter keys derive writes it)")
        if mq["tls"] and mq["ca"] is None:
            raise ConfigError("mqtt.ca", "is required when mqtt.tls is true (or set mqtt.tls = false)")
        if (mq["cert"] is None) != (mq["key"] is None):
            raise ConfigError("mqtt.cert" if mq["cert"] is None else "mqtt.key", "mqtt.cert and mqtt.key go together")
        if (mq["username"] is None) and mq["password"] is not None:
            raise ConfigError("mqtt.username", "is required when mqtt.password is set")
    dlt645_check(cfg["dlt645"])
    dev = cfg["dlt645"]["device"]
    if dev is not None and dev.startswith("tcp://"):
        host, sep, port = dev[6:].rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError("dlt645.device", "%r must look like tcp://HOST:PORT" % (dev,))


def validate(raw):
    """Check a raw config dict against the full schema; return it with defaults."""
    cfg = config.validate(raw, schema())
    _cross_checks(cfg)
    return cfg


def _duplicate_key(text):
    """The first key that appears twice in one object of JSON ``text``, or None.

    ``text`` must already be valid JSON.  Written out because MicroPython's
    json has no ``object_pairs_hook``; iterative, so deep nesting is fine.
    """
    import json

    stack = []  # per open container: the keys seen (an object) or None (an array)
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            k = j + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            if k < n and text[k] == ":" and stack and stack[-1] is not None:
                key = json.loads(text[i : j + 1])
                if key in stack[-1]:
                    return key
                stack[-1][key] = True
            i = j + 1
            continue
        if c == "{":
            stack.append({})
        elif c == "[":
            stack.append(None)
        elif c == "}" or c == "]":
            stack.pop()
        i += 1
    return None


def parse(text, name="config"):
    """Parse the text of a TOML (CPython) or JSON config file into a dict."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        import json

        try:
            raw = json.loads(text)
        except ValueError as e:
            raise ConfigError("(file)", "%s is not valid JSON: %s" % (name, e))
        except RuntimeError:  # RecursionError; MicroPython's is a plain RuntimeError
            raise ConfigError("(file)", "%s nests tables or lists too deeply" % name)
        dup = _duplicate_key(text)
        if dup is not None:
            raise ConfigError(dup, "appears twice in one table of %s (duplicate JSON key)" % name)
        return raw
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("(file)", "%s: this runtime reads JSON configs only (no tomllib)" % name)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("(file)", "%s is not valid TOML: %s" % (name, e))
    except RecursionError:
        raise ConfigError("(file)", "%s nests tables or lists too deeply" % name)


def _read(path, key):
    try:
        with open(path) as f:
            return parse(f.read(), path)
    except OSError as e:
        raise ConfigError(key, "cannot read %s: %s" % (path, e))
    except UnicodeError:
        raise ConfigError(key, "%s is not a UTF-8 text file" % (path,))


def _private(path):
    import os

    try:
        mode = os.stat(path)[0]
    except OSError as e:
        raise ConfigError("agent.keys", "cannot read %s: %s" % (path, e))
    # A board's flash file system has no permission bits (mode 0): nothing to check there.
    if mode & 0o077:
        raise ConfigError("agent.keys", "%s is open to group or others (mode %o): chmod 600 it" % (path, mode & 0o777))


def merge_keys(raw, path, keys_path=None):
    """``raw`` (the dict of the config file ``path``) with the keys file's [tokens]
    and [link] key put in; ConfigError if ``raw`` holds keys itself or the keys
    file is missing, open to others or holds anything else."""
    agent = raw.get("agent")
    name = agent.get("keys") if isinstance(agent, dict) else None
    link = raw.get("link")
    for key, present in (("tokens", "tokens" in raw), ("link.key", isinstance(link, dict) and "key" in link)):
        if present:
            raise ConfigError(key, "keys may not sit in the main config %s: move [tokens] and link.key to the keys file "
                              "named by agent.keys (pmeter keys derive --meter ID --out keys.toml writes it)" % path)
    if keys_path is None:
        if name is None:
            return raw
        if not isinstance(name, str) or not name:
            raise ConfigError("agent.keys", "must be a file name")
        keys_path = name if name.startswith("/") or "/" not in path else path.rpartition("/")[0] + "/" + name
    _private(keys_path)
    keys = _read(keys_path, "agent.keys")
    if not isinstance(keys, dict):
        raise ConfigError("agent.keys", "%s must hold a table" % keys_path)
    for k in keys:
        if k not in ("tokens", "link"):
            raise ConfigError("agent.keys", "%s: unknown section %r (a keys file holds [tokens] and [link] key only)" % (keys_path, k))
    klink = keys.get("link", {})
    if not isinstance(klink, dict) or [k for k in klink if k != "key"]:
        raise ConfigError("agent.keys", "%s: [link] holds key only" % keys_path)
    raw = dict(raw)
    if "tokens" in keys:
        raw["tokens"] = keys["tokens"]
    if "key" in klink:
        raw["link"] = dict(link or {})
        raw["link"]["key"] = klink["key"]
    return raw


def load(source, keys=None):
    """A validated config from a dict or a file path; raises ConfigError naming the key.

    For a file, the keys come from the file named by ``agent.keys``
    (relative to the config's folder), or from ``keys`` when given (a
    path: an installer validating a config before the keys are in place).
    """
    if isinstance(source, dict):
        return validate(source)
    raw = _read(source, "(file)")
    if not isinstance(raw, dict):
        raise ConfigError("(file)", "%s must hold a table" % (source,))
    return validate(merge_keys(raw, source, keys))


def reference():
    """Lines of the configuration reference (every section, every key)."""
    return config.reference(schema())
