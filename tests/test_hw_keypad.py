"""hw/keypad.py: the * ... # key protocol, and real byte streams (a pty
opened with pyserial, a FIFO) feeding the token guard and a LinkedMeter."""

import os
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import results
from agent.tokens import TokenGuard
from agent.tokens import keypad as kp
from hw.keypad import KeyCollector, open_keypad


def test_star_starts_hash_ends_and_line_ends_too():
    c = KeyCollector()
    assert c.feed(b"*123456789#", 0) == ["123456789"]
    assert c.feed(b"987654321\n", 10) == ["987654321"]  # no * needed; Enter ends it
    assert c.feed(b"*12*34", 20) == [] and c.feed(b"56#", 30) == ["3456"]  # * restarts the entry
    assert c.feed(b"*1 2 3\r\n", 40) == ["123"]  # CRLF: one code, spaces ignored
    assert c.feed(b"*#", 50) == [] and c.rejected[-1] == "empty"
    assert c.feed("*42#*43#", 60) == ["42", "43"]  # str works too


def test_timeout_clears_a_half_typed_entry():
    c = KeyCollector(timeout_ms=1000)
    c.feed(b"*1234", 0)
    c.tick(1001)
    assert c.rejected == ["timeout"]
    assert c.feed(b"5678#", 1002) == ["5678"]
    c.feed(b"*99", 2000)
    assert c.feed(b"1#", 3500) == ["1"]  # late key: the old digits are gone


def test_too_long_and_noise_drop_the_whole_entry():
    c = KeyCollector()
    assert c.feed(b"*" + b"1" * 21 + b"#", 0) == []
    assert "longer" in c.rejected[-1]
    assert c.feed(b"*1234x5678#", 0) == [] and "unexpected" in c.rejected[-1]
    assert c.feed(b"*" + b"4" * 20 + b"#", 0) == ["4" * 20]  # the longest OpenPAYGO token fits
    assert c.feed(b"\xff\x00junk*11#", 0) == ["11"]  # noise outside an entry is ignored


def test_bad_settings_are_refused():
    for kw in ({"max_digits": 0}, {"timeout_ms": 0}, {"max_digits": "9"}):
        with pytest.raises(ValueError):
            KeyCollector(**kw)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=64), st.lists(st.integers(0, 10**6), max_size=4))
def test_any_bytes_never_raise_and_codes_are_bounded_digits(data, times):
    c = KeyCollector(timeout_ms=500)
    t = 0
    for i, chunk in enumerate([data[k::4] for k in range(4)]):
        t += times[i] if i < len(times) else 0
        for code in c.feed(chunk, t):
            assert code.isdigit() and 1 <= len(code) <= 20


def _poll_until(src, n, timeout_s=3.0):
    codes = []
    end = time.monotonic() + timeout_s
    while len(codes) < n and time.monotonic() < end:
        codes.extend(src.poll(int(time.monotonic() * 1000)))
        time.sleep(0.01)
    return codes


def test_serial_keypad_over_a_pty_feeds_the_token_guard():
    key = bytes(range(16))
    guard = TokenGuard("000000000001", bytes(32), 0, key)
    chain = kp.Chain(key)
    master, slave = os.openpty()
    src = open_keypad(os.ttyname(slave), baud=9600)
    try:
        tok = chain.token(25, 2)
        restricted = chain.token(30, 4, restricted=True)
        # The microcontroller writes a key at a time, with gaps.
        for ch in "*" + tok + "#":
            os.write(master, ch.encode())
        os.write(master, ("*" + restricted + "\r\n").encode())
        codes = _poll_until(src, 2)
        assert codes == [tok, restricted]
        for digits, amount in zip(codes, (25, 30)):
            code, t = guard.check_keypad(digits, 0, 0)
            assert code == results.ACCEPTED and t.amount == amount * 10000
            assert guard.accept(t) == results.ACCEPTED
        assert guard.check_keypad(tok, 0, 0)[0] == results.ALREADY_USED
    finally:
        src.close()
        os.close(master)
        os.close(slave)


def test_fifo_keypad_survives_writers_coming_and_going(tmp_path):
    path = str(tmp_path / "keypad")
    os.mkfifo(path)
    src = open_keypad(path)
    try:
        assert src.poll(0) == []  # no writer yet: nothing, no block
        for code in ("111", "222"):
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, ("*%s#" % code).encode())
            os.close(fd)  # the writer goes away: no EOF, the source stays open
            assert _poll_until(src, 1) == [code]
        assert not src.eof
    finally:
        src.close()


def test_unopenable_device_names_it():
    with pytest.raises(ValueError) as e:
        open_keypad("/nonexistent/ttyKEYPAD")
    assert "/nonexistent/ttyKEYPAD" in str(e.value)


def test_pty_keypad_tops_up_a_linked_meter(tmp_path):
    from test_agent_linked import MASTER, MID, W, Rig
    from headend import keys as hkeys

    r = Rig(tmp_path)
    chain = kp.Chain(hkeys.keypad_key(MASTER, MID), r.cfg["tokens"]["keypad_starting_code"])
    master, slave = os.openpty()
    src = open_keypad(os.ttyname(slave))
    try:
        os.write(master, ("*%s#" % chain.token(20, 2)).encode())
        (digits,) = _poll_until(src, 1)
        code, hw, outs = r.linked.keypad(digits, W, 1000)
        assert code == results.ACCEPTED and r.linked.meter.balance == 200000
    finally:
        src.close()
        os.close(master)
        os.close(slave)


def test_keys_split_at_random_points_give_the_same_codes():
    rnd = random.Random(3)
    stream = "".join("*%d#" % rnd.randrange(10**9) for _ in range(50))
    whole = KeyCollector().feed(stream, 0)
    c = KeyCollector()
    got = []
    i = 0
    while i < len(stream):
        j = i + rnd.randrange(1, 7)
        got.extend(c.feed(stream[i:j], i))
        i = j
    assert got == whole and len(got) == 50
