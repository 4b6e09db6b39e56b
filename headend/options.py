"""One set of options for every head-end command, and the head-end config file.

Every head-end command (``vend``, ``push``, ``status``, ``restore``,
``batch``, ``keys``, ``token``) takes the same names for the same things,
each resolved in this order: the command-line flag, the environment
variable, the config file, the default.

==========  ==================  ======================  =====================
flag        environment         config file             default
==========  ==================  ======================  =====================
--config    PMETER_HEADEND_CONFIG                       ./headend.toml if present
--broker    PMETER_BROKER       [broker] url            mqtts://127.0.0.1:8883
--ca        PMETER_CA           [broker] ca             (none)
--cert      PMETER_CERT         [broker] cert           (none)
--key       PMETER_KEY          [broker] key            (none)
--client-id PMETER_CLIENT_ID    [broker] client_id      the certificate's name
--master    PMETER_MASTER       [keys] master           pmeter-master.key
--ledger    PMETER_LEDGER       [ledger] path           pmeter-ledger.sqlite
==========  ==================  ======================  =====================

Relative paths in the config file are relative to the file's folder.  The
ledger file also holds the head-end's shadow of the fleet (what meters
last reported), so ``pmeter status`` reads the file ``push`` wrote.
"""

import os
import sqlite3

DEFAULT_CONFIG = "headend.toml"

# name -> (flag, environment variable, (section, key) in the config file, default)
OPTIONS = {
    "broker": ("--broker", "PMETER_BROKER", ("broker", "url"), "mqtts://127.0.0.1:8883"),
    "ca": ("--ca", "PMETER_CA", ("broker", "ca"), None),
    "cert": ("--cert", "PMETER_CERT", ("broker", "cert"), None),
    "key": ("--key", "PMETER_KEY", ("broker", "key"), None),
    "client_id": ("--client-id", "PMETER_CLIENT_ID", ("broker", "client_id"), None),
    "master": ("--master", "PMETER_MASTER", ("keys", "master"), "pmeter-master.key"),
    "ledger": ("--ledger", "PMETER_LEDGER", ("ledger", "path"), "pmeter-ledger.sqlite"),
}
PATHS = ("ca", "cert", "key", "master", "ledger")
HELP = {
    "broker": "broker URL, mqtts://HOST[:PORT] (TLS, port 8883) or mqtt://HOST[:PORT] (plain, 1883)",
    "ca": "CA certificate (PEM) the broker's certificate must chain to",
    "cert": "the head-end's client certificate (PEM)",
    "key": "the head-end's client private key (PEM)",
    "client_id": "MQTT client id; its persistent session collects what meters send between runs "
                 "(processes running at the same time need different ids)",
    "master": "master key file (pmeter keys init)",
    "ledger": "SQLite ledger of issued tokens and the fleet's shadow",
}
BROKER = ("broker", "ca", "cert", "key", "client_id")
MAX_TIMEOUT_S = 3600.0


class BadInput(Exception):
    """A command-line argument or a config key was wrong: exit code 2."""

    def __init__(self, arg, problem):
        Exception.__init__(self, "%s: %s" % (arg, problem))
        self.arg = arg


def add(p, names):
    """Add ``--config`` and the options ``names`` (keys of OPTIONS) to parser ``p``."""
    p.add_argument("--config", help="head-end config file (TOML) [PMETER_HEADEND_CONFIG; default ./%s if present]"
                   % DEFAULT_CONFIG)
    for name in names:
        flag, env, (section, key), default = OPTIONS[name]
        p.add_argument(flag, dest=name, help="%s [%s; %s.%s; default %s]" % (HELP[name], env, section, key,
                                                                           default or "none"))


def _config_path(args):
    path = args.config or os.environ.get("PMETER_HEADEND_CONFIG")
    if path:
        return path, ("--config" if args.config else "PMETER_HEADEND_CONFIG")
    if os.path.isfile(DEFAULT_CONFIG):
        return DEFAULT_CONFIG, DEFAULT_CONFIG
    return None, None


