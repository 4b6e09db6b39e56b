"""Draw the wiring diagrams of docs/hardware.md as PNG files.

    .venv/bin/pip install schemdraw matplotlib
    .venv/bin/python docs/img/draw_wiring.py

schemdraw (on matplotlib) draws the circuit blocks, which are the same for
a Raspberry Pi and a Pico W / ESP32 (all 3.3 V logic); matplotlib draws the
two board wiring maps.  Pin numbers match hw/systemd/config.example.toml
(Pi, BCM) and mpy/config.example.json (Pico W); tests/test_hw_pinmap.py
reads PI_PINS and PICO_PINS below and fails when they disagree.
"""

import os
import sys

try:
    import matplotlib
    import schemdraw
except ImportError as exc:
    sys.exit("draw_wiring.py: %s; install the drawing tools with: .venv/bin/pip install schemdraw matplotlib" % exc)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import schemdraw.elements as elm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
schemdraw.config(fontsize=13, lw=1.6)


def save(d, name):
    path = os.path.join(HERE, name)
    d.save(path, dpi=110)
    print("wrote", path)


def term(d, text, side="right", length=1.2, size=11):
    """A wire ending in an open terminal with its label beyond it."""
    d += (elm.Line().right(length) if side == "right" else elm.Line().left(length))
    d += elm.Dot(open=True)
    d += elm.Label().at(d.here).label(text, loc="right" if side == "right" else "left", fontsize=size, halign="left" if side == "right" else "right", ofst=0.25)


def note(d, xy, text, size=11):
    d += elm.Label().at(xy).label(text, fontsize=size)


def relay_driver():
    """Two low-side NPN drivers for the set and reset coils, with flyback diodes."""
    with schemdraw.Drawing(show=False) as d:
        note(d, (5.5, 9.6), "Latching relay driver: one low-side switch per coil (SET left, RESET right)", 14)
        for x, coil, gpio in ((0, "SET\ncoil", "GPIO\nrelay_set_pin"), (11, "RESET\ncoil", "GPIO\nrelay_reset_pin")):
            d += elm.Vdd().at((x + 4, 8.5)).label("+12 V relay supply")
            d += elm.Line().down(0.6).at((x + 4, 8.5))
            top = d.here
            d += elm.Inductor2(loops=3).down(2.2)
            bot = d.here
            note(d, (x + 3.0, top.y - 1.1), coil, 12)
            d += elm.Line().right(1.6).at(top)
            d += elm.Diode().down(2.2).reverse()
            note(d, (x + 6.6, top.y - 1.1), "1N4148\nflyback", 11)
            d += elm.Line().left(1.6)
            d += elm.Line().down(0.6).at(bot)
            d += (q := elm.BjtNpn(circle=True).anchor("collector"))
            note(d, (q.collector.x + 1.9, q.center.y), "BC337 /\n2N2222", 11)
            d += elm.Ground().at(q.emitter)
            d += elm.Resistor().left(2.4).at(q.base)
            note(d, (q.base.x - 1.2, q.base.y + 0.55), "1 kΩ", 11)
            b = d.here
            d += elm.Dot()
            term(d, gpio, side="left", length=0.9)
            d += elm.Resistor().down(1.8).at(b)
            note(d, (b.x - 1.6, b.y - 0.9), "10 kΩ\npull-down", 10)
            d += elm.Ground()
        note(d, (8.0, 0.4),
             "Pull-downs hold both transistors off while a GPIO floats (reset, boot, crash): no coil pulses by accident.\n"
             "Software pulses one coil at a time (hw.coil_min_ms..coil_max_ms, hw.coil_gap_ms apart).\n"
             "Single-coil bipolar relays: an H-bridge (e.g. DRV8871, inputs pulled low) replaces the two transistors.", 11)
        save(d, "relay_driver.png")


