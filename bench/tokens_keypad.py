"""Keypad and MQTT token benchmarks: ours against the openpaygo reference.

    .venv/bin/python bench/tokens_keypad.py [--quick]

Prints medians.  Keypad decode of the next ADD token (count + 2) on a
device whose last accepted count is 0, 5,000 and 1,000,000, for our
decoder (checkpoint table kept up, and lagging: never advanced) and the
openpaygo 0.6.3 reference in the same run; MQTT token verification
(TokenGuard.check) on CPython and on the MicroPython unix port.
``--quick`` skips count 1,000,000 (the reference needs ~1M hashes per
decode there, i.e. tens of seconds).

ours(invalid) is a wrong entry with the same value digits (the whole
window is searched).  Our table-kept figures bring only the tested token's base entry to the
table count K = last - 63 (decoding reads no other entry); a device keeps
all 1,000 entries there with TokenGuard.work(), whose cost is printed too.
"""

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import openpaygo  # noqa: E402

from agent import crypto  # noqa: E402
from agent.tokens import TokenGuard, keypad, mqtt  # noqa: E402

KEY = bytes(range(16))
VALUE = 50


def median_ms(fn, runs):
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    return statistics.median(xs)


def keypad_case(last, runs):
    """Decode the next ADD token (count last + 2) of a device whose last count is ``last``."""
    chain = keypad.Chain(KEY)
    base = chain.base_for(VALUE)
    count = last + 2
    k = max(0, last - 63)
    code = chain.first(base)
    at_k = code
    for i in range(count):
        if i == k:
            at_k = code
        code = chain.next(code)
    if count == k:
        at_k = code
    digits = "%09d" % (code - code % 1000 + base)

    kept = keypad.KeypadState(KEY)
    kept.last, kept.tk = last, k
    kept._put(base, at_k)
    d = kept.decode(digits)
    assert isinstance(d, keypad.Decoded) and d.count == count and d.value == VALUE, d

    ours = median_ms(lambda: kept.decode(digits), runs)
    wrong = digits[:-4] + str((int(digits[-4]) + 1) % 10) + digits[-3:]  # same value, wrong code
    assert kept.decode(wrong) == keypad.INVALID
    invalid = median_ms(lambda: kept.decode(wrong), runs)
    ref_runs = runs if count < 100000 else 3
    ref = median_ms(
        lambda: openpaygo.decode_token(
            token=digits, secret_key=KEY.hex(), count=last, used_counts=[last], starting_code=chain.start
        ),
        ref_runs,
    )
    lag_runs = runs if count < 100000 else 1
    lagging = keypad.KeypadState(KEY)
    lagging.last = last
    lag = median_ms(lambda: lagging.decode(digits), lag_runs)
    return ours, invalid, lag, ref


def mqtt_case(runs):
    master = bytes(range(32))
    meter = "000000000001"
    key = crypto.derive_key(master, meter, 0)
    g = TokenGuard(meter, key, 0)
    tok = mqtt.encode(mqtt.Token(meter, 1, mqtt.TOPUP, 1700000000, 1700000600, 0, amount=500000), key)
    assert g.check(tok, 1700000000)[0] == "accepted"
    return median_ms(lambda: g.check(tok, 1700000000), runs)


def micropython():
    env = dict(os.environ, MICROPYPATH=ROOT)
    out = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "micropython"), "-X", "heapsize=128K",
         os.path.join(ROOT, "bench", "tokens_micropython.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if out.returncode:
        return {"error": out.stderr.strip()[-200:]}
    return {line.split()[0]: int(line.split()[1]) for line in out.stdout.split("\n") if line.strip()}


def main():
    quick = "--quick" in sys.argv
    counts = [0, 5000] if quick else [0, 5000, 1000000]
    print("keypad decode, median ms (CPython %s)" % sys.version.split()[0])
    print("%10s %12s %14s %14s %12s" % ("last count", "ours(table)", "ours(invalid)", "ours(lagging)", "openpaygo"))
    for c in counts:
        ours, invalid, lag, ref = keypad_case(c, 15)
        print("%10d %12.2f %14.2f %14.2f %12.2f" % (c, ours, invalid, lag, ref))
    st = keypad.KeypadState(KEY)
    st.last = 10**6
    work = median_ms(lambda: (setattr(st, "tk", 0), setattr(st, "cursor", 0), st.work(1000)), 5)
    print("table upkeep per count (1000 hashes): %.1f ms" % work)
    print("MQTT token check (TokenGuard.check), median ms: CPython %.3f" % mqtt_case(500))
    mp = micropython()
    if "error" in mp:
        print("MicroPython run failed:", mp["error"])
    else:
        print("MicroPython unix port (-X heapsize=128K), median us:")
        for k in sorted(mp):
            print("  %-28s %d" % (k, mp[k]))


if __name__ == "__main__":
    main()
