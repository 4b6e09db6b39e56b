"""Token vectors and guard behaviour that must hold on CPython and MicroPython.

SipHash outputs come from the ``siphash`` package, keypad tokens from the
``openpaygo`` package and the MQTT token bytes from the reference
``msgpack`` + ``hmac`` (tests/test_tokens_guard.py re-derives them).
"""

import binascii

from agent import crypto, results
from agent.tokens import TokenGuard, key_change_args, keypad, mqtt
from agent.tokens.siphash import siphash24

SIP_KEY = bytes(range(16))
SIPHASH = [
    (0, 8246050544436514353),
    (1, 8428550223375919101),
    (7, 12322412585038238007),
    (8, 10661697595502699618),
    (9, 11385243752477615280),
    (15, 11613035633349379557),
    (16, 4551675220716592091),
    (17, 7609651759622801300),
    (63, 10775480364379293042),
]

# (key hex, starting code, extended, openpaygo type, value, count, token)
OPAYGO = [
    ("3c4d1ab8657a27171105668cea4accfd", 464799333, False, 1, 532, 2, "712285865"),
    ("895c46c72cd31b4336f1ed06d4a4ce42", 239284848, False, 1, 168, 4, "097187016"),
    ("4f4aa0debbf5dad9e15f16d89b56ab63", 236892575, False, 1, 182, 12, "300300757"),
    ("3f794716f1efd1ddf18cd74c01e84a92", 747620518, False, 3, None, 33, "489783516"),
    ("e14fd9c38231696c99496e73293b4e42", 506807097, False, 4, None, 1, "559842096"),
    ("140b76a0ff478488a578b35725ffac32", 959691914, True, 2, 957907, 1, "442787649821"),
    ("33a2a170462f5b6fbf9652a28e32e752", 162902119, True, 1, 742562, 2, "524218644681"),
    ("3a47c3959ddc3c1f54ef2d4a75060a5b", 226574689, True, 1, 939448, 32, "113407514137"),
]
KINDS = {1: keypad.ADD, 2: keypad.SET, 3: keypad.DISABLE_PAYG, 4: keypad.COUNTER_SYNC}

MASTER = bytes(range(32))
METER = "000000000001"
TOPUP_HEX = (
    "88a161ce0007a120a169ce6553f100a16ba5746f707570a16dac303030303030303030303031"
    "a17200a17307a17601a178ce65554280dc0885dd19ecdd98c296b7c316e4dd70"
)
T0 = 1700000000


def test_siphash_vectors():
    for n, want in SIPHASH:
        assert siphash24(SIP_KEY, bytes(range(n))) == want


def test_openpaygo_starting_codes_and_tokens():
    for key, start, ext, typ, value, count, token in OPAYGO:
        chain = keypad.Chain(binascii.unhexlify(key), None, ext)
        assert chain.start == start
        raw = keypad.raw_for(KINDS[typ], value)
        assert chain.token(raw, count) == token


def test_openpaygo_decode_vectors():
    for key, start, ext, typ, value, count, token in OPAYGO:
        st = keypad.KeypadState(binascii.unhexlify(key))
        d = st.decode(token)
        assert isinstance(d, keypad.Decoded), (token, d)
        assert d.kind == KINDS[typ] and d.count == count
        if value is not None:
            assert d.value == value
        st.accept(d)
        assert st.decode(token) in (keypad.USED, keypad.OLD)


def test_keypad_malformed_never_raises():
    st = keypad.KeypadState(SIP_KEY)
    for bad in ("", "12345678", "1234567890", "12345678a", "１２３４５６７８９", None, 123456789, b"123456789"):
        assert st.decode(bad) == keypad.MALFORMED


def guard(rev=0):
    key = crypto.derive_key(MASTER, METER, rev)
    return TokenGuard(METER, key, rev, crypto.derive_key(MASTER, METER, 0, crypto.KEYPAD, 16))


def topup(seq, amount=500000, meter=METER, rev=0, issued=T0, expires=T0 + 86400, key_rev=None):
    key = crypto.derive_key(MASTER, meter, rev if key_rev is None else key_rev)
    t = mqtt.Token(meter, seq, mqtt.TOPUP, issued, expires, rev, amount=amount)
    return mqtt.encode(t, key)


def test_mqtt_token_vector():
    assert topup(7) == binascii.unhexlify(TOPUP_HEX)
    g = guard()
    code, tok = g.check(binascii.unhexlify(TOPUP_HEX), T0 + 60)
    assert code == results.ACCEPTED
    assert tok.amount == 500000 and tok.seq == 7 and tok.ref == "mqtt:7"


