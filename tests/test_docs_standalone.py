"""The README and docs/ stand alone: no path outside the repository, no machine's path.

A reader has the repository and nothing else, so the docs may name:
repository paths (relative), standard system locations of an install
(``/etc/pmeter``, ``/dev/ttyUSB0``, ``/var/lib/pmeter``, ``/tmp/...``) and
URLs.  Not: a folder next to the repository (``../shared/...``), a link
that leads nowhere, or where the repository sat on the machine the docs
were written on (``/work/...``, ``/home/...``).  Also: the optional
drawing tools name their install command when missing.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted([os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))

# First components of absolute paths that mean the same on every Linux install.
SYSTEM = {"etc", "dev", "var", "tmp", "usr", "opt", "run", "sys", "proc", "lib", "bin", "sbin", "boot", "srv"}
# Not files: the HTTP routes of the head-end service (docs/headend.md).
SYSTEM |= {"api"}
# An absolute path: a slash not inside a word, URL, topic or make template
# ($(PORT_DIR)/...) or relative path, then at least two components.
ABSOLUTE = re.compile(r"(?<![\w.~/$:+>})*-])/([A-Za-z0-9_.-]+)/[A-Za-z0-9_./+-]*")
# Where checkouts and people's files live: wrong even as a single component.
MACHINE = re.compile(r"(?<![\w.~/$:+>})*-])/(work|home|root|Users|mnt|media|builds|workspace)\b")
CLIMB = re.compile(r"(?<![\w./])((?:\.\./)+)([A-Za-z0-9_.-][A-Za-z0-9_./-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
GENERATED = (".venv/", "build/")  # made inside the repository by its scripts


def _lines():
    for path in DOCS:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                yield os.path.relpath(path, ROOT), n, line


def problems(lines):
    """Every reference to something outside the repository, as 'file:line: why'."""
    found = []
    for where, n, line in lines:
        at = "%s:%d: " % (where, n)
        if "shared/reference" in line or "shared/vendor" in line:
            found.append(at + "names the shared folder next to the repository")
        for m in ABSOLUTE.finditer(line):
            if m.group(1) not in SYSTEM:
                found.append(at + "absolute path %s" % m.group(0))
        for m in MACHINE.finditer(line):
            found.append(at + "machine path %s" % m.group(0))
        for m in CLIMB.finditer(line):
            rest = m.group(2).rstrip(".")
            if not rest.startswith(GENERATED) and not os.path.exists(os.path.join(ROOT, rest)):
                found.append(at + "%s%s climbs out to something not in the repository" % (m.group(1), m.group(2)))
        for m in LINK.finditer(line):
            target = m.group(1).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue  # an anchor or a URL
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(where), target))
            if not full.startswith(ROOT + os.sep) or not os.path.exists(full):
                found.append(at + "link %s leads outside the repository or nowhere" % target)
    return found


def test_readme_and_docs_name_nothing_outside_the_repository():
    assert len(DOCS) > 10
    assert problems(_lines()) == []


@pytest.mark.parametrize("line, why", [
    ("Background: `../shared/reference/tokens.md`.", "shared folder"),
    ("the rules of `shared/reference/cost-control.md`", "shared folder"),
    ("    (cd /work/main && tar -cf - .)", "machine path /work"),
    ("see /home/alice/pmeter/docs", "absolute path /home/alice/pmeter/docs"),
    ("cd ../pmeter-data/run1", "climbs out"),
    ("![map](../../outside.png)", "leads outside"),
    ("[deploy](deploy.md)", "leads outside the repository or nowhere"),  # docs/deploy.md from README
])
def test_each_kind_of_outside_path_is_caught(line, why):
    found = problems([("README.md", 1, line)])
    assert any(why in p for p in found), found


@pytest.mark.parametrize("line", [
    "Pin map in `/etc/pmeter/config.toml` and `/dev/ttyUSB0`, data in /var/lib/pmeter.",
    "`socat pty,raw,link=/tmp/meter645 tcp:HOST:8645` or socket://10.0.0.7:4001",
    "cd build/flash-mpy && MICROPYPATH=.frozen:.:../../tests/fakes ../../.venv/bin/micropython",
    "to `$share/headend/pm/+/evt`, `.../ack`; 0.5883 CNY/kWh; 1000 /s",
    "[the wiring](docs/hardware.md), [up](https://example.com/a/b)",
])
def test_what_the_docs_may_name_passes(line):
    assert problems([("README.md", 1, line)]) == []


def test_draw_wiring_names_its_install_command_when_schemdraw_is_missing():
    code = ("import sys, runpy; sys.modules['schemdraw'] = None; "
            "runpy.run_path(%r, run_name='__main__')" % os.path.join(ROOT, "docs", "img", "draw_wiring.py"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "pip install schemdraw matplotlib" in r.stderr
