"""The A/B store on a real directory: corruption of every byte range, other meters, versions."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from agent import store as S
from agent.codec import msgpack

MID = "000000000007"


def fresh(tmp_path, name="state"):
    return S.Slots(S.OsFS(), str(tmp_path), MID, name)


def test_store_roundtrip_alternates_slots(tmp_path):
    s = fresh(tmp_path)
    assert s.load() == ([], [], False)
    s.commit({"n": 1})
    s.commit({"n": 2})
    s.commit({"n": 3})
    cands, findings, had = fresh(tmp_path).load()
    assert had and not findings
    assert [c.value["n"] for c in cands] == [3, 2]
    assert sorted(os.listdir(tmp_path)) == ["state.a", "state.b"]
    assert s.writes == 3 and s.bytes_written == sum(len(S.encode_file(MID, i, msgpack.pack({"n": i}))) for i in (1, 2, 3))


def test_store_adopted_slot_is_never_overwritten(tmp_path):
    s = fresh(tmp_path)
    s.commit({"n": 1})
    s.commit({"n": 2})
    s2 = fresh(tmp_path)
    cands, _, _ = s2.load()
    older = cands[1]
    s2.adopt(older)  # e.g. the newest did not restore
    s2.commit({"n": 3})
    cands, _, _ = fresh(tmp_path).load()
    assert [c.value["n"] for c in cands] == [3, 1]
    assert cands[0].seq == 3  # sequence keeps rising past the skipped copy


def _files(tmp_path):
    s = fresh(tmp_path)
    s.commit({"n": 1, "pad": "x" * 40})
    s.commit({"n": 2, "pad": "y" * 40})
    return s


def _load(tmp_path):
    return fresh(tmp_path).load()


REGIONS = [(0, 4, "garbage"), (4, 5, "wrong_version"), (5, 6, None), (6, 18, "bad_crc"),
           (18, 26, "bad_crc"), (26, 30, None), (30, 70, "bad_crc")]


@pytest.mark.parametrize("start, end, problem", REGIONS)
def test_store_corrupting_each_byte_range_falls_back_to_other_copy(tmp_path, start, end, problem):
    _files(tmp_path)
    newest = tmp_path / "state.b"
    data = bytearray(newest.read_bytes())
    for i in range(start, min(end, len(data))):
        data[i] ^= 0x5A
    newest.write_bytes(bytes(data))
    cands, findings, _ = _load(tmp_path)
    assert [c.value["n"] for c in cands] == [1]
    assert len(findings) == 1 and findings[0].file == "state.b"
    if problem is not None:
        assert findings[0].problem == problem, findings
    else:
        assert findings[0].problem in ("truncated", "bad_length", "bad_crc"), findings


@pytest.mark.parametrize("cut", [0, 1, 5, 10, 29, 40, -4, -1])
def test_store_truncated_newest_falls_back(tmp_path, cut):
    _files(tmp_path)
    newest = tmp_path / "state.b"
    data = newest.read_bytes()
    newest.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    cands, findings, _ = _load(tmp_path)
    assert [c.value["n"] for c in cands] == [1]
    assert findings[0].problem == ("empty" if cut == 0 else "truncated"), findings
    assert "state.b" == findings[0].file


def test_store_other_meter_and_future_version_named(tmp_path):
    _files(tmp_path)
    (tmp_path / "state.a").write_bytes(S.encode_file("999999999999", 9, msgpack.pack(1)))
    data = bytearray(S.encode_file(MID, 10, msgpack.pack(1)))
    data[4] = 2
    (tmp_path / "state.b").write_bytes(bytes(data))
    cands, findings, had = _load(tmp_path)
    assert cands == [] and had
    text = sorted("%s %s %s" % (f.file, f.problem, f.detail) for f in findings)
    assert "999999999999" in text[0] and text[0].startswith("state.a other_meter")
    assert text[1].startswith("state.b wrong_version") and "version 2" in text[1]


def test_store_undecodable_payload_with_good_crc(tmp_path):
    (tmp_path / "state.a").write_bytes(S.encode_file(MID, 1, b"\xc1"))
    cands, findings, _ = _load(tmp_path)
    assert cands == [] and findings[0].problem == "undecodable"


def test_store_leftover_temp_is_reported_not_used(tmp_path):
    _files(tmp_path)
    (tmp_path / "state.tmp").write_bytes(b"PMST\x01")
    cands, findings, _ = _load(tmp_path)
    assert [c.value["n"] for c in cands] == [2, 1]
    assert [f.file for f in findings] == ["state.tmp"]


def test_store_oversized_file_refused(tmp_path):
    (tmp_path / "state.a").write_bytes(b"\0" * (S.MAX_FILE + 10))
    cands, findings, _ = _load(tmp_path)
    assert cands == [] and findings[0].problem == "too_large"


def test_store_commit_failure_is_storeerror(tmp_path):
    s = S.Slots(S.OsFS(), str(tmp_path / "missing-dir"), MID)
    with pytest.raises(S.StoreError, match="commit"):
        s.commit(1)
    with pytest.raises(S.StoreError, match="float"):
        fresh(tmp_path).commit(1.5)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=120))
def test_store_any_bytes_in_slots_never_crash_load(tmp_path_factory, a, b):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "state.a").write_bytes(a)
    (d / "state.b").write_bytes(S.encode_file(MID, 3, msgpack.pack([1]))[: len(b)] + b)
    cands, findings, had = S.Slots(S.OsFS(), str(d), MID).load()
    assert had and len(cands) + len(findings) >= 2 - (not a) * 0


# ------------------------------------------------------------- deltas


def _rand_snap(rng, n):
    refs = sorted(rng.sample(range(100), n))
    return {"count": n, "log": [[i, "k", {"v": i}] for i in range(n, max(0, n - 10), -1)], "fixed": list(range(50)),
            "flag": n % 2 == 0, "name": "m" * (n % 5), "refs": refs, "grow": list(range(n))}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30))
def test_store_diff_patch_roundtrip(a, b):
    import random

    rng = random.Random(a * 31 + b)
    old, new = _rand_snap(rng, a), _rand_snap(rng, b)
    ops = S.diff(old, new)
    assert msgpack.pack(S.patch(msgpack.unpack(msgpack.pack(old)), ops)) == msgpack.pack(new)


def test_store_diff_tells_true_from_one_and_uses_front_shift():
    assert S.diff([1, 2], [True, 2]) == [["set", [0], True]]
    ops = S.diff({"h": [3, 2, 1]}, {"h": [5, 4, 3, 2]})
    assert ops == [["splice", ["h"], 0, 0, [5, 4], 4]]
    # a sorted set growing at the end or in the middle
    assert S.diff(list(range(50)), list(range(51))) == [["splice", [], 50, 50, [50], 51]]
    assert S.diff([1, 2, 4, 5], [1, 2, 3, 4, 5]) == [["splice", [], 2, 2, [3], 5]]


@pytest.mark.parametrize("ops", [[["set", [9], 1]], [["splice", [0], 0, 0, [1], 99]], [["splice", [0], 1, 0, [], 1]], [["zap", [], 1]], [["set", ["x", 1], 2]], "junk", [[1]]])
def test_store_patch_rejects_misfits_with_valueerror(ops):
    with pytest.raises(ValueError):
        S.patch([[1, 2], {"a": 1}], ops)


def test_store_deltas_small_and_recover_newest(tmp_path):
    st_ = S.Store(S.OsFS(), str(tmp_path), MID)
    big = {"log": ["record %d" % i for i in range(200)], "energy": 0}
    st_.commit(big, full=True)
    for e in range(1, 6):
        big["energy"] = e
        n = st_.commit(big)
        assert n < 80  # a checkpoint costs tens of bytes, not the whole state
    assert st_.full_writes == 1 and st_.writes == 6
    loads, findings, had = S.Store(S.OsFS(), str(tmp_path), MID).load()
    assert loads[0].value["energy"] == 5 and loads[0].delta is not None
    assert loads[1].value["energy"] == 4
    assert loads[2].value["energy"] == 0 and loads[2].delta is None
    # a corrupt newest checkpoint falls back to the previous one
    newest = tmp_path / ("ckpt." + loads[0].delta.slot)
    newest.write_bytes(newest.read_bytes()[:-1])
    loads, findings, _ = S.Store(S.OsFS(), str(tmp_path), MID).load()
    assert loads[0].value["energy"] == 4 and findings[0].problem == "truncated"


def test_store_large_change_writes_a_new_base(tmp_path):
    st_ = S.Store(S.OsFS(), str(tmp_path), MID)
    st_.commit({"log": ["a"] * 100}, full=True)
    st_.commit({"log": ["b %d" % i for i in range(100)]})
    assert st_.full_writes == 2
    loads, _, _ = S.Store(S.OsFS(), str(tmp_path), MID).load()
    assert loads[0].value["log"][5] == "b 5"


def test_running_out_of_memory_while_loading_is_not_taken_for_a_damaged_file(tmp_path, monkeypatch):
    """A MemoryError while reading must not make the device boot an older state."""
    fs = S.OsFS()
    S.Store(fs, str(tmp_path), MID).commit({"v": 1, "n": 1}, full=True)

    def no_ram(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(fs, "read", no_ram)
    with pytest.raises(MemoryError):
        S.Store(fs, str(tmp_path), MID).load()
