"""Keyed hashing, key derivation and authenticated encryption, on both runtimes.

- ``hmac_sha256``: hand-written on ``hashlib.sha256`` because MicroPython has
  no ``hmac`` module; proved equal to CPython's ``hmac`` and to RFC 4231.
- ``hkdf_sha256`` (RFC 5869) and ``derive_key``: the per-meter KDF.  A key
  extracted from one meter derives nothing for another meter (or another
  revision), because each is HKDF of the master key over (purpose, meter id,
  revision).  Proved equal to ``cryptography``'s HKDF.
- ``seal`` / ``unseal`` (alias ``open``): AES-256-CTR then HMAC-SHA256
  (encrypt-then-MAC, 128-bit tag).  CTR is built on single-block AES-ECB
  because board firmware's ``cryptolib`` has ECB but usually not CTR; on
  CPython the same construction runs on ``cryptography`` and is proved
  byte-identical to its CTR mode.

Pure functions: the caller supplies nonces (from ``os.urandom`` in a shell),
so the module never touches I/O.
"""

import hashlib

try:
    import cryptolib  # MicroPython
except ImportError:
    cryptolib = None

BLOCK = 64  # SHA-256 block size, for HMAC padding
TAG_LEN = 16  # bytes of HMAC-SHA256 kept as a tag: 128 bits
NONCE_LEN = 16  # the full AES block is the initial CTR counter
KEY_LEN = 32
_SEAL_VERSION = b"\x01"

_IPAD = bytes(0x36 for _ in range(BLOCK))
_OPAD = bytes(0x5C for _ in range(BLOCK))


def _xor(a, b):
    out = bytearray(len(a))
    for i in range(len(a)):
        out[i] = a[i] ^ b[i]
    return bytes(out)


class HmacKey:
    """An HMAC-SHA256 key with its padded inner/outer blocks precomputed.

    Worth keeping around when one key MACs many messages (token checks):
    saves two XOR passes over 64 bytes per MAC on a slow board.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key):
        key = bytes(key)
        if len(key) > BLOCK:
            key = hashlib.sha256(key).digest()
        key = key + bytes(BLOCK - len(key))
        self._inner = _xor(key, _IPAD)
        self._outer = _xor(key, _OPAD)

    def digest(self, msg):
        """HMAC-SHA256 of ``msg`` (32 bytes)."""
        h = hashlib.sha256(self._inner)
        h.update(msg)
        o = hashlib.sha256(self._outer)
        o.update(h.digest())
        return o.digest()


def hmac_sha256(key, msg):
    """HMAC-SHA256(key, msg) as 32 bytes (RFC 2104)."""
    return HmacKey(key).digest(msg)


def equal(a, b):
    """Compare two byte strings in time independent of where they differ."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


