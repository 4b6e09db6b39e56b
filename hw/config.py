"""The ``[hw]`` configuration section: pin map and hardware timings.

Every pin is optional in the schema because the simulated backend needs
none; a real backend (``hw.pi``, ``hw.mpy``) then insists on the pins it
cannot work without (pulse input, both relay coils) and names the key.
Pin numbers are BCM GPIO numbers on a Raspberry Pi and GPIO numbers on
an ESP32 or RP2040.  Runs on MicroPython (the board validates its own
config at boot).
"""

from agent.config import BOOL, INT, STR, TABLE, ConfigError, Field, between, one_of, validate

# Keys holding a pin number: no two may name the same pin.
PIN_KEYS = (
    "pulse_pin",
    "relay_set_pin",
    "relay_reset_pin",
    "feedback_pin",
    "button_pin",
    "led_pin",
    "buzzer_pin",
    "power_fail_pin",
    "tamper_pin",
    "rs485_de_pin",
)


def _pin(doc):
    return Field(INT, default=None, check=between(0, 63), doc=doc)


def _level(default, doc):
    return Field(INT, default=default, check=between(0, 1), doc=doc)


HW = {
    "pulse_pin": _pin("GPIO of the meter's pulse output (S0 or optical head), through an opto-coupler."),
    "pulse_active_low": Field(BOOL, default=True, doc="true when a pulse pulls the pin low (opto transistor to ground)."),
    "pulse_pull": Field(STR, default="up", check=one_of("up", "down", "off"), doc="internal pull resistor on the pulse input."),
    "pulse_counter": Field(BOOL, default=False, doc="count pulses with the ESP32 hardware counter (machine.Counter) instead of pin interrupts."),
    "pulse_counter_filter_ns": Field(INT, default=10000, check=between(0, 12787), doc="hardware counter glitch filter (ESP32 PCNT: at most 1023 APB cycles, about 12.8 us)."),
    "relay_set_pin": _pin("GPIO driving the latching relay's set (close, supply on) coil driver."),
    "relay_reset_pin": _pin("GPIO driving the latching relay's reset (open, supply off) coil driver."),
    "coil_active_low": Field(BOOL, default=False, doc="true for driver boards that energise a coil when the pin is low."),
    "coil_min_ms": Field(INT, default=10, check=between(1, 1000), doc="shortest coil pulse accepted; shorter requests are refused."),
    "coil_max_ms": Field(INT, default=250, check=between(1, 2000), doc="longest coil pulse accepted; a coil left on overheats."),
    "coil_gap_ms": Field(INT, default=200, check=between(0, 60000), doc="minimum time between the end of one coil pulse and the start of the next."),
    "feedback_pin": _pin("GPIO reading the relay's auxiliary (feedback) contact; omit if not wired."),
    "feedback_closed_level": _level(0, "pin level that means the main contacts are closed."),
    "button_pin": _pin("GPIO of the customer's push button (to ground, pulled up)."),
    "button_hold_ms": Field(INT, default=3000, check=between(0, 10000), doc="how long the button must be held to count as a press (0: on press)."),
    "led_pin": _pin("GPIO of the alarm LED (alarm level 1)."),
    "buzzer_pin": _pin("GPIO of the active buzzer (alarm level 2)."),
    "buzzer_on_ms": Field(INT, default=200, check=between(1, 10000), doc="buzzer beep length while alarm 2 is on."),
    "buzzer_period_ms": Field(INT, default=5000, check=between(1, 600000), doc="time from one beep to the next while alarm 2 is on."),
    "power_fail_pin": _pin("GPIO of the supply-voltage detector (goes to power_fail_level when the supply is failing)."),
    "power_fail_level": _level(0, "pin level that means the supply is failing."),
    "tamper_pin": _pin("GPIO of the cover switch."),
    "tamper_open_level": _level(1, "pin level that means the cover is open."),
    "rs485_de_pin": _pin(
        "GPIO driving the RS-485 transceiver's DE and /RE (tied): high while the DL/T 645 slave sends a frame on "
        "dlt645.device, low (receive) otherwise; omit for an automatic-direction transceiver or a USB adapter."
    ),
    "debounce_ms": Field(INT, default=30, check=between(0, 1000), doc="a button, cover or feedback level must hold this long to count."),
    "queue_len": Field(INT, default=256, check=between(16, 4096), doc="interrupt event queue length (edges held until the main loop drains them)."),
    "watchdog_ms": Field(INT, default=8000, check=between(1000, 8388), doc="hardware watchdog timeout on a MicroPython board (RP2040: at most 8388)."),
    "poll_ms": Field(INT, default=20, check=between(1, 1000), doc="main loop period: how often queued events are drained."),
}


def _check_section(section):
    """Table-wide rules: no shared pins, sane coil timing."""
    seen = {}
    for key in PIN_KEYS:
        pin = section.get(key)
        if pin is None:
            continue
        if pin in seen:
            return "pin %d is used twice (by %s and %s); give each signal its own GPIO" % (pin, seen[pin], key)
        seen[pin] = key
    if section.get("coil_min_ms", 0) > section.get("coil_max_ms", 0):
        return "coil_min_ms (%d) is above coil_max_ms (%d)" % (section["coil_min_ms"], section["coil_max_ms"])
    return None


def _check_table(value):
    # The table-level check runs after the nested schema filled defaults.
    return _check_section(value)


SCHEMA = {
    "hw": Field(TABLE, default={}, schema=HW, check=_check_table, doc="hardware backend: pin map and timings."),
}


def validate_hw(section):
    """Validate a raw ``[hw]`` table; return it with defaults filled in.

    Raises ``agent.config.ConfigError`` naming the key (``hw.<key>``).
    """
    return validate({"hw": section}, SCHEMA)["hw"]


def require(section, keys, backend):
    """Raise ConfigError unless every key in ``keys`` has a value."""
    for key in keys:
        if section.get(key) is None:
            raise ConfigError("hw." + key, "is required for the %s backend" % backend)
