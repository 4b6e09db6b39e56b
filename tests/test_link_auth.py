"""The shipped username/password broker configuration
(deploy/mosquitto/pmeter-password.conf) on a real Mosquitto, and the
transport's MQTT 5 -> 3.1.1 fallback.

Mosquitto 2.0.11 cannot be configured to refuse MQTT 5 (its listener
``protocol`` option selects mqtt or websockets, not a version), so the
fallback test puts a 3.1.1-only front in the way: a TCP relay that answers
an MQTT 5 CONNECT the way MQTT 3.1.1 section 3.1.2.2 requires of a 3.1.1
server (CONNACK, return code 0x01 "unacceptable protocol version", then
close) and relays everything else to the real Mosquitto behind it.
"""

import os
import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from mosquitto import Broker, make_pki, write_password_file
from test_link_restore import MID, DeviceAgent

from agent import results
from agent.link.backoff import Backoff
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS, PahoTransport

ROOT = Path(__file__).resolve().parent.parent
MASTER = bytes(range(32))
USERS = {"headend": "head-secret", MID: "meter-secret"}


class ShippedPasswordBroker(Broker):
    """Mosquitto running deploy/mosquitto/pmeter-password.conf, with only the
    install paths and the port changed (plus a plain loopback listener for
    the fallback relay: same global password file and ACL)."""

    def __init__(self, workdir, pki, passwd):
        Broker.__init__(self, workdir, tls=True)
        self.pki = pki
        self.passwd = passwd

    def config_text(self):
        text = (ROOT / "deploy/mosquitto/pmeter-password.conf").read_text()
        text = text.replace("/etc/mosquitto/pmeter/passwd", str(self.passwd))
        text = text.replace("/etc/mosquitto/pmeter/acl", str(ROOT / "deploy/mosquitto/acl"))
        text = text.replace("/etc/mosquitto/pmeter/ca.crt", str(self.pki.ca_cert))
        text = text.replace("/etc/mosquitto/pmeter/broker.crt", str(self.pki.server_cert))
        text = text.replace("/etc/mosquitto/pmeter/broker.key", str(self.pki.server_key))
        assert "listener 8883\n" in text
        text = text.replace("listener 8883\n", "listener %d %s\n" % (self.tls_port, self.host))
        import pwd

        head = "user %s\npersistence false\nlog_dest stderr\nlog_type all\nconnection_messages true\n" % (
            pwd.getpwuid(os.getuid()).pw_name)
        # The plain listener first: options after a listener line belong to it.
        return head + "listener %d %s\n" % (self.port, self.host) + text


class V311Front:
    """A 3.1.1-only server front: refuses MQTT 5 CONNECTs, relays the rest."""

    def __init__(self, backend):
        self.backend = backend
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.refused = 0
        self.relayed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_packet(c):
        head = c.recv(1)
        if not head:
            return None
        raw = bytearray(head)
        length, mult = 0, 1
        while True:
            b = c.recv(1)[0]
            raw.append(b)
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = c.recv(length - len(body))
            if not chunk:
                return None
            body += chunk
        return bytes(raw) + body, body

    def _serve(self, c):
        pkt = self._read_packet(c)
        if pkt is None:
            c.close()
            return
        raw, body = pkt
        # CONNECT variable header: protocol name (2-byte length + "MQTT"), then the level.
        level = body[6] if len(body) > 6 else 0
        if level != 4:
            self.refused += 1
            c.sendall(b"\x20\x02\x00\x01")
            c.close()
            return
        self.relayed += 1
        up = socket.create_connection(self.backend)
        up.sendall(raw)

        def pipe(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(c, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, c), daemon=True).start()

    def close(self):
        self.sock.close()


def _broker(tmp_path):
    pki = make_pki(tmp_path / "pki")
    passwd = write_password_file(tmp_path / "passwd", USERS)
    return ShippedPasswordBroker(tmp_path / "broker", pki, passwd).start(), pki


