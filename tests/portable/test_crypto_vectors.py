"""Fixed crypto vectors that must hold on CPython and on MicroPython.

HMAC: RFC 4231; HKDF: RFC 5869 case 1; CTR: NIST SP 800-38A F.5.5 (AES-256);
KDF and seal outputs were made by CPython's hmac / cryptography (the
pytest file tests/test_crypto.py re-derives them with those libraries).
"""

import binascii

from agent import crypto


def h(s):
    return binascii.unhexlify(s.replace(" ", ""))


RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data."
        b" The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]

MASTER = bytes(range(32))
METER = "000000000001"
KDF = [
    (METER, 0, crypto.METER, 32, "807e391ff83b2c397e3f1e6481729a12e741baef375e2d99870ed311920787bf"),
    (METER, 1, crypto.METER, 32, "d00cf8f96d85fa1a24329f5984316745101fadb3e4b156744fabef6349258b96"),
    ("000000000002", 0, crypto.METER, 32, "44de0f71487d24f59ec21fdd40e6851e4ec462d969f42ceaa67d1a4b1cc57912"),
    (METER, 0, crypto.KEYPAD, 16, "918ab5d3d690537ac287d15b4112b712"),
]

SEAL = (
    "01000102030405060708090a0b0c0d0e0f8cd783d15c09700a159f8c8f5c06a3656953fb8f08ffca68763218"
)


def test_hmac_rfc4231():
    for key, msg, want in RFC4231:
        assert crypto.hmac_sha256(key, msg) == h(want)


def test_hkdf_rfc5869_case1():
    okm = crypto.hkdf_sha256(b"\x0b" * 22, bytes(range(13)), h("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm == h(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_derive_key_vectors():
    for meter, rev, purpose, n, want in KDF:
        assert crypto.derive_key(MASTER, meter, rev, purpose, n) == h(want)


def test_derive_key_rejects_bad_input():
    for args in ((b"short", METER, 0), (MASTER, "", 0), (MASTER, METER, -1), (MASTER, METER, 1 << 32)):
        try:
            crypto.derive_key(*args)
        except ValueError:
            continue
        assert False, "accepted %r" % (args,)


def test_ctr_nist_aes256():
    key = h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    iv = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    pt = h(
        "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
    )
    ct = h(
        "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6"
    )
    assert crypto.ctr_from_ecb(key, iv, pt) == ct
    assert crypto.aes_ctr(key, iv, pt) == ct
    assert crypto.aes_ctr(key, iv, ct[:37]) == pt[:37]


def test_ctr_counter_wraps_like_openssl():
    key = bytes(32)
    a = crypto.ctr_from_ecb(key, b"\xff" * 16, bytes(32))
    b = crypto.ctr_from_ecb(key, bytes(16), bytes(16))
    assert a[16:] == b


def test_seal_vector_and_roundtrip():
    k = crypto.derive_key(MASTER, METER, 0)
    sealed = crypto.seal(k, bytes(range(16)), b"hello meter", b"topic/x")
    assert sealed == h(SEAL)
    assert crypto.unseal(k, sealed, b"topic/x") == b"hello meter"
    assert crypto.open(k, sealed, b"topic/x") == b"hello meter"


def test_unseal_rejects_tampering():
    k = crypto.derive_key(MASTER, METER, 0)
    sealed = h(SEAL)
    bad = []
    for i in range(len(sealed)):
        b = bytearray(sealed)
        b[i] ^= 1
        bad.append(bytes(b))
    bad.append(sealed[:-1])
    bad.append(b"")
    bad.append(sealed + b"\x00")
    for data in bad:
        try:
            crypto.unseal(k, data, b"topic/x")
        except ValueError:
            continue
        assert False, "altered data accepted"
    for aad, key in ((b"topic/y", k), (b"topic/x", crypto.derive_key(MASTER, METER, 1))):
        try:
            crypto.unseal(key, sealed, aad)
        except ValueError:
            continue
        assert False, "wrong aad or key accepted"


def test_equal():
    assert crypto.equal(b"abc", b"abc")
    assert not crypto.equal(b"abc", b"abd")
    assert not crypto.equal(b"abc", b"ab")
