"""Hardware backends: one interface (``hw.base.Backend``), three implementations.

- ``pi``: Raspberry Pi GPIO through the RPi.GPIO API (``hw.pi``);
- ``mpy``: MicroPython boards, ESP32 and RP2040 (``hw.mpy``);
- ``sim``: virtual relay and load for desktop runs (``hw.sim``).

Backends are imported only when asked for, so a board never loads the Pi
code and a desktop never needs ``machine``.
"""

NAMES = ("pi", "mpy", "sim")


def hw_section(cfg):
    """The validated ``[hw]`` table from a whole config or a bare section."""
    from hw.config import validate_hw

    if cfg is None:
        cfg = {}
    if "hw" in cfg and isinstance(cfg["hw"], dict):
        cfg = cfg["hw"]
    return validate_hw(cfg)


def make_backend(name, cfg, **options):
    """Build the backend called ``name`` ("pi", "mpy" or "sim").

    ``cfg`` is the whole configuration (a dict with an ``hw`` table, and
    ``meter.constant`` for the simulator's pulse rate) or just the ``hw``
    table.  ``options`` go to the backend's constructor (tests inject a
    fake GPIO module or a virtual clock this way; the simulator takes
    ``load_w``, ``load``, ``relay``, ``clock``, ``feedback``).  Raises
    ``agent.config.ConfigError`` naming the key for a bad config and
    ``ValueError`` for an unknown name.
    """
    section = hw_section(cfg)
    if name == "pi":
        from hw.pi import PiBackend

        return PiBackend(section, **options)
    if name == "mpy":
        from hw.mpy import MpyBackend

        return MpyBackend(section, **options)
    if name == "sim":
        from hw.sim import SimBackend

        if "constant" not in options and cfg and isinstance(cfg.get("meter"), dict) and "constant" in cfg["meter"]:
            options["constant"] = cfg["meter"]["constant"]
        return SimBackend(section, **options)
    raise ValueError("unknown hardware backend %r: choose one of %s" % (name, ", ".join(NAMES)))