def read_config(path, arg="--config"):
    """``{(section, key): value}`` of a head-end config file; BadInput naming the key."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BadInput(arg, "cannot read %s: %s" % (path, e.strerror or e))
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(arg, "%s is not a UTF-8 text file" % path)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(arg, "%s is not valid TOML: %s" % (path, e))
    known = {}
    for flag, env, where, default in OPTIONS.values():
        known.setdefault(where[0], set()).add(where[1])
    for section, keys in SERVICE_KEYS.items():
        known.setdefault(section, set()).update(keys)
    out = {}
    base = os.path.dirname(os.path.abspath(path))
    for section in data:
        if section not in known:
            raise BadInput(section, "unknown section in %s (known: %s)" % (path, ", ".join(sorted(known))))
        if not isinstance(data[section], dict):
            raise BadInput(section, "must be a table [%s] in %s" % (section, path))
        for key, value in data[section].items():
            name = "%s.%s" % (section, key)
            if key not in known[section]:
                raise BadInput(name, "unknown key in %s (known in [%s]: %s)"
                               % (path, section, ", ".join(sorted(known[section]))))
            kind = SERVICE_KEYS.get(section, {}).get(key, (str,))[0]
            out[(section, key)] = _config_value(kind, value, name, path)
    # Paths in the file are relative to the file, so it works from any folder.
    for name in PATHS:
        where = OPTIONS[name][2]
        if where in out:
            out[where] = os.path.join(base, os.path.expanduser(out[where]))
    return out


# The service's sections (``pmeter headend serve``, headend/service.py):
# (section, key) -> (type, default, help).  ``list`` is a list of strings.
SERVICE_KEYS = {
    "service": {
        "queue": (bool, False, "push and batch enqueue into the service's delivery queue (the running service "
                               "delivers, re-sending after each birth) instead of publishing once"),
        "listen": (str, "127.0.0.1:8080", "HOST:PORT the HTTP API listens on"),
        "wait_s": (float, 10.0, "how long an API top-up or command waits for the meter's answer"),
        "ttl_s": (int, 7 * 86400, "a queued top-up or command not applied within this many seconds expires"),
        "poll_s": (float, 0.5, "how often the queue is checked for items other processes added"),
        "group": (str, None, "shared subscription group: service instances of one group split the meters' "
                             "messages (each needs its own certificate/client id)"),
    },
    "api": {
        "payment": (list, [], "bearer tokens of payment channels (top-ups only)"),
        "operator": (list, [], "bearer tokens of operators (everything)"),
        "read": (list, [], "bearer tokens of read-only clients"),
    },
    "webhook": {
        "url": (str, None, "http(s) URL notifications are POSTed to"),
        "secret": (str, None, "HMAC-SHA256 key of the X-Pmeter-Signature header"),
        "retry_s": (float, 2.0, "first retry delay; doubles per failure"),
        "max_retry_s": (float, 300.0, "longest retry delay"),
    },
}


def _config_value(kind, value, name, path):
    # One config value checked against its type; BadInput naming the key.
    if kind is bool:
        if not isinstance(value, bool):
            raise BadInput(name, "must be true or false in %s" % path)
    elif kind is list:
        if (not isinstance(value, list) or not value
                or any(not isinstance(v, str) or len(v) < 16 or not v.isprintable() for v in value)):
            raise BadInput(name, "must be a list of tokens (printable strings of 16 characters or more) in %s" % path)
    elif kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0 \
                or value != value or value == float("inf"):
            raise BadInput(name, "must be a %s above 0 in %s"
                           % ("number" if kind is float else "whole number", path))
        value = kind(value)
    elif not isinstance(value, str) or not value.strip():
        raise BadInput(name, "must be a non-empty string in %s" % path)
    return value


class Settings:
    """Resolved head-end options: ``get(name)`` and where each came from (``source(name)``)."""

    def __init__(self, args):
        self.args = args
        path, self.config_arg = _config_path(args)
        self.config_path = path
        self.file = read_config(path, self.config_arg) if path else {}

    def get(self, name):
        """The value of option ``name`` (flag, environment, config file, default)."""
        flag, env, where, default = OPTIONS[name]
        value = getattr(self.args, name, None)
        if value is None:
            value = os.environ.get(env) or None
        if value is None:
            value = self.file.get(where, default)
        return value

    def service(self, section, key):
        """A service option from the config file (``SERVICE_KEYS``), or its default."""
        return self.file.get((section, key), SERVICE_KEYS[section][key][1])

    def source(self, name):
        """How to name option ``name`` in an error: its flag, variable or config key."""
        flag, env, where, default = OPTIONS[name]
        if getattr(self.args, name, None) is not None:
            return flag
        if os.environ.get(env):
            return env
        if where in self.file:
            return "%s.%s (in %s)" % (where[0], where[1], self.config_path)
        return flag

    def existing_file(self, name, what):
        """The path of option ``name``, which must name a readable file; BadInput otherwise."""
        path = self.get(name)
        if path is None:
            flag, env, (section, key), default = OPTIONS[name]
            raise BadInput(flag, "%s is required: give %s, set %s or %s.%s in the config file"
                           % (what, flag, env, section, key))
        if not os.path.isfile(path):
            raise BadInput(self.source(name), "%s %s: no such file" % (what, path))
        if not os.access(path, os.R_OK):
            raise BadInput(self.source(name), "%s %s: not readable" % (what, path))
        return path

    def master(self):
        """The master key (bytes) from the ``master`` option; BadInput naming it."""
        from . import keys

        try:
            return keys.load_master(self.get("master"))
        except keys.KeyFileError as e:
            raise BadInput(self.source("master"), str(e))

    def ledger(self, create=True):
        """Open the ledger (``headend.ledger.Ledger``); BadInput naming it if it cannot be used."""
        from .ledger import Ledger

        return self._open(Ledger, create)

    def shadow(self, create=True):
        """Open the shadow, kept in the ledger file; BadInput naming it if it cannot be used."""
        from .shadow import Shadow

        return self._open(Shadow, create)

    def _open(self, cls, create):
        path = self.ledger_path(create)
        try:
            return cls(path)
        except sqlite3.Error as e:
            raise BadInput(self.source("ledger"), database_problem(path, e))

    def ledger_path(self, create=True):
        """The ledger's path, checked: it exists (or may be created) and is writable."""
        path = self.get("ledger")
        arg = self.source("ledger")
        if os.path.isdir(path):
            raise BadInput(arg, "%s is a folder, not a ledger file" % path)
        if os.path.exists(path):
            if not os.access(path, os.R_OK | os.W_OK):
                raise BadInput(arg, "ledger %s: not readable and writable by this user" % path)
            return path
        if not create:
            raise BadInput(arg, "ledger %s: no such file (nothing vended or pushed with it yet?)" % path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise BadInput(arg, "ledger %s: folder %s does not exist" % (path, folder))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise BadInput(arg, "ledger %s: cannot create a file in %s (permission denied)" % (path, folder))
        return path

    def broker(self):
        """``(host, port, tls or None, client_id)`` from the broker options; BadInput naming the option."""
        url = self.get("broker")
        arg = self.source("broker")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("mqtts", "mqtt"):
            raise BadInput(arg, "must be a URL like mqtts://HOST:PORT or mqtt://HOST:PORT, got %r" % url)
        host, colon, port = rest.rstrip("/").rpartition(":")
        if not colon:
            host, port = rest.rstrip("/"), ("8883" if scheme == "mqtts" else "1883")
        if not host or "/" in host or not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
            raise BadInput(arg, "must be a URL like %s://HOST:PORT (port 1-65535), got %r" % (scheme, url))
        # None: the client certificate's name (the shipped broker binds the
        # client id to it anyway), else "headend" (headend.link.HeadEnd).
        client_id = self.get("client_id")
        if client_id is not None and (not client_id or not client_id.isprintable() or len(client_id) > 128):
            raise BadInput(self.source("client_id"), "must be 1-128 printable characters")
        tls = None
        if scheme == "mqtts":
            from hw.mqtt_paho import TLS

            ca = self.existing_file("ca", "CA certificate")
            cert = key = None
            if self.get("cert") is not None or self.get("key") is not None:
                cert = self.existing_file("cert", "client certificate")
                key = self.existing_file("key", "client key")
            tls = TLS(ca, cert, key)
        return host.strip("[]"), int(port), tls, client_id


class Connection:
    """A ``HeadEnd`` on the resolved options (``Settings``), its shadow the ledger file's.

    Everything is checked when it is made; ``start()`` connects.
    """

    def __init__(self, st):
        from .link import Fleet, HeadEnd

        key = st.master()  # also opens what the meters send
        host, port, tls, client_id = st.broker()
        self.where = "%s:%d" % (host, port)
        self.shadow = st.shadow()
        self.head = HeadEnd(Fleet(key), self.shadow, host, port, tls=tls, client_id=client_id)

    def start(self):
        """None, or the exit code after a message when the broker cannot be reached (nothing sent)."""
        try:
            self.head.start()
        except Exception as e:
            self.shadow.close()
            return fail("cannot reach the broker at %s: %s (nothing vended or sent)" % (self.where, e), 1)
        return None

    def stop(self):
        """Disconnect, with everything received in the shadow, and close it."""
        self.head.stop()
        self.shadow.close()


def database_problem(path, error):
    """A message for the user about an SQLite file that cannot be used."""
    return "%s cannot be used as a ledger: %s (a damaged or foreign file? restore it from a backup)" % (path, error)


def timeout(value, arg="--timeout"):
    """Seconds to wait: a finite number above 0 and at most MAX_TIMEOUT_S; BadInput otherwise."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise BadInput(arg, "must be a number of seconds, got %r" % (value,))
    if not (0 < t <= MAX_TIMEOUT_S):  # also refuses nan and inf
        raise BadInput(arg, "must be above 0 and at most %d seconds, got %r" % (MAX_TIMEOUT_S, value))
    return t


def fail(message, code=2):
    """Print an error for the user and return the exit code."""
    import sys

    sys.stderr.write("pmeter: error: %s\n" % message)
    return code


def run(func, args):
    """``func(args)``, with bad input (and an unusable ledger file) as a message and exit code 2."""
    try:
        return func(args)
    except BadInput as e:
        return fail(str(e))
    except sqlite3.DatabaseError as e:  # damage found past the ledger's first page
        return fail("--ledger: the ledger cannot be used: %s (a damaged file? restore it from a backup)" % e)
