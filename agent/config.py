"""Configuration schemas: check a plain dict against a declared schema.

Each component declares its own section as a dict of ``Field``s (the
ESPHome way: schema next to the code).  ``validate`` returns a new dict
with defaults filled in, or raises ``ConfigError`` naming the key and the
rule it broke.  Unknown keys are errors: a typo must not silently fall
back to a default on a device that handles money.

Works on MicroPython (no dataclasses, typing or dict order reliance).
"""


class ConfigError(ValueError):
    """A configuration value broke a rule.  ``key`` is the dotted path."""

    def __init__(self, key, rule):
        super().__init__("config key '%s': %s" % (key, rule))
        self.key = key
        self.rule = rule


INT = "an integer"
STR = "a string"
BOOL = "true or false"
LIST = "a list"
TABLE = "a table"

_REQUIRED = object()


class Field:
    """One key of a schema.

    ``kind`` is INT, STR, BOOL, LIST or TABLE; ``default`` is used when the
    key is absent (omit it to make the key required); ``check(value)``
    returns an error sentence or None; ``schema`` is the nested schema of a
    TABLE; ``doc`` is one line for the configuration reference.
    """

    __slots__ = ("kind", "default", "check", "schema", "doc")

    def __init__(self, kind, default=_REQUIRED, check=None, schema=None, doc=""):
        if schema is not None and not isinstance(schema, dict):
            # A doc string passed positionally lands here: catch it at import.
            raise TypeError("Field schema must be a dict of Fields; pass the doc as doc=...")
        self.kind = kind
        self.default = default
        self.check = check
        self.schema = schema
        self.doc = doc


def _is_kind(value, kind):
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == LIST:
        return isinstance(value, list)
    return isinstance(value, dict)


def validate(data, schema, path=""):
    """Check ``data`` (a dict) against ``schema``; return it with defaults."""
    if not isinstance(data, dict):
        raise ConfigError(path or "(top)", "must be a table")
    for key in data:
        if not isinstance(key, str):
            # JSON and TOML keys are strings; other maps (command arguments) may not be.
            raise ConfigError(path + repr(key), "keys must be strings, got %r" % (key,))
    for key in sorted(data):
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(path + key, "unknown key (known keys: %s)" % known)
    out = {}
    for key in sorted(schema):
        field = schema[key]
        where = path + key
        if key in data:
            value = data[key]
        elif field.default is _REQUIRED:
            raise ConfigError(where, "is required")
        else:
            value = field.default
            if field.kind == TABLE and value is None:
                out[key] = None
                continue
        if field.kind == TABLE and value is None and key in data:
            raise ConfigError(where, "must be a table")
        if value is None and field.default is None:
            out[key] = None
            continue
        if not _is_kind(value, field.kind):
            raise ConfigError(where, "must be %s, not %r" % (field.kind, value))
        if field.kind == TABLE and field.schema is not None:
            value = validate(value, field.schema, where + ".")
        if field.check is not None:
            problem = field.check(value)
            if problem:
                raise ConfigError(where, problem)
        out[key] = value
    return out


def at_least(low):
    """A check: the integer is >= ``low``."""

    def check(value):
        if value < low:
            return "must be at least %d, got %d" % (low, value)
        return None

    return check


def between(low, high):
    """A check: the integer is within ``low``..``high`` inclusive."""

    def check(value):
        if value < low or value > high:
            return "must be between %d and %d, got %d" % (low, high, value)
        return None

    return check


def one_of(*choices):
    """A check: the value is one of ``choices``."""

    def check(value):
        if value not in choices:
            return "must be one of %s, got %r" % (", ".join(repr(c) for c in choices), value)
        return None

    return check


def reference(schema, path=""):
    """Lines describing a schema, for the README's configuration reference."""
    lines = []
    for key in sorted(schema):
        field = schema[key]
        if field.kind == TABLE and field.schema is not None:
            lines.append("[%s%s] %s" % (path, key, field.doc))
            lines.extend(reference(field.schema, path + key + "."))
        else:
            default = "required" if field.default is _REQUIRED else "default %r" % (field.default,)
            lines.append("%s%s: %s, %s. %s" % (path, key, field.kind, default, field.doc))
    return lines