def _head(broker, pki, tmp_path):
    head = HeadEnd(Fleet(MASTER), Shadow(tmp_path / "h.db"), broker.host, broker.tls_port,
                   tls=TLS(pki.ca_cert), username="headend", password=USERS["headend"], client_id="headend-pw")
    return head.start()


def test_link_auth_shipped_password_config(tmp_path):
    broker, pki = _broker(tmp_path)
    head = None
    agent = None
    try:
        head = _head(broker, pki, tmp_path)
        fleet = head.fleet
        agent = DeviceAgent(broker, pki, tmp_path / "store", fleet)
        agent.transport = PahoTransport(agent, broker.host, broker.tls_port, "meter-" + MID, tls=TLS(pki.ca_cert),
                                        username=MID, password=USERS[MID], keepalive=5,
                                        backoff=Backoff(base_ms=50, cap_ms=400, stable_ms=1000), log=lambda m: None)
        agent.start()
        assert agent.wait(lambda: agent.transport.connected), broker.log()
        # The meter's birth follows its SUBSCRIBE on the same connection: once
        # the head-end has it, a command cannot arrive before the subscription.
        assert agent.wait(lambda: any(r["birth"] for r in head.shadow.meters(MID))), broker.log()
        _ref, ack, _ = head.push_topup(MID, 500000, wait=5)
        assert ack["b"]["code"] == results.ACCEPTED and agent.device.meter.balance == 500000
        # A wrong password is refused; the transport backs off and keeps trying, never raises.
        logs = []
        bad = PahoTransport(agent, broker.host, broker.tls_port, "meter-bad", tls=TLS(pki.ca_cert),
                            username=MID, password="wrong", backoff=Backoff(base_ms=20, cap_ms=50),
                            log=logs.append)
        for _ in range(100):
            bad.step(0.02)
            if any("refused" in m for m in logs) and bad.connects == 0 and len(logs) >= 2:
                break
        assert not bad.connected and any("refused" in m or "failed" in m for m in logs), logs
        # No anonymous access, and no plaintext listener in the shipped file (TLS only).
        anon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv311)
        anon.tls_set(ca_certs=str(pki.ca_cert))
        rcs = []
        anon.on_connect = lambda c, u, f, rc, p: rcs.append(rc)
        anon.connect(broker.host, broker.tls_port)
        anon.loop_start()
        agent.wait(lambda: rcs)
        anon.loop_stop()
        assert rcs and rcs[0].is_failure
    finally:
        if agent is not None:
            agent.halt()
        if head is not None:
            head.stop()
        broker.stop()


def test_link_auth_mqtt5_falls_back_to_311(tmp_path):
    broker, pki = _broker(tmp_path)
    front = V311Front((broker.host, broker.port))
    head = None
    agent = None
    try:
        head = _head(broker, pki, tmp_path)  # the head-end speaks MQTT 5 to the real broker
        agent = DeviceAgent(broker, pki, tmp_path / "store", head.fleet)
        logs = []
        agent.transport = PahoTransport(agent, "127.0.0.1", front.port, "meter-" + MID, username=MID,
                                        password=USERS[MID], keepalive=5,
                                        backoff=Backoff(base_ms=20, cap_ms=200, stable_ms=1000), log=logs.append)
        agent.start()
        assert agent.wait(lambda: agent.transport.connected), (logs, broker.log())
        assert front.refused >= 1 and front.relayed >= 1
        assert agent.transport.protocol == mqtt.MQTTv311
        assert any("falling back to 3.1.1" in m for m in logs), logs
        # Mosquitto logs its protocol enum: p2 = MQTT 3.1.1 (p5 = MQTT 5).
        assert "as meter-%s (p2," % MID in broker.log()
        _ref, ack, _ = head.push_topup(MID, 70000, wait=5)
        assert ack["b"]["code"] == results.ACCEPTED and agent.device.meter.balance == 70000
    finally:
        if agent is not None:
            agent.halt()
        if head is not None:
            head.stop()
        front.close()
        broker.stop()
