"""MQTT tokens and the TokenGuard: format, MAC, replay window, fuzzing."""

import hashlib
import hmac
import os
import sys

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import crypto, results
from agent.codec import msgpack as codec
from agent.tokens import TokenGuard, key_change_args, mqtt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "portable"))

import test_tokens_vectors as vectors  # noqa: E402

METER = vectors.METER
T0 = vectors.T0
KEY0 = crypto.derive_key(vectors.MASTER, METER, 0)


def guard():
    return vectors.guard()


def test_token_vector_matches_reference_msgpack_and_hmac():
    body = msgpack.packb(
        {"a": 500000, "i": T0, "k": "topup", "m": METER, "r": 0, "s": 7, "v": 1, "x": T0 + 86400}, use_bin_type=True
    )
    mac_key = hmac.new(KEY0, b"pmeter/sub/v1 token-mac", hashlib.sha256).digest()
    tag = hmac.new(mac_key, body, hashlib.sha256).digest()[:16]
    assert (body + tag).hex() == vectors.TOPUP_HEX


def test_non_canonical_body_with_valid_mac_is_malformed():
    # Same value, keys in another order: a second byte string for one token.
    body = msgpack.packb({"v": 1, "a": 5, "i": T0, "k": "topup", "m": METER, "r": 0, "s": 9, "x": T0 + 60})
    tag = crypto.hmac_sha256(mqtt.token_key(KEY0), body)[:16]
    assert guard().check(body + tag, T0)[0] == results.MALFORMED


def _mac(body_obj):
    body = codec.pack(body_obj)
    return body + crypto.hmac_sha256(mqtt.token_key(KEY0), body)[:16]


def test_authentic_but_invalid_fields_are_malformed():
    base = {"a": 5, "i": T0, "k": "topup", "m": METER, "r": 0, "s": 9, "v": 1, "x": T0 + 60}
    assert guard().check(_mac(base), T0)[0] == results.ACCEPTED
    bad = [
        dict(base, a=0),
        dict(base, a=-5),
        dict(base, a=True),
        dict(base, s=0),
        dict(base, x=T0 - 1),
        dict(base, v=2),
        dict(base, k="gift"),
        dict(base, z=1),
        {k: v for k, v in base.items() if k != "a"},
        dict(base, m=""),
        dict(base, r=1 << 32),
        [1, 2, 3],
    ]
    for b in bad:
        assert guard().check(_mac(b), T0)[0] == results.MALFORMED, b


def test_commands():
    g = guard()

    def cmd(seq, name, args):
        t = mqtt.Token(METER, seq, mqtt.COMMAND, T0, T0 + 60, 0, command=name, args=args)
        return mqtt.encode(t, KEY0)

    code, tok = g.check(cmd(1, "set_mode", {"mode": "prepaid"}), T0)
    assert code == results.ACCEPTED and tok.command == "set_mode" and tok.args == {"mode": "prepaid"}
    assert g.check(cmd(2, "self_destruct", {}), T0)[0] == results.UNKNOWN_COMMAND
    assert g.check(cmd(3, "set_clock", {"wall": "noon"}), T0)[0] == results.BAD_ARGUMENT
    assert g.check(cmd(3, "set_clock", {"wall": T0}), T0)[0] == results.ACCEPTED
    new = crypto.derive_key(vectors.MASTER, METER, 1)
    # Key change: not to an older/equal revision, not with a tampered key.
    assert g.check(cmd(4, "key_change", key_change_args(KEY0, METER, 0, new, bytes(16))), T0)[0] == \
        results.BAD_ARGUMENT
    args = key_change_args(KEY0, METER, 1, new, bytes(16))
    tampered = dict(args, key=args["key"][:-1] + bytes([args["key"][-1] ^ 1]))
    assert g.check(cmd(4, "key_change", tampered), T0)[0] == results.BAD_ARGUMENT
    assert g.check(cmd(4, "key_change", dict(args, revision=2)), T0)[0] == results.BAD_ARGUMENT
    assert g.revision == 0 and g.window.high == 0  # checks change nothing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=60))
def test_window_matches_a_model(seqs):
    g = guard()
    used = set()
    high = 0
    for s in seqs:
        code, tok = g.check(vectors.topup(s), T0)
        if s in used:
            want = results.TOO_OLD if s <= high - mqtt.WINDOW else results.ALREADY_USED
        elif s <= high - mqtt.WINDOW:
            want = results.TOO_OLD
        else:
            want = results.ACCEPTED
        assert code == want, (s, high)
        if code == results.ACCEPTED:
            assert g.accept(tok) == results.ACCEPTED
            used.add(s)
            high = max(high, s)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_never_accept(data):
    code, tok = guard().check(data, T0)
    assert code in results.ALL and code != results.ACCEPTED


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_tokens_never_crash_never_accept(data):
    good = vectors.topup(data.draw(st.integers(1, 1000)))
    op = data.draw(st.sampled_from(["flip", "cut", "insert", "replace"]))
    b = bytearray(good)
    if op == "flip":
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= data.draw(st.integers(1, 255))
    elif op == "cut":
        i = data.draw(st.integers(0, len(b) - 1))
        j = data.draw(st.integers(i + 1, len(b)))
        del b[i:j]
    elif op == "insert":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        i = data.draw(st.integers(0, len(b) - 1))
        b[i:] = data.draw(st.binary(max_size=40))
    if bytes(b) == good:
        return
    g = guard()
    code, _ = g.check(bytes(b), T0)
    assert code != results.ACCEPTED
    assert g.window.high == 0


def test_snapshot_round_trips_through_the_canonical_codec():
    g = guard()
    for s in (5, 3, 9):
        g.accept(g.check(vectors.topup(s), T0)[1])
    chain = g.keypad.chain
    g.accept(g.check_keypad(chain.token(7, 2), T0, 0)[1])
    g.check_keypad("000000001" if chain.token(1, 4) != "000000001" else "000000002", T0, 0)
    blob = codec.pack(g.snapshot())
    assert len(blob) < 4500
    g2 = guard()
    g2.restore(codec.unpack(blob))
    assert g2.snapshot() == g.snapshot()
    assert g2.check(vectors.topup(3), T0)[0] == results.ALREADY_USED
    assert g2.check_keypad(chain.token(7, 2), T0, 0)[0] == results.ALREADY_USED


def test_restore_rejects_snapshots_that_do_not_fit_and_changes_nothing():
    g = guard()
    g.accept(g.check(vectors.topup(5), T0)[1])
    snap = g.snapshot()
    other = TokenGuard("000000000002", KEY0, 0, crypto.derive_key(vectors.MASTER, METER, 0, crypto.KEYPAD, 16))
    bad = [
        None,
        {},
        dict(snap, v=2),
        dict(snap, ky=b"short"),
        dict(snap, w={"h": -1, "w": 0}),
        dict(snap, lo={"f": "x", "r": 0}),
        dict(snap, kp=None),
        dict(snap, kp=dict(snap["kp"], s=1)),
    ]
    for b in bad:
        fresh = guard()
        before = fresh.snapshot()
        try:
            fresh.restore(b)
        except ValueError:
            assert fresh.snapshot() == before
            continue
        raise AssertionError("accepted %r" % (b,))
    try:
        other.restore(snap)
    except ValueError as e:
        assert "meter" in str(e)
    else:
        raise AssertionError("snapshot of another meter accepted")


def test_portable_token_vectors_on_cpython():
    from test_crypto import _run_portable

    assert _run_portable("test_tokens_vectors", "cpython") >= 9
