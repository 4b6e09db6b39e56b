"""The simulator: virtual hardware and a virtual world for meter cores.

The models here (households, pulse sources, latching relays, customers)
run on CPython only; the meter core they drive is the same one that runs on
MicroPython.  Every model is seeded and owns its ``random.Random``
instance, so the same seed gives the same output on every run.
"""

import hashlib


def derive_seed(seed, *parts):
    """A 64-bit int seed for one model, derived from ``seed`` and ``parts``.

    ``derive_seed(42, "household", 7)`` and ``derive_seed(42, "customer", 7)``
    give unrelated streams, so a fleet can be seeded from one number.  Uses
    SHA-256 of the text form, so it does not depend on ``PYTHONHASHSEED``.
    """
    text = ":".join(str(p) for p in (seed,) + parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
