"""The agent's settings file: the shipped example loads, errors name the key,
and docs/agent.md carries the reference generated from the schemas."""

from pathlib import Path

import pytest

from agent import settings
from agent.config import ConfigError
from pmeter.agent_cli import REF_BEGIN, REF_END, reference_markdown

ROOT = Path(__file__).resolve().parent.parent


KEYS = '[tokens]\nkey = "%s"\nrevision = 0\n[link]\nkey = "%s"\n' % ("00" * 32, "11" * 32)


def _keys_file(folder, text=KEYS, mode=0o600, name="keys.toml"):
    p = folder / name
    p.write_text(text)
    p.chmod(mode)
    return p


def test_agent_settings_example_config_loads(tmp_path):
    cfg = settings.load(str(ROOT / "deploy" / "agent.toml"), keys=str(_keys_file(tmp_path)))
    assert cfg["meter"]["id"] == "000000000042" and cfg["agent"]["hw"] == "sim"
    assert cfg["mqtt"]["host"] is None  # offline unless configured
    assert cfg["tokens"]["key"] == "00" * 32 and cfg["link"]["key"] == "11" * 32


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
    ('[meter]\nid = "1"\n', "meter.id"),
    ('[mqtt]\nhost = "b"\n', "mqtt.ca"),
    ('[dlt645]\ndevice = "tcp://nohost"\n', "dlt645.device"),
    ('[agent]\nhw = "arduino"\nkeys = "keys.toml"\n', "agent.hw"),
    ('[hw]\ncoil_min_ms = 300\n', "hw"),
    ('[mqtt]\nportt = 1\n', "mqtt.portt"),
    ('[tokens\n', "(file)"),
])
def test_agent_settings_errors_name_the_key(tmp_path, text, key):
    _keys_file(tmp_path)
    p = tmp_path / "c.toml"
    p.write_text(text if "[agent]" in text or text.startswith("[tokens") else text + '[agent]\nkeys = "keys.toml"\n')
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


@pytest.mark.parametrize("main,key", [
    ('[tokens]\nkey = "%s"\n' % ("00" * 32), "tokens"),  # old style: keys in the main config
    ('[link]\nkey = "%s"\n[agent]\nkeys = "keys.toml"\n' % ("11" * 32), "link.key"),
    ('[meter]\nid = "000000000001"\n', "agent.keys"),  # no keys at all
    ('[agent]\nkeys = "missing.toml"\n', "agent.keys"),
])
def test_agent_settings_keys_only_in_their_own_file(tmp_path, main, key):
    _keys_file(tmp_path)
    p = tmp_path / "c.toml"
    p.write_text(main)
    with pytest.raises(ConfigError) as e:
        settings.load(str(p))
    assert e.value.key == key, str(e.value)
    if key == "tokens":
        assert "agent.keys" in str(e.value) and "pmeter keys derive" in str(e.value)  # points to the new file


def _refused(tmp_path, **keys_file):
    """The ConfigError of a config naming keys.toml made with ``keys_file`` options."""
    _keys_file(tmp_path, **keys_file)
    p = tmp_path / "c.toml"
    p.write_text('[agent]\nkeys = "keys.toml"\n')
    with pytest.raises(ConfigError) as e:
        settings.load(str(p))
    return e.value


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_agent_settings_keys_file_open_to_others_is_refused(tmp_path, mode):
    e = _refused(tmp_path, mode=mode)
    assert e.key == "agent.keys" and "chmod 600" in str(e)
    assert "00" * 32 not in str(e)  # the message never carries a key


@pytest.mark.parametrize("text", [
    KEYS + "[meter]\nid = \"000000000001\"\n",  # only keys in a keys file
    KEYS.replace("[link]\n", "[link]\nprefix = \"x\"\n"),
    "5",
])
def test_agent_settings_keys_file_holds_keys_only(tmp_path, text):
    e = _refused(tmp_path, text=text)
    assert e.key in ("agent.keys", "(file)"), str(e)


def test_agent_settings_keys_file_relative_to_the_config(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    _keys_file(tmp_path / "etc")
    p = tmp_path / "etc" / "c.toml"
    p.write_text('[agent]\nkeys = "keys.toml"\n[mqtt]\nhost = "b"\ntls = false\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = settings.load(str(p))
    assert cfg["link"]["key"] == "11" * 32 and cfg["tokens"]["revision"] == 0


def _ha_config(tmp_path, link):
    _keys_file(tmp_path)
    p = tmp_path / "ha.toml"
    p.write_text('[meter]\nid = "000000000078"\n[agent]\ndata_dir = "%s"\nkeys = "keys.toml"\n[link]\n%s\n'
                 % (tmp_path / "data", link))
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
