"""The MicroPython agent (unix port) against the same real Mosquitto.

The real MicroPython runs agent/link/umqtt.py with TLS and its own client
certificate, the whole endpoint built by agent/app.py (Device: Meter + durable
store; TokenGuard; Session; LinkedMeter), subscribes, receives sealed top-up tokens from the CPython head-end,
acknowledges them with QoS 1 and handles the PUBACKs; a bad payload is
refused while the connection stays up.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mosquitto import make_pki, shipped_tls

from agent import results
from agent.link import topics
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"
MID = "000000000077"
MASTER = bytes(range(100, 132))
HEAP = "512K"  # the whole agent plus mbedTLS buffers; see the report for board sizing

PROGRAM = r'''
import sys, os, time, ssl, random
from agent.link.umqtt import Transport, open_socket
from agent.link.backoff import Backoff
from agent import settings
from agent.app import App
from agent.store import OsFS

host, port, ca, cert, key, mid, mkey, lkey, store_dir, want, limit_s = sys.argv[1:12]
port = int(port); want = int(want); limit_s = int(limit_s)

def rd(path):
    with open(path, "rb") as f:
        return f.read()

# MicroPython's mbedTLS wants DER (PEM needs a NUL terminator it does not add).
CA, CERT, KEY = rd(ca), rd(cert), rd(key)

def ctx_factory():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=CA)
    ctx.load_cert_chain(CERT, KEY)
    return ctx

def connect():
    return open_socket(host, port, ctx_factory(), server_hostname="localhost")

def clock():
    return int(time.time()), time.ticks_ms()

cfg = settings.validate({"meter": {"id": mid}, "account": {"opening_balance": 0}, "tokens": {"key": mkey},
                         "link": {"key": lkey}, "agent": {"fw": "mpy"}})
app = App(cfg, OsFS(), store_dir, os.urandom(8))
session = app.session
t = Transport(app, connect, "meter-" + mid, Backoff(100, 1000, 5000), clock,
              lambda: random.getrandbits(30), keepalive=10, log=lambda m: print("LOG", m))
wall, mono = clock()
app.boot(wall, mono)
meter = app.meter
start = time.ticks_ms()
seen = 0
while time.ticks_diff(time.ticks_ms(), start) < limit_s * 1000:
    t.step(20)
    if t.connected and seen == 0:
        print("CONNECTED")
        seen = 1
    acks = [r for r in meter.records("topup")]
    if len(acks) >= want and session.outbox.pending() == 0:
        break
print("RESULT", {"balance": meter.balance, "pending": session.outbox.pending(), "connects": t.connects,
                 "rejected": session.rejected, "commits": app.device.commits, "errors": t.errors})
t.mqtt.disconnect()
'''


@pytest.fixture
def broker(tmp_path, mosquitto_factory):
    pki = make_pki(tmp_path / "pki", clients=[MID, "headend"])
    b = mosquitto_factory(
        **shipped_tls(pki),
    )
    return b, pki


def _der(pki, tmp_path):
    """The CA, client certificate and key as DER files (what MicroPython loads)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    out = []
    for src, kind in ((pki.ca_cert, "cert"), (pki.client_cert(MID), "cert"), (pki.client_key(MID), "key")):
        data = src.read_bytes()
        if kind == "cert":
            der = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
        else:
            der = serialization.load_pem_private_key(data, None).private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        path = tmp_path / (src.name + ".der")
        path.write_bytes(der)
        out.append(str(path))
    return out


def test_link_umqtt_micropython_agent_receives_sealed_topup_and_acks(broker, tmp_path):
    if not MICROPYTHON.exists():
        pytest.fail("%s is missing: run `bash scripts/test.sh`, which installs it" % MICROPYTHON)
    b, pki = broker
    fleet = Fleet(MASTER)
    shadow = Shadow(tmp_path / "shadow.db")
    head = HeadEnd(fleet, shadow, b.host, b.tls_port,
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend")),
                   client_id="headend-mpy").start()
    ca_der, cert_der, key_der = _der(pki, tmp_path)
    prog = tmp_path / "mpy_agent.py"
    prog.write_text(PROGRAM)
    (tmp_path / "store").mkdir()
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(ROOT))  # .frozen holds the ssl module
    proc = subprocess.Popen(
        [str(MICROPYTHON), "-X", "heapsize=" + HEAP, str(prog), b.host, str(b.tls_port), ca_der, cert_der, key_der, MID, fleet.meter_key(MID).hex(),
         fleet.link_key(MID).hex(), str(tmp_path / "store"), "2", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = shadow.meters(MID)
            if rows and rows[0]["status"] == "online" and rows[0]["birth"]:
                break
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail("the MicroPython agent never came online:\n%s\n%s" % (proc.communicate()[0], b.log()))
        assert shadow.meters(MID)[0]["birth"]["fw"] == "mpy"
        # A bad payload first: refused, connection stays up.
        head.publish(topics.topic(MID, topics.CMD), b"\x00not sealed")
        ref1, ack1, _ = head.push_topup(MID, 300000, wait=10)
        ref2, ack2, _ = head.push_topup(MID, 200000, wait=10)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        head.stop()
    assert ack1 is not None and ack1["b"]["code"] == results.ACCEPTED and ack1["b"]["bal"] == 300000, out
    assert ack2["b"]["code"] == results.ACCEPTED and ack2["b"]["bal"] == 500000
    result = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert result, out
    r = json.loads(result[0][len("RESULT "):].replace("'", '"'))
    # Every outbox entry got its PUBACK; one connection; one refusal.
    assert r == dict(r, balance=500000, pending=0, connects=1, rejected=1, errors=0), out
    assert proc.returncode == 0, out
