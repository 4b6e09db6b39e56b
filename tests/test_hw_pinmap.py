"""One pin map: the docs, the wiring pictures and the example configs agree.

The Raspberry Pi map appears four times: docs/hardware.md, the wiring
picture's table (``PI_PINS`` in docs/img/draw_wiring.py), the installed
example hw/systemd/config.example.toml and the commented ``[hw]`` block of
deploy/agent.toml.  The Pico W map twice: ``PICO_PINS`` and
mpy/config.example.json.  Each is parsed and compared, and the map is
checked by the schema and by the Pi backend's own pin rules.
"""

import ast
import json
import os
import re
import tomllib

import pytest

from hw.config import PIN_KEYS, validate_hw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def _pins(table):
    return {k: v for k, v in table.items() if k in PIN_KEYS}


def drawing_map(name):
    """``{config key: GPIO}`` from a pin table of draw_wiring.py (read, not imported: no matplotlib needed)."""
    tree = ast.parse(_read("docs", "img", "draw_wiring.py"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            rows = [(row.elts[0].value, row.elts[1].value) for row in node.value.elts]
            break
    else:
        raise AssertionError("%s not found in draw_wiring.py" % name)
    found = {}
    for label, signal in rows:
        if signal in PIN_KEYS:
            found[signal] = int(re.search(r"\bGP(?:IO)?(\d+)\b", label).group(1))
    return found


def hardware_md_map():
    text = _read("docs", "hardware.md")
    pi = text[text.index("### Raspberry Pi"):]
    block = re.search(r"```toml\n(\[hw\]\n.*?)```", pi, re.S).group(1)
    return _pins(tomllib.loads(block)["hw"])


def deploy_map():
    # The [hw] block is commented out there (the file runs as is with --hw sim).
    text = _read("deploy", "agent.toml")
    block = re.search(r"^# \[hw\]\n((?:# \w+ = .*\n)+)", text, re.M).group(1)
    return _pins(tomllib.loads("".join(line[2:] + "\n" for line in block.splitlines())))


def test_the_raspberry_pi_pin_map_is_one_map():
    example = _pins(tomllib.loads(_read("hw", "systemd", "config.example.toml"))["hw"])
    maps = {
        "hw/systemd/config.example.toml": example,
        "docs/hardware.md": hardware_md_map(),
        "docs/img/draw_wiring.py PI_PINS": drawing_map("PI_PINS"),
        "deploy/agent.toml": deploy_map(),
    }
    for where, pins in maps.items():
        assert pins == example, "%s disagrees with hw/systemd/config.example.toml: %r" % (where, sorted(set(pins.items()) ^ set(example.items())))
    assert "rs485_de_pin" in example  # the transceiver's direction line is a setting, not a loose wire


def test_the_pi_map_passes_the_schema_and_the_pi_backend_rules():
    from hw.pi import _check_pins

    _check_pins(validate_hw(_pins(tomllib.loads(_read("hw", "systemd", "config.example.toml"))["hw"])))


def test_the_pico_pin_map_is_one_map():
    board = _pins(json.loads(_read("mpy", "config.example.json"))["hw"])
    drawn = drawing_map("PICO_PINS")
    validate_hw(drawn)
    # The board does not run the DL/T 645 slave yet: its DE pin is drawn, reserved, unset.
    if "rs485_de_pin" not in board:
        drawn.pop("rs485_de_pin")
    assert board == drawn


@pytest.mark.parametrize("name", ["PI_PINS", "PICO_PINS"])
def test_no_gpio_is_drawn_twice(name):
    pins = list(drawing_map(name).values())
    assert len(pins) == len(set(pins))
