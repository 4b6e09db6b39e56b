"""The master key file and per-meter keys.

The master key is 32 random bytes stored as 64 hex digits in a file only
its owner can read (mode 0600, created exclusively: never overwritten).
Every meter key is derived from it (agent.crypto.derive_key), so the
head-end stores one secret, and a key read out of one meter derives
nothing for another.
"""

import binascii
import os
import stat

from agent import crypto
from agent.tokens import keypad

from . import check_meter_id

MASTER_LEN = 32


class KeyFileError(ValueError):
    """The master key file is missing, malformed or too widely readable."""


def create_private(path, data, what="key file"):
    """Create ``path`` holding ``data`` with mode 0600, exclusively: a key is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError("%s %s already exists: not overwriting it" % (what, path))
    try:
        os.fchmod(fd, 0o600)  # the umask could have removed bits, never added: make it exact
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def init_master(path, random_bytes=os.urandom):
    """Create a new master key file at ``path`` (mode 0600); refuse to overwrite."""
    key = random_bytes(MASTER_LEN)
    create_private(path, binascii.hexlify(key) + b"\n", "master key file")
    return key


def load_master(path):
    """Read the master key; KeyFileError if absent, malformed or group/other-readable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError("master key file %s does not exist (create it with: pmeter keys init)" % path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            "master key file %s is accessible by group/others (mode %o): chmod 600 it" % (path, st.st_mode & 0o777)
        )
    with open(path, "rb") as f:
        text = f.read().strip()
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise KeyFileError("master key file %s: not hex digits" % path)
    if len(key) != MASTER_LEN:
        raise KeyFileError("master key file %s: expected %d hex digits" % (path, 2 * MASTER_LEN))
    return key


def meter_key(master, meter_id, revision):
    """The MQTT token key of one meter and key revision."""
    return crypto.derive_key(master, check_meter_id(meter_id), revision, crypto.METER)


def keypad_key(master, meter_id):
    """The OpenPAYGO secret of one meter (16 bytes; not rotated by key change)."""
    return crypto.derive_key(master, check_meter_id(meter_id), 0, crypto.KEYPAD, 16)


def link_key(master, meter_id, revision):
    """The MQTT payload sealing key of one meter (agent.crypto.seal)."""
    return crypto.derive_key(master, check_meter_id(meter_id), revision, crypto.LINK)


def provision(master, meter_id, revision=0, divider=1):
    """The meter's key material as its agent config expects it: a dict of the
    ``tokens`` table and the ``link`` table (``{"tokens": {...}, "link": {"key": ...}}``)."""
    kk = keypad_key(master, meter_id)
    return {
        "tokens": {
            "key": binascii.hexlify(meter_key(master, meter_id, revision)).decode(),
            "revision": revision,
            "keypad_key": binascii.hexlify(kk).decode(),
            "keypad_starting_code": keypad.Chain(kk).start,
            "keypad_divider": divider,
        },
        "link": {"key": binascii.hexlify(link_key(master, meter_id, revision)).decode()},
    }


def provision_toml(prov):
    """``provision``'s tables as TOML lines (the agent's keys file, ``agent.keys``)."""
    lines = []
    for section in ("tokens", "link"):
        if lines:
            lines.append("")
        lines.append("[%s]" % section)
        for key, value in prov[section].items():  # the schema's order
            lines.append("%s = %s" % (key, '"%s"' % value if isinstance(value, str) else value))
    return lines


def keys_file_text(meter_id, prov):
    """The meter's keys file (the agent's ``agent.keys``, TOML) for a ``provision`` dict."""
    lines = [
        "# Keys of meter %s at key revision %d: the agent's keys file (agent.keys)." % (meter_id, prov["tokens"]["revision"]),
        "# Whoever holds it can mint this meter's tokens: mode 0600, owned by the agent's user.",
    ]
    return "\n".join(lines + provision_toml(prov)) + "\n"
