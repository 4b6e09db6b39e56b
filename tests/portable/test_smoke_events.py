"""Smoke test of the shared core modules, on CPython and MicroPython alike.

Plain asserts, no pytest: tests/mpy_runner.py runs this on the MicroPython
unix port (tests/test_portability.py) and pytest collects it natively.
"""

from agent import config, events, results


def _raises_config_error(data, schema):
    try:
        config.validate(data, schema)
    except config.ConfigError as e:
        return e
    raise AssertionError("no ConfigError for %r" % (data,))


SCHEMA = {
    "id": config.Field(config.STR),
    "constant": config.Field(config.INT, 1000, config.at_least(1)),
    "mode": config.Field(config.STR, "prepaid", config.one_of("prepaid", "postpaid")),
    "relay": config.Field(
        config.TABLE,
        {},
        schema={"pulse_ms": config.Field(config.INT, 100, config.between(10, 1000))},
    ),
}


def test_events_carry_their_fields():
    e = events.Pulses(3, 1700000000, 12345)
    assert (e.kind, e.count, e.wall, e.mono) == ("pulses", 3, 1700000000, 12345)
    assert repr(e) == "Pulses(count=3, wall=1700000000, mono=12345)"
    assert events.Command("trip", None, "r1", 1, 2).args == {}


def test_actions_compare_by_value():
    assert events.PulseCoil("set", 100) == events.PulseCoil("set", 100)
    assert events.PulseCoil("set", 100) != events.PulseCoil("reset", 100)
    assert events.Ack("r1", results.ACCEPTED, 5) != events.Persist("topup", True)


def test_config_fills_defaults():
    out = config.validate({"id": "000000000001"}, SCHEMA)
    assert out == {"id": "000000000001", "constant": 1000, "mode": "prepaid", "relay": {"pulse_ms": 100}}


def test_config_rejects_unknown_key_by_name():
    e = _raises_config_error({"id": "x", "constnat": 5}, SCHEMA)
    assert e.key == "constnat"
    assert "unknown key" in str(e) and "constant" in str(e)


def test_config_rejects_wrong_type_by_name():
    e = _raises_config_error({"id": "x", "constant": "1000"}, SCHEMA)
    assert e.key == "constant"
    assert "must be an integer" in str(e)
    # bool is not an int for a money/energy device
    assert _raises_config_error({"id": "x", "constant": True}, SCHEMA).key == "constant"


def test_config_names_nested_key_and_rule():
    e = _raises_config_error({"id": "x", "relay": {"pulse_ms": 5}}, SCHEMA)
    assert e.key == "relay.pulse_ms"
    assert "between 10 and 1000" in str(e)
    assert _raises_config_error({"constant": 5}, SCHEMA).key == "id"
    assert _raises_config_error({"id": "x", "mode": "free"}, SCHEMA).key == "mode"


def test_result_codes_are_distinct_strings():
    assert len(results.ALL) == len(set(results.ALL))
    for code in results.ALL:
        assert isinstance(code, str)
