"""The store on the real file system of whichever runtime runs this (CPython or MicroPython)."""

from agent import store as S
from agent.codec import msgpack
from portable.scratch import scratch_dir

MID = "000000000005"


def test_store_commit_load_fallback():
    d = scratch_dir("ab")
    s = S.Slots(S.OsFS(), d, MID)
    s.commit({"n": 1, "b": b"\x00\xff"})
    s.commit({"n": 2, "b": b"\x01"})
    cands, findings, had = S.Slots(S.OsFS(), d, MID).load()
    assert had and not findings
    assert [c.value["n"] for c in cands] == [2, 1]
    path = d + "/state." + cands[0].slot
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-3])
    cands, findings, had = S.Slots(S.OsFS(), d, MID).load()
    assert [c.value["n"] for c in cands] == [1]
    assert findings[0].problem == "truncated"


def test_store_file_bytes_are_fixed():
    # same bytes on both runtimes (CRC, big-endian fields, canonical payload)
    raw = S.encode_file(MID, 258, msgpack.pack({"b": 1, "a": [True]}))
    assert raw[:6] == b"PMST\x01\x0c"
    assert raw[18:26] == b"\x00\x00\x00\x00\x00\x00\x01\x02"
    assert S.decode_file(raw, MID)[0] == 258
    assert S.crc32(b"123456789") == 0xCBF43926


def test_store_deltas_roundtrip():
    d = scratch_dir("delta")
    st = S.Store(S.OsFS(), d, MID)
    v = {"log": ["entry %d" % i for i in range(60)], "e": 0}
    st.commit(v, True)
    for e in range(1, 4):
        v["e"] = e
        v["log"] = ["new %d" % e] + v["log"][:-1]
        st.commit(v)
    assert st.full_writes == 1
    loads, findings, had = S.Store(S.OsFS(), d, MID).load()
    assert msgpack.pack(loads[0].value) == msgpack.pack(v)
