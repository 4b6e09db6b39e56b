"""Head-end side of recharge tokens (CPython only): keys, vending, ledger, batch.

- ``keys``: the master key file and per-meter key derivation for provisioning;
- ``ledger``: SQLite record of every token issued (sequences never reused);
- ``vend``: MQTT token bytes and OpenPAYGO keypad digits;
- ``batch``: one command to many meters from a CSV, with a result table;
- ``cli``: the ``pmeter keys|vend|token|batch`` subcommands;
- ``service``: ``pmeter headend serve``, over ``delivery`` (the queue of
  top-ups and commands), ``notify`` (webhook and log), ``settlement``
  (daily bills from the meters' freezes), ``figures`` (operators'
  figures), ``batches`` (batches of the API) and ``api`` (HTTP).
"""

MONEY_SCALE = 10000


def parse_amount(text):
    """Parse a money amount like "50.00" into minor units (500000), no floats.

    Raises ValueError with a message for the user on negatives, more than 4
    decimals, empty or non-numeric text.
    """
    if not isinstance(text, str):
        raise ValueError("amount must be text like 50.00")
    s = text.strip()
    if not s:
        raise ValueError("amount is empty")
    if s[0] in "+-":
        raise ValueError("amount %r: must be a positive number without a sign" % text)
    whole, dot, frac = s.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and (not frac.isdigit() or not frac.isascii())):
        raise ValueError("amount %r: expected digits with an optional decimal point, like 50.00" % text)
    if len(frac) > 4:
        raise ValueError("amount %r: at most 4 decimals (the meter counts 1/10000 of a unit)" % text)
    if len(whole) > 12:
        raise ValueError("amount %r: too large" % text)
    return int(whole) * MONEY_SCALE + int((frac + "0000")[:4])


def format_amount(minor):
    """Minor units as a decimal string with 4 decimals ("50.0000")."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    return "%s%d.%04d" % (sign, minor // MONEY_SCALE, minor % MONEY_SCALE)


def check_meter_id(meter_id):
    """Return ``meter_id`` if it is 12 ASCII digits, else raise ValueError."""
    if not isinstance(meter_id, str) or len(meter_id) != 12 or not meter_id.isdigit() or not meter_id.isascii():
        raise ValueError("meter id %r: must be exactly 12 digits" % (meter_id,))
    return meter_id
