"""Energy registers kept exactly, in units of 1/C Wh.

For a meter constant C imp/kWh one pulse is 1000/C Wh, which is rarely a
whole number (3200 imp/kWh: 0.3125 Wh).  Counting in units of 1/C Wh makes
every pulse exactly 1000 units, so registers never round and any batching
of the same pulses gives identical values; Wh are derived by division.
"""

RATE_COUNT = 4  # sharp, peak, flat, valley


class Registers:
    """Total active import and one register per time-of-use rate."""

    __slots__ = ("constant", "total", "rates")

    def __init__(self, constant):
        self.constant = constant
        self.total = 0
        self.rates = [0] * RATE_COUNT

    def add_pulses(self, count, rate):
        """Add ``count`` pulses at ``rate``; returns the energy units added."""
        units = count * 1000
        self.total += units
        self.rates[rate] += units
        return units

    @property
    def total_wh(self):
        return self.total // self.constant

    def rate_wh(self):
        """Per-rate energy in Wh (sharp, peak, flat, valley)."""
        c = self.constant
        return [u // c for u in self.rates]

    def snapshot(self):
        return [self.total, list(self.rates)]

    def restore(self, snap):
        self.total = snap[0]
        self.rates = list(snap[1])
