"""MicroPython half of bench/tokens_keypad.py (run by it; MICROPYPATH=repo root).

Prints one line per figure: name median_us.
"""

import time

from agent import crypto
from agent.tokens import TokenGuard, keypad, mqtt

METER = "000000000001"
MASTER = bytes(range(32))
T0 = 1700000000
RUNS = 15


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def timed(fn, runs=RUNS):
    out = []
    for _ in range(runs):
        t = time.ticks_us()
        fn()
        out.append(time.ticks_diff(time.ticks_us(), t))
    return median(out)


key = crypto.derive_key(MASTER, METER, 0)
g = TokenGuard(METER, key, 0, bytes(range(16)))
tok = mqtt.encode(mqtt.Token(METER, 1, mqtt.TOPUP, T0, T0 + 600, 0, amount=500000), key)
assert g.check(tok, T0)[0] == "accepted"
print("mqtt_check", timed(lambda: g.check(tok, T0), 50))
print("chain_step", timed(lambda: g.keypad.chain.next(123456789), 200))

# Keypad decode at count 5,000 with the checkpoint table kept up (only the
# token's base entry is brought to K here: decoding reads no other entry).
st = g.keypad
chain = st.chain
value = 50
base = chain.base_for(value)
n = 5002  # the next ADD after last count 5,000
st.last = n - 2
st.tk = st.last - 63
code = chain.first(base)
for _ in range(st.tk):
    code = chain.next(code)
st._put(base, code)
for _ in range(n - st.tk):
    code = chain.next(code)
digits = "%09d" % (code - code % 1000 + base)
d = st.decode(digits)
assert isinstance(d, keypad.Decoded) and d.count == n, d
print("keypad_decode_5000_table", timed(lambda: st.decode(digits), 5))
print("table_work_1000_hashes", timed(lambda: (setattr(st, "tk", 0), setattr(st, "cursor", 0), st.work(1000)), 3))
