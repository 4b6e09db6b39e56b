"""The Mosquitto fixtures start real brokers that carry real traffic."""

import queue
import ssl

import paho.mqtt.client as mqtt
import pytest

from mosquitto import (
    Broker,
    BrokerError,
    TLSListener,
    hash_password,
    make_pki,
    write_acl_file,
    write_password_file,
)


class Client:
    """A paho client whose connect result and messages land in queues."""

    def __init__(self, client_id, username=None, password=None):
        self.connects = queue.Queue()
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self.paho.username_pw_set(username, password)
        self.paho.on_connect = lambda c, u, flags, rc, props: self.connects.put(rc)
        self.paho.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.paho.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)

    def connect(self, host, port):
        """Connect and return the broker's reason code."""
        self.paho.connect(host, port, keepalive=10)
        self.paho.loop_start()
        return self.connects.get(timeout=5)

    def subscribe(self, topic):
        """Subscribe (QoS 1) and return the granted reason codes."""
        self.paho.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)

    def publish(self, topic, payload):
        """Publish at QoS 1 and wait until the broker has it."""
        self.paho.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self):
        self.paho.disconnect()
        self.paho.loop_stop()


def test_plain_broker_roundtrip(mosquitto):
    sub = Client("fixture-sub")
    pub = Client("fixture-pub")
    try:
        assert sub.connect(mosquitto.host, mosquitto.port) == 0
        assert not sub.subscribe("fixture/roundtrip/#")[0].is_failure
        assert pub.connect(mosquitto.host, mosquitto.port) == 0
        pub.publish("fixture/roundtrip/a", b"\x00\x01hello")
        assert sub.messages.get(timeout=5) == ("fixture/roundtrip/a", b"\x00\x01hello")
    finally:
        sub.close()
        pub.close()
    assert mosquitto.running


def test_factory_broker_is_separate_and_stopped(mosquitto, mosquitto_factory):
    broker = mosquitto_factory()
    assert broker.port != mosquitto.port
    assert "listener %d 127.0.0.1" % broker.port in broker.conf_path.read_text()
    broker.stop()
    assert not broker.running


def test_bad_config_reports_log(tmp_path):
    broker = Broker(tmp_path, extra_lines=["no_such_option 1"])
    with pytest.raises(BrokerError) as err:
        broker.start(timeout=5)
    assert "no_such_option" in str(err.value)


def test_password_hash_matches_mosquitto_format():
    # Fixed salt: the PBKDF2-SHA512 digest is deterministic and checkable.
    h = hash_password("secret", salt=b"\x00" * 12)
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$")
    assert h != hash_password("secret2", salt=b"\x00" * 12)


def test_tls_listener_with_passwords_and_acl(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki", clients=["meter1"])
    broker = mosquitto_factory(
        tls=TLSListener(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True),
        password_file=write_password_file(tmp_path / "passwd", {"meter1": "pw1", "spy": "pw2"}),
        acl_file=write_acl_file(
            tmp_path / "acl",
            ["user meter1", "topic readwrite meters/meter1/#", "user spy", "topic read spy/#"],
        ),
    )
    assert broker.tls_port is not None

    # Anonymous clients and wrong passwords are refused.
    for client in (Client("anon"), Client("guess", "spy", "wrong")):
        try:
            assert client.connect(broker.host, broker.port).is_failure
        finally:
            client.close()

    meter = Client("meter1", "meter1", "pw1")
    meter.paho.tls_set(
        ca_certs=str(pki.ca_cert),
        certfile=str(pki.client_cert("meter1")),
        keyfile=str(pki.client_key("meter1")),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    spy = Client("spy", "spy", "pw2")
    try:
        assert meter.connect("127.0.0.1", broker.tls_port) == 0
        assert not meter.subscribe("meters/meter1/#")[0].is_failure
        meter.publish("meters/meter1/state", b"s1")
        assert meter.messages.get(timeout=5) == ("meters/meter1/state", b"s1")

        # The ACL denies the spy: Mosquitto grants the subscription but
        # delivers nothing it may not read.
        assert spy.connect(broker.host, broker.port) == 0
        spy.subscribe("meters/#")
        meter.publish("meters/meter1/state", b"s2")
        assert meter.messages.get(timeout=5) == ("meters/meter1/state", b"s2")
        with pytest.raises(queue.Empty):
            spy.messages.get(timeout=0.3)
    finally:
        meter.close()
        spy.close()


def test_tls_listener_refuses_client_without_certificate(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki")
    broker = mosquitto_factory(
        tls=TLSListener(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="nocert")
    client.tls_set(ca_certs=str(pki.ca_cert), cert_reqs=ssl.CERT_REQUIRED)
    connected = False
    try:
        client.connect("127.0.0.1", broker.tls_port, keepalive=5)
        # With TLS 1.3 the missing certificate shows on the first reads.
        for _ in range(30):
            client.loop(timeout=0.1)
            if client.is_connected():
                connected = True
                break
    except (ssl.SSLError, OSError):
        pass
    finally:
        client.disconnect()
    assert not connected