def test_mqtt_replay_window():
    g = guard()
    for seq in (10, 5, 74):
        code, tok = g.check(topup(seq), T0)
        assert code == results.ACCEPTED, (seq, code)
        assert g.accept(tok) == results.ACCEPTED
        assert g.check(topup(seq), T0)[0] == results.ALREADY_USED
        assert g.accept(tok) == results.ALREADY_USED
    assert g.check(topup(10), T0)[0] == results.TOO_OLD  # 74 - 64
    assert g.check(topup(11), T0)[0] == results.ACCEPTED
    # A jump of more than MAX_JUMP is refused: it would make every later token too_old.
    assert g.check(topup(2 ** 64 - 1), T0)[0] == results.REFUSED
    assert g.check(topup(74 + mqtt.MAX_JUMP), T0)[0] == results.ACCEPTED
    assert g.check(topup(75 + mqtt.MAX_JUMP), T0)[0] == results.REFUSED


def test_mqtt_rejections():
    g = guard()
    good = topup(1)
    assert g.check(topup(1, meter="000000000002"), T0)[0] == results.WRONG_METER
    assert g.check(topup(1, rev=1), T0)[0] == results.WRONG_KEY_REVISION
    assert g.check(topup(1, expires=T0 - 1, issued=T0 - 10), T0)[0] == results.EXPIRED
    forged = bytearray(good)
    forged[-1] ^= 1
    assert g.check(bytes(forged), T0)[0] == results.BAD_MAC
    # A valid token for meter 2 with the meter id rewritten to ours: MAC fails.
    other = topup(1, key_rev=0, meter="000000000002")
    moved = other.replace(b"000000000002", METER.encode())
    assert g.check(moved, T0)[0] == results.BAD_MAC
    for n in range(len(good)):
        assert g.check(good[:n], T0)[0] in (results.MALFORMED, results.BAD_MAC)
    assert g.check(b"", T0)[0] == results.MALFORMED
    assert g.check("text", T0)[0] == results.MALFORMED
    assert g.window.high == 0


def test_key_change_keeps_replay_memory():
    g = guard()
    g.accept(g.check(topup(3), T0)[1])
    old = crypto.derive_key(MASTER, METER, 0)
    new = crypto.derive_key(MASTER, METER, 1)
    args = key_change_args(old, METER, 1, new, bytes(16))
    cmd = mqtt.encode(mqtt.Token(METER, 4, mqtt.COMMAND, T0, T0 + 60, 0, command="key_change", args=args), old)
    code, tok = g.check(cmd, T0)
    assert code == results.ACCEPTED
    assert g.accept(tok) == results.ACCEPTED
    assert g.revision == 1
    assert g.check(topup(5), T0)[0] == results.WRONG_KEY_REVISION
    assert g.check(topup(3, rev=1), T0)[0] == results.ALREADY_USED
    assert g.check(topup(5, rev=1), T0)[0] == results.ACCEPTED
    # The snapshot carries the new key and the window.
    g2 = guard()
    g2.restore(g.snapshot())
    assert g2.revision == 1 and g2.check(topup(4, rev=1), T0)[0] == results.ALREADY_USED


def test_keypad_through_guard_and_lockout_survives_restore():
    g = guard()
    chain = g.keypad.chain
    tok = chain.token(50, 2)
    code, kt = g.check_keypad(tok, T0, 1000)
    assert code == results.ACCEPTED and kt.kind == "topup" and kt.amount == 500000
    assert g.accept(kt) == results.ACCEPTED
    assert g.check_keypad(tok, T0, 1000)[0] == results.ALREADY_USED
    wrong = "123456789" if tok != "123456789" else "123456780"
    for _ in range(3):
        assert g.check_keypad(wrong, T0, 2000)[0] == results.BAD_MAC
    assert g.check_keypad(chain.token(10, 4), T0, 2000)[0] == results.LOCKED_OUT
    snap = g.snapshot()
    g2 = guard()
    g2.restore(snap)
    # After a power cycle the monotonic clock restarts: the minute still runs.
    assert g2.check_keypad(chain.token(10, 4), T0, 5)[0] == results.LOCKED_OUT
    assert g2.check_keypad(chain.token(10, 4), T0, 5 + 59999)[0] == results.LOCKED_OUT
    code, kt = g2.check_keypad(chain.token(10, 4), T0, 5 + 60000)
    assert code == results.ACCEPTED and kt.amount == 100000