def pulse_input():
    """Opto-isolated S0 (or optical head) pulse input."""
    with schemdraw.Drawing(show=False) as d:
        note(d, (4.5, 4.4), "Pulse input: the meter's S0 output through an opto-coupler", 14)
        d += (opto := elm.Optocoupler().at((4, 0)))
        note(d, ((opto.anode.x + opto.collector.x) / 2, opto.cathode.y - 0.9), "PC817", 12)
        d += elm.Resistor().left(2.2).at(opto.anode)
        note(d, (opto.anode.x - 1.1, opto.anode.y + 0.55), "1 kΩ", 11)
        term(d, "S0+ (meter; S0 supply 5-24 V)", side="left", length=0.5)
        d += elm.Line().left(2.7).at(opto.cathode)
        d += elm.Dot(open=True)
        note(d, (d.here.x - 1.4, d.here.y), "S0− (meter)", 11)
        d += elm.Line().right(1.6).at(opto.collector)
        c = d.here
        d += elm.Dot()
        term(d, "GPIO pulse_pin\n(active low)", length=1.4, size=12)
        d += elm.Resistor().up(1.8).at(c)
        note(d, (c.x - 1.9, c.y + 0.9), "10 kΩ to 3.3 V\n(or internal pull-up)", 10)
        d += elm.Vdd().label("3.3 V")
        d += elm.Line().right(0.6).at(opto.emitter)
        d += elm.Ground()
        note(d, (4.5, -3.3),
             "Meter side and logic side share nothing, not even ground.\n"
             "Optical head instead: a photo-transistor (e.g. TCRT5000) on the meter's LED, same GPIO wiring.\n"
             "Pulses are filtered in software: pulse.min_high_ms, min_low_ms, min_gap_ms.", 11)
        save(d, "pulse_input.png")


def contacts_and_power_fail():
    """Relay feedback contact, button, cover switch; power-fail detector."""
    with schemdraw.Drawing(show=False) as d:
        note(d, (8, 5.6), "Contacts (feedback, button, cover) and power-fail detect", 14)
        for x, name, sw in ((0, "feedback_pin", "relay aux.\ncontact"), (5, "button_pin", "push\nbutton"), (10, "tamper_pin", "cover switch\n(closed = on)")):
            d += elm.Vdd().at((x, 4)).label("3.3 V")
            d += elm.Resistor().down(1.6)
            note(d, (x - 0.9, 3.2), "10 kΩ", 11)
            n = d.here
            d += elm.Dot()
            term(d, name, length=0.8)
            d += elm.Switch().down(1.6).at(n)
            note(d, (x - 1.3, n.y - 0.8), sw, 10)
            d += elm.Ground()
        x = 16
        d += elm.Vdd().at((x, 4)).label("12 V rail (before the hold-up diode)")
        d += elm.Resistor().down(1.6)
        note(d, (x - 0.9, 3.2), "33 kΩ", 11)
        n = d.here
        d += elm.Dot()
        d += elm.Line().right(1.6)
        z = d.here
        d += elm.Dot()
        term(d, "power_fail_pin\n(low = failing)", length=0.8)
        d += elm.Resistor().down(1.6).at(n)
        note(d, (x - 0.9, n.y - 0.8), "10 kΩ", 11)
        d += elm.Ground()
        d += elm.Zener().down(1.6).at(z).reverse()
        note(d, (z.x + 1.0, z.y - 0.8), "3.3 V clamp", 10)
        d += elm.Ground()
        note(d, (9, -1.9),
             "When the mains goes, the 12 V rail collapses first; a 470-1000 µF hold-up capacitor behind a diode keeps the\n"
             "3.3 V regulator up for the tens of ms the agent needs to commit its state (PowerFail event).\n"
             "Contacts are debounced in software (hw.debounce_ms); the button must be held for hw.button_hold_ms.", 11)
        save(d, "contacts_power_fail.png")