def hkdf_sha256(ikm, salt, info, length):
    """HKDF-SHA256 (RFC 5869): extract with ``salt``, expand with ``info``."""
    if length < 1 or length > 255 * 32:
        raise ValueError("hkdf: length must be 1..8160 bytes, got %d" % length)
    if not salt:
        salt = bytes(32)
    prk = HmacKey(hmac_sha256(salt, ikm))
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = prk.digest(block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


KDF_SALT = b"pmeter/kdf/v1"

# Purposes of derived keys: one master, separate keys per use.
METER = "meter"  # MQTT tokens and commands (rotated by key change)
KEYPAD = "keypad"  # OpenPAYGO keypad secret (16 bytes used)
LINK = "link"  # MQTT payload sealing


def _u32(n):
    return bytes(((n >> 24) & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))


def derive_key(master, meter_id, revision, purpose=METER, length=KEY_LEN):
    """Derive the key of one meter, key revision and purpose from the master.

    ``meter_id`` is the meter's id string (12 digits), ``revision`` an int
    0..2**32-1.  info = purpose NUL meter-id NUL revision(u32 big-endian), so
    no two (purpose, meter, revision) triples share an input.
    """
    if not isinstance(master, (bytes, bytearray)) or len(master) < 16:
        raise ValueError("master key must be at least 16 bytes")
    if not isinstance(meter_id, str) or not meter_id or "\x00" in meter_id:
        raise ValueError("meter id must be a non-empty string, got %r" % (meter_id,))
    if not isinstance(revision, int) or revision < 0 or revision > 0xFFFFFFFF:
        raise ValueError("key revision must be an integer 0..4294967295, got %r" % (revision,))
    info = purpose.encode() + b"\x00" + meter_id.encode() + b"\x00" + _u32(revision)
    return hkdf_sha256(bytes(master), KDF_SALT, info, length)


def subkey(key, label):
    """A key for one use (``label``, a str) from a meter or link key."""
    return hmac_sha256(key, b"pmeter/sub/v1 " + label.encode())


# ------------------------------------------------------------------ AES


class _Ecb:
    """Single-block AES encryption (the only primitive CTR needs)."""

    __slots__ = ("_enc",)

    def __init__(self, key):
        if cryptolib is not None:
            self._enc = cryptolib.aes(bytes(key), 1).encrypt
        else:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor().update

    def block(self, data):
        return self._enc(data)


def _inc128(counter):
    # Big-endian increment of the whole 16-byte block, mod 2**128, like
    # OpenSSL's CTR mode, so both runtimes produce the same stream.
    c = bytearray(counter)
    i = 15
    while i >= 0:
        c[i] = (c[i] + 1) & 0xFF
        if c[i]:
            break
        i -= 1
    return bytes(c)


def ctr_from_ecb(key, nonce, data):
    """AES-CTR keystream XOR ``data``, built on single-block ECB."""
    ecb = _Ecb(key)
    out = bytearray(len(data))
    counter = bytes(nonce)
    pos = 0
    n = len(data)
    while pos < n:
        ks = ecb.block(counter)
        end = min(pos + 16, n)
        for i in range(pos, end):
            out[i] = data[i] ^ ks[i - pos]
        pos = end
        counter = _inc128(counter)
    return bytes(out)


def aes_ctr(key, nonce, data):
    """AES-CTR of ``data`` (encrypt = decrypt); 16-byte ``nonce`` is the counter."""
    if len(nonce) != NONCE_LEN:
        raise ValueError("CTR nonce must be %d bytes" % NONCE_LEN)
    if cryptolib is None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        enc = Cipher(algorithms.AES(bytes(key)), modes.CTR(bytes(nonce))).encryptor()
        return enc.update(bytes(data)) + enc.finalize()
    return ctr_from_ecb(key, nonce, data)


def _u64(n):
    return _u32(n >> 32) + _u32(n & 0xFFFFFFFF)


class SealKey:
    """Encryption and MAC keys split from one 32-byte key."""

    __slots__ = ("enc", "mac")

    def __init__(self, key):
        if len(key) != KEY_LEN:
            raise ValueError("seal key must be %d bytes, got %d" % (KEY_LEN, len(key)))
        self.enc = subkey(key, "seal-enc")
        self.mac = HmacKey(subkey(key, "seal-mac"))


def _seal_tag(sk, aad, nonce, ct):
    # Lengths first so (aad, ciphertext) boundaries cannot be shifted.
    msg = _SEAL_VERSION + _u64(len(aad)) + bytes(aad) + nonce + _u64(len(ct)) + ct
    return sk.mac.digest(msg)[:TAG_LEN]


def seal(key, nonce, plaintext, aad=b""):
    """Encrypt and authenticate: version(1) || nonce(16) || ciphertext || tag(16).

    ``key`` is 32 bytes (or a SealKey); ``nonce`` 16 bytes that must never
    repeat under one key (use os.urandom(16)); ``aad`` is authenticated but
    not encrypted (e.g. the MQTT topic).
    """
    sk = key if isinstance(key, SealKey) else SealKey(key)
    nonce = bytes(nonce)
    if len(nonce) != NONCE_LEN:
        raise ValueError("seal nonce must be %d bytes, got %d" % (NONCE_LEN, len(nonce)))
    ct = aes_ctr(sk.enc, nonce, bytes(plaintext))
    return _SEAL_VERSION + nonce + ct + _seal_tag(sk, aad, nonce, ct)


def unseal(key, sealed, aad=b""):
    """Check and decrypt what ``seal`` produced; ValueError if it was altered."""
    sk = key if isinstance(key, SealKey) else SealKey(key)
    if not isinstance(sealed, (bytes, bytearray, memoryview)):
        raise ValueError("sealed data must be bytes")
    sealed = bytes(sealed)
    if len(sealed) < 1 + NONCE_LEN + TAG_LEN:
        raise ValueError("sealed data too short (%d bytes)" % len(sealed))
    if sealed[0:1] != _SEAL_VERSION:
        raise ValueError("sealed data has unknown version %d" % sealed[0])
    nonce = sealed[1 : 1 + NONCE_LEN]
    ct = sealed[1 + NONCE_LEN : len(sealed) - TAG_LEN]
    tag = sealed[len(sealed) - TAG_LEN :]
    if not equal(_seal_tag(sk, aad, nonce, ct), tag):
        raise ValueError("sealed data failed authentication (wrong key or altered)")
    return aes_ctr(sk.enc, nonce, ct)


open = unseal  # noqa: A001 - the name the link code uses: seal/open
