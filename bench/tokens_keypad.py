"""Keypad and MQTT token benchmarks: ours against the openpaygo reference.

    .venv/bin/python bench/tokens_keypad.py [--quick]

Prints medians.  Keypad decode of the next ADD token (count + 2) on a
device whose last accepted count is 0, 5,000 and 1,000,000, for our
decoder (checkpoint table kept up, and lagging: never advanced) and the
openpaygo 0.6.3 reference in the same run; MQTT token verification
(TokenGuard.check) on CPython and on the MicroPython unix port.
``--quick`` skips count 1,000,000 (the reference needs ~1M hashes per
decode there, i.e. tens of seconds).

Both token lengths: standard (9 digits) and extended (12 digits).
ours(kept) starts from a checkpoint at K = last - 63: for standard tokens
the table entry of the token's base (only that entry is brought to K here;
decoding reads no other; a device keeps all 1,000 there with
TokenGuard.work(), whose cost is printed too), for extended tokens the mark
an earlier accepted token of the same value left.  ours(invalid) is a wrong
entry with the same value digits (the whole window is searched).
ours(no ckpt) has no checkpoint for the base: the table never advanced, or
an extended value never accepted before (walked from count 0).
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
VALUE_EXT = 123456


def median_ms(fn, runs):
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    return statistics.median(xs)


def keypad_case(last, runs, extended=False):
    """Decode the next ADD token (count last + 2) of a device whose last count is ``last``.

    Returns (ours with its checkpoint kept up, a wrong entry, no checkpoint
    for the token's base, the reference), each a median in ms.  Standard:
    the checkpoint is the table entry; extended: the mark an earlier
    accepted token of the same value left (advanced by work()).
    """
    chain = keypad.Chain(KEY, None, extended)
    value = VALUE_EXT if extended else VALUE
    base = chain.base_for(value)
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
    m = chain.modulus()
    digits = ("%012d" if extended else "%09d") % (code - code % m + base)

    kept = keypad.KeypadState(KEY)
    kept.last = last
    if extended:
        kept.tk = k
        if k > 0:
            kept.marks = [[1, base, k, at_k]]
    else:
        kept.tk = k
        kept._put(base, at_k)
    d = kept.decode(digits)
    assert isinstance(d, keypad.Decoded) and d.count == count and d.value == value, d

    ours = median_ms(lambda: kept.decode(digits), runs)
    i = len(digits) - (7 if extended else 4)
    wrong = digits[:i] + str((int(digits[i]) + 1) % 10) + digits[i + 1 :]  # same value, wrong code
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
    print("%9s %10s %12s %14s %16s %12s" % ("token", "last count", "ours(kept)", "ours(invalid)",
                                             "ours(no ckpt)", "openpaygo"))
    for extended in (False, True):
        for c in counts:
            ours, invalid, lag, ref = keypad_case(c, 15, extended)
            print("%9s %10d %12.2f %14.2f %16.2f %12.2f" % ("extended" if extended else "standard", c, ours,
                                                           invalid, lag, ref))
            sys.stdout.flush()
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