def rs485():
    """MAX3485 RS-485 transceiver to the meter's RS-485 terminals."""
    with schemdraw.Drawing(show=False) as d:
        note(d, (3.2, 6.3), "RS-485 (DL/T 645) transceiver, 3.3 V", 14)
        ic = elm.Ic(
            pins=[
                elm.IcPin(name="RO", side="left"),
                elm.IcPin(name="RE", side="left", invert=True),
                elm.IcPin(name="DE", side="left"),
                elm.IcPin(name="DI", side="left"),
                elm.IcPin(name="A", side="right"),
                elm.IcPin(name="B", side="right"),
                elm.IcPin(name="VCC", side="top"),
                elm.IcPin(name="GND", side="bot"),
            ],
            edgepadW=1.2,
            pinspacing=1.0,
        ).label("MAX3485", loc="center", ofst=(0.6, -1.1))
        d += ic
        d += elm.Line().left(2.2).at(ic.RO)
        d += elm.Dot(open=True)
        note(d, (d.here.x - 1.3, d.here.y), "UART RX", 11)
        d += elm.Line().left(2.2).at(ic.DI)
        d += elm.Dot(open=True)
        note(d, (d.here.x - 1.3, d.here.y), "UART TX", 11)
        d += elm.Line().left(0.7).at(ic.RE)
        re = d.here
        d += elm.Line().left(0.7).at(ic.DE)
        de = d.here
        d += elm.Line().at(re).to(de)
        d += elm.Dot().at(de)
        d += elm.Line().left(1.5).at(de)
        d += elm.Dot(open=True)
        note(d, (d.here.x - 1.9, d.here.y), "GPIO\nrs485_de_pin\n(or an auto-\ndirection module)", 10)
        d += elm.Line().right(3.2).at(ic.A)
        d += elm.Dot(open=True)
        note(d, (d.here.x + 1.6, d.here.y), "A (meter 485+)", 11)
        d += elm.Line().right(3.2).at(ic.B)
        d += elm.Dot(open=True)
        note(d, (d.here.x + 1.6, d.here.y), "B (meter 485−)", 11)
        rx = ic.A.x + 1.6
        d += elm.Dot().at((rx, ic.A.y))
        d += elm.Dot().at((rx, ic.B.y))
        d += elm.Resistor().at((rx, ic.B.y)).to((rx, ic.A.y))
        note(d, (rx + 0.1, (ic.A.y + ic.B.y) / 2 - 1.2), "120 Ω, at the\nline end only", 10)
        d += elm.Vdd().at(ic.VCC).label("3.3 V")
        d += elm.Ground().at(ic.GND)
        note(d, (3.2, -2.4), "DL/T 645 runs at 2400 baud 8E1 by default; the meter's RS-485 port is already isolated.", 11)
        save(d, "rs485.png")


def board_map(name, title, pins, note):
    """A wiring map: board pins on the left, circuit blocks on the right."""
    fig, ax = plt.subplots(figsize=(11, 0.62 * len(pins) + 2.2), dpi=110)
    ax.set_xlim(0, 11)
    n = len(pins)
    ax.set_ylim(-1.6, n + 0.9)
    ax.axis("off")
    ax.text(5.5, n + 0.5, title, ha="center", va="center", fontsize=15, weight="bold")
    ax.add_patch(plt.Rectangle((0.2, -0.4), 3.2, n, fill=True, color="#e8f0e0", ec="#336633", lw=1.5))
    ax.text(1.8, n - 0.1, name, ha="center", fontsize=12, weight="bold", color="#224422")
    blocks = {}
    for i, (pin, signal, block, colour) in enumerate(pins):
        y = n - 1 - i
        ax.text(0.35, y, pin, va="center", fontsize=11, family="monospace")
        ax.plot([3.4, 6.3], [y, y], color=colour, lw=2.2)
        ax.plot(3.4, y, "o", color=colour)
        ax.text(3.55, y + 0.13, signal, fontsize=10, color="#222222")
        blocks.setdefault(block, []).append(y)
    for block, ys in blocks.items():
        lo, hi = min(ys) - 0.35, max(ys) + 0.35
        ax.add_patch(plt.Rectangle((6.3, lo), 4.4, hi - lo, fill=True, color="#f4f4fb", ec="#333366", lw=1.3))
        ax.text(8.5, (lo + hi) / 2, block, ha="center", va="center", fontsize=10.5)
    ax.text(0.2, -1.2, note, fontsize=9.5, va="center", color="#333333")
    path = os.path.join(HERE, name.lower().replace(" ", "_").replace("/", "_") + ".png")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    print("wrote", path)


