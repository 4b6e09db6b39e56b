"""The agent's settings file: the shipped example loads, errors name the key,
and docs/agent.md carries the reference generated from the schemas."""

from pathlib import Path

import pytest

from agent import settings
from agent.config import ConfigError
from pmeter.agent_cli import REF_BEGIN, REF_END, reference_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_agent_settings_example_config_loads():
    cfg = settings.load(str(ROOT / "deploy" / "agent.toml"))
    assert cfg["meter"]["id"] == "000000000042" and cfg["agent"]["hw"] == "sim"
    assert cfg["mqtt"]["host"] is None  # offline unless configured


def test_agent_settings_every_component_schema_is_merged():
    from agent.device import STORE_FIELDS
    from agent.dlt645.config import MASTER_SCHEMA
    from agent.dlt645.config import SCHEMA as DLT
    from agent.meter import SCHEMA as CORE
    from agent.tokens import SCHEMA as TOKENS
    from hw.config import HW

    s = settings.schema()
    for key in CORE:
        assert s[key] is CORE[key]
    assert s["hw"].schema is HW and s["store"].schema is STORE_FIELDS and s["tokens"].schema is TOKENS
    assert s["dlt645"].schema is DLT and s["dlt645_master"].schema is MASTER_SCHEMA


@pytest.mark.parametrize("text,key", [
    ('[meter]\nid = "1"\n[tokens]\nkey = "%s"\n' % ("00" * 32), "meter.id"),
    ('[tokens]\nkey = "%s"\n[mqtt]\nhost = "b"\n[link]\nkey = "%s"\n' % ("00" * 32, "11" * 32), "mqtt.ca"),
    ('[tokens]\nkey = "%s"\n[dlt645]\ndevice = "tcp://nohost"\n' % ("00" * 32), "dlt645.device"),
    ('[tokens]\nkey = "%s"\n[agent]\nhw = "arduino"\n' % ("00" * 32), "agent.hw"),
    ('[tokens]\nkey = "%s"\n[hw]\ncoil_min_ms = 300\n' % ("00" * 32), "hw"),
    ('[tokens]\nkey = "%s"\n[mqtt]\nportt = 1\n' % ("00" * 32), "mqtt.portt"),
    ('[tokens\n', "(file)"),
    ('{"tokens": 5}', "tokens"),
])
def test_agent_settings_errors_name_the_key(tmp_path, text, key):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        settings.load(str(p))
    assert e.value.key == key, str(e.value)


def test_agent_settings_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        settings.load(str(tmp_path / "nope.toml"))
    assert "nope.toml" in str(e.value)


def test_agent_docs_reference_is_generated_from_schemas():
    text = (ROOT / "docs" / "agent.md").read_text()
    block = text.partition(REF_BEGIN)[2].partition(REF_END)[0].strip() + "\n"
    assert block == reference_markdown(), (
        "docs/agent.md is out of date: run .venv/bin/python -c "
        "'from pmeter.agent_cli import write_reference; write_reference()'")
    for section in ("meter", "tokens", "store", "hw", "mqtt", "link", "dlt645", "dlt645_master", "agent"):
        assert "### `[%s]`" % section in block


def _ha_config(tmp_path, link):
    p = tmp_path / "ha.toml"
    p.write_text('[meter]\nid = "000000000078"\n[tokens]\nkey = "%s"\n[agent]\ndata_dir = "%s"\n[link]\n%s\n'
                 % ("00" * 32, tmp_path / "data", link))
    return p


@pytest.mark.parametrize("link,published", [("ha_discovery = true", True), ("", False)])
def test_agent_settings_ha_discovery_reaches_the_link(tmp_path, link, published):
    # docs/mqtt.md: `ha_discovery = true` under [link] turns Home Assistant discovery on (default off).
    from pmeter.agent_cli import AgentRuntime

    cfg = settings.load(str(_ha_config(tmp_path, link)))
    assert cfg["link"]["ha_discovery"] is published and cfg["link"]["ha_prefix"] == "homeassistant"
    rt = AgentRuntime(cfg, "sim", str(tmp_path / "data"))
    topics = [o.topic for o in rt.session.connected(1790000000, 0)]
    ha = [t for t in topics if t.startswith("homeassistant/") or t.endswith("/ha")]
    assert bool(ha) is published, topics
    if published:
        assert "homeassistant/sensor/pm_000000000078/balance/config" in ha


def test_agent_settings_ha_discovery_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError) as e:
        settings.load(str(_ha_config(tmp_path, 'ha_discovery = "yes"')))
    assert e.value.key == "link.ha_discovery", str(e.value)
