#!/usr/bin/env bash
# Run the whole test suite on a fresh machine or an already set-up one.
#
#   bash scripts/test.sh [pytest args...]
#
# 1. creates .venv (with python3) if missing and installs the project with
#    its test extras (skipped when pyproject.toml has not changed since);
# 2. installs the MicroPython board stubs, each into its own folder under
#    .venv/stubs/ (they overwrite each other if installed together);
# 3. installs Debian's mosquitto broker if /usr/sbin/mosquitto is missing,
#    and gcc-multilib and make (the 32-bit firmware build) if missing;
# 4. runs pytest on 2 workers; extra arguments go to pytest.
#
# The exit code is pytest's, except that "no tests collected" (pytest's 5)
# is a failure too: a suite that ran nothing proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
# What an install depends on: the dependency list, and the set of top-level
# packages (an editable install maps the packages that existed when it ran).
INSTALL_STAMP='
import glob, hashlib
h = hashlib.sha256(open("pyproject.toml", "rb").read())
h.update(" ".join(sorted(glob.glob("*/__init__.py"))).encode())
print(h.hexdigest())'
# mypy-micropython.ini's ignore list is tuned to this stubs release.
STUBS_VERSION="1.29.*"

log() { printf '[test.sh] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the install stamp changed: an editable install
# rebuilds a wheel each time, which costs seconds on every run.
stamp="$VENV/.pmeter-test-installed"
want=$("$VENV/bin/python" -c "$INSTALL_STAMP")
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing prepaid-meter[test] into $VENV"
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[test]'
    echo "$want" > "$stamp"
fi

for stubs in rp2-rpi-pico-w esp32 stdlib; do
    target="$VENV/stubs/$stubs"
    if [ "$(cat "$target/.installed" 2>/dev/null)" != "$STUBS_VERSION" ]; then
        log "installing micropython-$stubs-stubs==$STUBS_VERSION into $target"
        rm -rf "$target"
        "$VENV/bin/python" -m pip install -qq --disable-pip-version-check \
            --target "$target" "micropython-$stubs-stubs==$STUBS_VERSION"
        echo "$STUBS_VERSION" > "$target/.installed"
    fi
done

if [ ! -x /usr/sbin/mosquitto ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    log "installing Debian package mosquitto (the tests start their own brokers)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi

# tests/test_firmware.py builds MicroPython's unix port as a 32-bit binary
# (gcc -m32 needs Debian's gcc-multilib).
if ! dpkg-query -W -f='${Status}' gcc-multilib 2>/dev/null | grep -q "ok installed" || ! command -v make >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    log "installing Debian packages gcc-multilib and make (the 32-bit firmware build)"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-multilib make >/dev/null
fi

set +e
"$VENV/bin/python" -m pytest -n 2 -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    log "pytest collected no tests: failing"
    exit 1
fi
exit "$rc"