PWR, PULSE, RELAY, IN, OUT, BUS = "#aa3333", "#2266aa", "#cc7700", "#338833", "#886699", "#444444"

PI_PINS = [
    ("pin 1   3V3", "3.3 V", "pull-ups, opto collector, MAX3485 VCC", PWR),
    ("pin 6   GND", "ground", "logic ground (not the meter's S0−)", BUS),
    ("pin 11  GPIO17", "pulse_pin", "pulse input (opto, active low)", PULSE),
    ("pin 16  GPIO23", "relay_set_pin", "SET coil driver (NPN + 10k pull-down)", RELAY),
    ("pin 18  GPIO24", "relay_reset_pin", "RESET coil driver (NPN + 10k pull-down)", RELAY),
    ("pin 22  GPIO25", "feedback_pin", "relay auxiliary contact", IN),
    ("pin 29  GPIO5", "button_pin", "push button", IN),
    ("pin 31  GPIO6", "power_fail_pin", "power-fail divider (12 V rail)", IN),
    ("pin 37  GPIO26", "tamper_pin", "cover switch", IN),
    ("pin 32  GPIO12", "led_pin", "alarm LED (330 Ω)", OUT),
    ("pin 33  GPIO13", "buzzer_pin", "active buzzer via NPN", OUT),
    ("pin 8   GPIO14 TXD", "UART TX", "MAX3485 DI", BUS),
    ("pin 10  GPIO15 RXD", "UART RX", "MAX3485 RO", BUS),
    ("pin 12  GPIO18", "rs485_de_pin", "MAX3485 DE + /RE (high = send)", BUS),
]

PICO_PINS = [
    ("pin 36  3V3(OUT)", "3.3 V", "pull-ups, opto collector, MAX3485 VCC", PWR),
    ("pin 38  GND", "ground", "logic ground (not the meter's S0−)", BUS),
    ("pin 4   GP2", "pulse_pin", "pulse input (opto, active low)", PULSE),
    ("pin 21  GP16", "relay_set_pin", "SET coil driver (NPN + 10k pull-down)", RELAY),
    ("pin 22  GP17", "relay_reset_pin", "RESET coil driver (NPN + 10k pull-down)", RELAY),
    ("pin 16  GP12", "feedback_pin", "relay auxiliary contact", IN),
    ("pin 19  GP14", "button_pin", "push button", IN),
    ("pin 15  GP11", "power_fail_pin", "power-fail divider (12 V rail)", IN),
    ("pin 20  GP15", "tamper_pin", "cover switch", IN),
    ("pin 24  GP18", "led_pin", "alarm LED (330 Ω); GP25 is not free on a Pico W", OUT),
    ("pin 17  GP13", "buzzer_pin", "active buzzer via NPN", OUT),
    ("pin 6   GP4 UART1 TX", "UART TX", "MAX3485 DI", BUS),
    ("pin 7   GP5 UART1 RX", "UART RX", "MAX3485 RO", BUS),
    ("pin 9   GP6", "rs485_de_pin", "MAX3485 DE + /RE (high = send)", BUS),
]


if __name__ == "__main__":
    relay_driver()
    pulse_input()
    contacts_and_power_fail()
    rs485()
    board_map(
        "Raspberry Pi",
        "Raspberry Pi wiring (BCM GPIO numbers, 40-pin header)",
        PI_PINS,
        "Coil drivers on GPIO 9-27 (pulled low at power-on); GPIO 0-8 are pulled high and are refused for coils.\n"
        "Disable the serial console (raspi-config) to free the UART for RS-485. Pi 5 / kernel >= 6.6: install rpi-lgpio.",
    )
    board_map(
        "Pico W",
        "Raspberry Pi Pico W wiring (ESP32: same signals, avoid strapping pins 0, 2, 5, 12, 15 for coils)",
        PICO_PINS,
        "RP2040 pads reset to inputs with pull-downs, so the coil drivers stay off; boot.py drives them low first thing.\n"
        "On an ESP32 the pulse input may use the PCNT counter (hw.pulse_counter = true) for clean S0 signals.",
    )
