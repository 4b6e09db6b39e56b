"""The link session on both runtimes: sealing, connect/replay, command checks, rejections."""

from agent import results
from agent.link import envelope, topics
from agent.link.session import Session

MID = "000000000042"
OTHER = "000000000043"
LINK_KEY = bytes(range(32))
PREFIX8 = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def _raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError("%s not raised" % exc.__name__)


def _pair():
    keys = envelope.LinkKeys(LINK_KEY)
    s = Session(MID, keys, PREFIX8, boot=3, fw="1.0", key_rev=1)
    return keys, s


def _cmd(keys, n, name="trip", args=None, ref="r1", mid=MID, topic_mid=MID, wall=1000, x=2000, nonce=None):
    t = topics.topic(topic_mid, topics.CMD)
    nonce = nonce or bytes(8) + bytes((0, 0, 0, 0, 0, 0, n >> 8 & 255, n & 255))
    return t, envelope.seal_command(keys, nonce, t, mid, n, name, args or {}, ref, wall, x)


def test_session_connect_birth_state_and_outbox_replay():
    keys, s = _pair()
    assert s.will().payload == b"offline" and s.will().retain
    assert s.event({"seq": 7, "kind": "topup", "data": {}}, 100) == []  # offline: queued only
    assert s.dirty
    s.set_state({"bal": 5}, 100)
    outs = s.connected(1000, 0)
    assert [o.topic.split("/")[2] for o in outs] == ["status", "birth", "state", "evt"]
    assert outs[0].payload == b"online" and outs[0].retain
    birth = envelope.open_uplink(keys, outs[1].topic, outs[1].payload, "birth", MID)
    assert birth["b"]["boot"] == 3 and birth["b"]["last_evt"] == 7 and birth["b"]["pending"] == 1
    state = envelope.open_uplink(keys, outs[2].topic, outs[2].payload, "state", MID)
    assert state["b"] == {"bal": 5, "evt": 7} and outs[2].retain
    evt = envelope.open_uplink(keys, outs[3].topic, outs[3].payload, "evt", MID)
    assert evt["q"] == 1 and evt["b"]["kind"] == "topup"
    s.disconnected()
    outs = s.connected(1001, 10)
    assert outs[-1].seq == 1  # not acked: replayed
    assert s.puback(1, 1002) == [] and s.outbox.pending() == 0


def test_session_accepts_command_and_acks():
    keys, s = _pair()
    s.connected(1000, 0)
    t, p = _cmd(keys, 1, "topup", {"token": b"\x01\x02"}, ref="v-1")
    inbound, outs = s.received(t, p, 1000, 5)
    assert outs == [] and inbound.name == "topup" and inbound.n == 1 and inbound.args["token"] == b"\x01\x02"
    s.commit(inbound.n)
    outs = s.ack("v-1", results.ACCEPTED, 500000, 1000)
    ack = envelope.open_uplink(keys, outs[0].topic, outs[0].payload, "ack", MID)
    assert ack["b"] == {"r": "v-1", "n": 1, "code": "accepted", "bal": 500000}
    inbound, outs = s.received(t, p, 1001, 6)  # redelivered by QoS 1
    assert inbound is None
    acks = [envelope.open_uplink(keys, o.topic, o.payload, "ack", MID) for o in outs if o.topic.endswith("/ack")]
    assert acks[0]["b"]["code"] == results.ALREADY_USED


def test_session_rejects_bad_input_without_state_change():
    keys, s = _pair()
    s.connected(1000, 0)
    good_t, good_p = _cmd(keys, 9)
    other_keys = envelope.LinkKeys(bytes(32))
    cases = [
        (good_t, b"", results.BAD_MAC),
        (good_t, good_p[:-1], results.BAD_MAC),
        (good_t, good_p[:20] + bytes((good_p[20] ^ 1,)) + good_p[21:], results.BAD_MAC),
        (good_t, b"\x00" * 3000, results.MALFORMED),
        (_cmd(other_keys, 1)[0], _cmd(other_keys, 1)[1], results.BAD_MAC),
        (topics.topic(OTHER, "cmd"), good_p, results.WRONG_METER),
        (_cmd(keys, 2, mid=OTHER)[0], _cmd(keys, 2, mid=OTHER)[1], results.WRONG_METER),
        (_cmd(keys, 3, x=10)[0], _cmd(keys, 3, x=10)[1], results.EXPIRED),
        (good_t, envelope.seal(keys.down, bytes(16), good_t, [1, 2]), results.MALFORMED),
        (good_t, envelope.seal(keys.down, bytes(16), good_t, {"m": MID}), results.MALFORMED),
        (good_t, envelope.seal(keys.up, bytes(16), good_t, {"m": MID}), results.BAD_MAC),  # reflected
        ("pm/000000000042/state", good_p, results.MALFORMED),
    ]
    before = s.guard.snapshot()
    mono = 0
    for t, p, code in cases:
        mono += 60000  # past the reject-event rate limit
        inbound, outs = s.received(t, p, 1000, mono)
        assert inbound is None, code
        evts = [envelope.open_uplink(keys, o.topic, o.payload, "evt", MID) for o in outs if o.topic.endswith("/evt")]
        assert evts and evts[-1]["b"]["code"] == code, (code, evts)
        for o in outs:
            s.puback(o.seq, 1000)
    assert s.guard.snapshot() == before
    inbound, _ = s.received(good_t, good_p, 1000, 10, retained=True)
    assert inbound is None
    inbound, _ = s.received(good_t, good_p, 1000, 10)
    assert inbound is not None and inbound.n == 9  # still works after all that


def test_session_reject_events_are_rate_limited():
    keys, s = _pair()
    t = topics.topic(MID, "cmd")
    for i in range(30):
        s.received(t, b"junk", 1000, 100)
    assert s.outbox.pending() == 10 and s.rejected == 30
    s.received(t, b"junk", 1000, 100 + 60000)
    last = s.outbox.items[-1][3]
    assert last["suppressed"] == 20


def test_session_snapshot_restore():
    keys, s = _pair()
    s.event({"seq": 4, "kind": "tamper"}, 1)
    s.commit(12)
    snap = s.snapshot()
    assert not s.dirty
    s2 = Session(MID, keys, PREFIX8)
    s2.restore(snap)
    assert s2.guard.check(12) == results.ALREADY_USED and s2.outbox.pending() == 1 and s2.last_event_seq == 4
    _raises(ValueError, s2.restore, {"outbox": None})


# Fixed vector made on CPython (cryptography): MicroPython (cryptolib) must
# produce the same bytes and open them.
VECTOR_HEX = (
    "01000102030405060708090a0b0c0d0e0fac7bf279c7a694b9aab8f669bec1bb5050985b8ae7b2281756fcd2cf317e42a7560801042ff2fde3aa65c05a0b2e6345d50b1dcb9692b3ba581621a70303119c7aa2494d1bf4ad4780bc9b61f6b69d8bfc47066e4b6e"
)


def test_envelope_fixed_vector():
    keys = envelope.LinkKeys(LINK_KEY)
    t = topics.topic(MID, topics.CMD)
    p = envelope.seal_command(keys, bytes(range(16)), t, MID, 77, "topup", {"token": b"abc"}, "ref-77", 1700000000, 1700086400)
    if VECTOR_HEX is not None:
        import binascii
        assert binascii.hexlify(p).decode() == VECTOR_HEX
    s = Session(MID, keys, PREFIX8)
    inbound, _ = s.received(t, p, 1700000000, 0)
    assert inbound.name == "topup" and inbound.n == 77 and inbound.ref == "ref-77"
