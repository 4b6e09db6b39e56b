"""A private, empty directory for portable checks that use the real file system.

A fixed path such as /tmp/pmagent-portable races when two test runs (xdist
workers, or two checkouts on one machine) use it at once, and MicroPython
has no tempfile module.  The caller names a parent directory it owns in the
environment variable PMETER_TEST_TMP (the pytest callers pass their
tmp_path); without it a parent with a random name is made under /tmp.
"""

import os

_parent = []  # the parent chosen by this process: every check of one run shares it


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:  # exists already
        pass


def scratch_dir(tag):
    """An empty directory ``<parent>/<tag>`` that no other test run uses."""
    if not _parent:
        parent = os.getenv("PMETER_TEST_TMP")
        if not parent:
            parent = "/tmp/pmeter-test-" + "".join("%02x" % b for b in os.urandom(6))
            _mkdir(parent)
        _parent.append(parent)
    d = _parent[0] + "/" + tag
    _mkdir(d)
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    return d
