"""Home Assistant MQTT discovery (opt-in) through a real Mosquitto: retained
discovery configs and the plaintext state topic, readable by a Home
Assistant user the ACL allows; off by default."""

import json
import os
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from mosquitto import TLSListener, make_pki, write_acl_file
from paho.mqtt.enums import CallbackAPIVersion
from test_link_restore import MID, DeviceAgent

from agent import config, results
from agent.link import topics
from agent.link.session import HA_FIELDS, Session
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS

ROOT = Path(__file__).resolve().parent.parent
MASTER = bytes(range(32))
HA_ACL = [
    "pattern write pm/%u/ha",
    "pattern write homeassistant/+/pm_%u/+/config",
    "user homeassistant",
    "topic read homeassistant/#",
    "topic read pm/+/ha",
    "topic read pm/+/status",
]


def _json_values():
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=12))
    return st.recursive(leaves, lambda c: st.one_of(st.lists(c, max_size=4),
                                                    st.dictionaries(st.text(max_size=6), c, max_size=4)),
                        max_leaves=12)


@settings(max_examples=300, derandomize=True)
@given(_json_values())
def test_link_ha_json_matches_cpython_json(value):
    assert topics.json_dumps(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_link_ha_json_identical_on_micropython():
    vectors = [{"b": [1, None, True], "a": "x\"\\\n\u00e9\u20ac\U0001F600"}, topics.ha_discovery(MID)[1][1].decode()]
    code = "from agent.link import topics\nimport sys\nfor v in %r:\n    sys.stdout.write(topics.json_dumps(v) + '\\n')\n" % (vectors,)
    env = dict(os.environ, MICROPYPATH=str(ROOT))
    out = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-X", "heapsize=128K", "-c", code],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [json.dumps(v, sort_keys=True, separators=(",", ":")) for v in vectors]


def test_link_ha_off_by_default_publishes_nothing_plain():
    s = Session(MID, Fleet(MASTER).keys(MID), os.urandom(8), ha=config.validate({}, HA_FIELDS))
    s.state = {"bal": 5}
    outs = s.connected(1, 1) + s.set_state({"bal": 6}, 2) + s.telemetry({"bal": 6}, 3)
    assert outs and not [o for o in outs if o.topic.startswith("homeassistant/") or o.topic.endswith("/ha")]


def test_link_ha_discovery_through_broker(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki", clients=[MID, "headend", "homeassistant", "000000000043"])
    acl = write_acl_file(tmp_path / "acl", (ROOT / "deploy/mosquitto/acl").read_text().splitlines() + HA_ACL)
    broker = mosquitto_factory(
        tls=TLSListener(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True,
                        use_identity_as_username=True),
        acl_file=acl, allow_anonymous=False)
    got = {}
    cond = threading.Condition()

    def on_message(client, userdata, msg):
        with cond:
            got[msg.topic] = (bytes(msg.payload), msg.retain)
            cond.notify_all()

    def wait_for(pred, timeout=5):
        with cond:
            return cond.wait_for(lambda: pred(got), timeout)

    fleet = Fleet(MASTER)
    head = HeadEnd(fleet, Shadow(tmp_path / "h.db"), broker.host, broker.tls_port,
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend")),
                   client_id="headend-ha").start()
    ha_cfg = config.validate({"ha_discovery": True, "ha_currency": "CNY"}, HA_FIELDS)
    agent = DeviceAgent(broker, pki, tmp_path / "store", fleet, ha=ha_cfg).start()
    ha = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha", protocol=mqtt.MQTTv311)
    ha.tls_set(ca_certs=str(pki.ca_cert), certfile=str(pki.client_cert("homeassistant")),
               keyfile=str(pki.client_key("homeassistant")))
    ha.on_message = on_message
    try:
        assert agent.wait(lambda: agent.transport.connected), broker.log()
        assert agent.wait(lambda: any(r["birth"] for r in head.shadow.meters(MID))), broker.log()  # subscribed
        _ref, ack, _ = head.push_topup(MID, 500000, wait=5)
        assert ack["b"]["code"] == results.ACCEPTED
        # Home Assistant starts later: everything it needs is retained.
        ha.connect(broker.host, broker.tls_port)
        ha.subscribe([("homeassistant/#", 1), ("pm/+/ha", 1), ("pm/+/status", 1), ("pm/+/state", 1)])
        ha.loop_start()
        node = "pm_" + MID
        want = ["homeassistant/sensor/%s/energy/config" % node, "homeassistant/sensor/%s/balance/config" % node,
                "homeassistant/binary_sensor/%s/relay/config" % node, "homeassistant/sensor/%s/alarm/config" % node]
        assert wait_for(lambda g: all(t in g for t in want + ["pm/%s/ha" % MID, "pm/%s/status" % MID])), \
            (sorted(got), broker.log())
        cfgs = {t: json.loads(got[t][0]) for t in want}
        assert all(got[t][1] for t in want)  # retained
        energy = cfgs[want[0]]
        assert energy["device_class"] == "energy" and energy["state_class"] == "total_increasing"
        assert energy["unit_of_measurement"] == "Wh" and energy["state_topic"] == "pm/%s/ha" % MID
        assert energy["availability_topic"] == "pm/%s/status" % MID
        assert cfgs[want[1]]["device_class"] == "monetary" and cfgs[want[1]]["unit_of_measurement"] == "CNY"
        assert cfgs[want[2]]["payload_on"] == "ON"
        assert len({c["unique_id"] for c in cfgs.values()}) == 4
        assert len({json.dumps(c["device"], sort_keys=True) for c in cfgs.values()}) == 1
        state = json.loads(got["pm/%s/ha" % MID][0])
        assert state["balance"] == "50.0000" and state["energy_wh"] == 0 and state["relay"] in ("ON", "OFF", None)
        assert got["pm/%s/status" % MID][0] == b"online"
        # The sealed state stays sealed: the ACL does not even let HA read it.
        assert "pm/%s/state" % MID not in got
        # A new balance reaches HA at once.
        _ref, ack, _ = head.push_topup(MID, 12345, wait=5)
        assert wait_for(lambda g: json.loads(g["pm/%s/ha" % MID][0])["balance"] == "51.2345")
        # Another meter cannot forge this meter's discovery or state (ACL: Mosquitto drops it).
        other = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="m43", protocol=mqtt.MQTTv311)
        other.tls_set(ca_certs=str(pki.ca_cert), certfile=str(pki.client_cert("000000000043")),
                      keyfile=str(pki.client_key("000000000043")))
        other.connect(broker.host, broker.tls_port)
        other.loop_start()
        other.publish("pm/%s/ha" % MID, b'{"balance":"9999"}', qos=1, retain=True).wait_for_publish(5)
        other.publish(want[1], b"{}", qos=1, retain=True).wait_for_publish(5)
        other.loop_stop()
        other.disconnect()
        _ref, ack, _ = head.push_topup(MID, 1, wait=5)  # a barrier: the forged ones would be here by now
        assert wait_for(lambda g: json.loads(g["pm/%s/ha" % MID][0])["balance"] == "51.2346")
        assert json.loads(got[want[1]][0])["device_class"] == "monetary"
    finally:
        ha.loop_stop()
        ha.disconnect()
        agent.halt()
        head.stop()
