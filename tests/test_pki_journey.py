"""An operator's journey from nothing to a meter talking to its head-end,
done as docs/deploy.md tells it: `pmeter pki ...` and `pmeter keys ...` as
commands, the broker installed by running the docs' own install block
(only /etc/mosquitto moved to a scratch folder; apt and systemctl left
out), the real Mosquitto on the shipped pmeter.conf dropping to the
`mosquitto` user as on Debian, a real `pmeter agent` with the issued meter
certificate and keys file, a head-end with its own certificate.  Then a
revoked certificate is refused.
"""

import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mosquitto import BrokerError, ShippedBroker, connects

from agent import results
from headend.link import Fleet, HeadEnd
from headend.shadow import Shadow
from hw.mqtt_paho import TLS

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MID = "000000000012"


def pmeter(cwd, *args):
    out = subprocess.run([PY, "-m", "pmeter"] + list(args), cwd=str(cwd), capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return out.returncode, out.stdout, out.stderr


def install_block():
    """The shell lines of the broker install block in docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    after = text.split("<!-- broker-install:", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def run_install(cwd, etc):
    """Run the docs' install block with /etc/mosquitto under ``etc``; apt and systemctl are the machine's job."""
    lines = [ln.replace("/etc/mosquitto", str(etc)) for ln in install_block()
             if not ln.startswith(("apt ", "systemctl "))]
    if _mosquitto_user() is None:  # not root: no chown, the rest as written
        lines = [re.sub(r" -o \w+ -g \w+", "", ln) for ln in lines]
    assert len(lines) >= 4, lines
    (etc / "conf.d").mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["bash", "-euc", "\n".join(lines)], cwd=str(cwd), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def scratch():
    """A folder the `mosquitto` user can traverse (pytest's tmp folders are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="pmeter-pki-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _mosquitto_user():
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto" if os.geteuid() == 0 else None


def test_pki_journey_ca_to_broker_to_meter_and_headend(scratch):
    work = scratch / "ops"
    work.mkdir()
    (work / "deploy").symlink_to(ROOT / "deploy")
    # 1. The CA and every certificate, as commands.
    for args in (["pki", "init", "--dir", "pki"],
                 ["pki", "broker", "--dir", "pki", "--host", "localhost", "--ip", "127.0.0.1"],
                 ["pki", "meter", "--dir", "pki", "--meter", MID],
                 ["pki", "headend", "--dir", "pki", "--name", "ops"]):
        code, out, err = pmeter(work, *args)
        assert code == 0, (args, err)
    pki = work / "pki"
    for name in ("ca.key", "broker.key", "meter-%s.key" % MID, "headend-ops.key"):
        assert stat.S_IMODE((pki / name).stat().st_mode) == 0o600, name
    code, out, _ = pmeter(work, "pki", "list", "--dir", "pki", "--json")
    listed = {c["name"]: c for c in json.loads(out)}
    assert set(listed) == {"localhost", MID, "headend-ops"} and not any(c["revoked"] for c in listed.values())
    assert "user headend-ops" in (pki / "acl").read_text()
    # Bad input: exit 2, a message naming the option, nothing written.
    before = sorted(os.listdir(pki))
    for args, word in ((["pki", "meter", "--dir", "pki", "--meter", "12"], "--meter"),
                       (["pki", "headend", "--dir", "pki", "--name", "a/b"], "--name"),
                       (["pki", "broker", "--dir", "pki", "--host", "x", "--ip", "1.2.3"], "--ip"),
                       (["pki", "meter", "--dir", "pki", "--meter", MID], "already exists"),
                       (["pki", "init", "--dir", "pki"], "already holds a CA"),
                       (["pki", "revoke", "--dir", "pki", "--headend", "nobody"], "nothing to revoke"),
                       (["pki", "headend", "--dir", "pki", "--name", "x", "--days", "0"], "--days"),
                       (["pki", "meter", "--dir", "nowhere", "--meter", MID], "pmeter pki init")):
        code, _out, err = pmeter(work, *args)
        assert code == 2 and word in err and "Traceback" not in err, (args, err)
    assert sorted(os.listdir(pki)) == before

    # 2. The broker, installed by the docs' own commands; Mosquitto drops to its user as on Debian.
    etc = scratch / "etc-mosquitto"
    run_install(work, etc)
    installed = etc / "pmeter"
    files = {n: installed / n for n in ("ca.crt", "ca.crl", "broker.crt", "broker.key", "acl")}
    user = _mosquitto_user()
    conf = etc / "conf.d" / "pmeter.conf"
    assert conf.read_text() == (ROOT / "deploy" / "mosquitto" / "pmeter.conf").read_text()
    broker = ShippedBroker(scratch / "broker", files, user=user).start()
    try:
        # 3. A real agent with its keys file and certificate, a head-end with its own.
        code, _out, err = pmeter(work, "keys", "init", "--master", "pmeter-master.key")
        assert code == 0, err
        code, _out, err = pmeter(work, "keys", "derive", "--master", "pmeter-master.key", "--meter", MID,
                                 "--out", "keys.toml")
        assert code == 0 and stat.S_IMODE((work / "keys.toml").stat().st_mode) == 0o600, err
        (work / "agent.toml").write_text(
            '[meter]\nid = "%s"\n[agent]\nkeys = "keys.toml"\ndata_dir = "data"\n'
            '[mqtt]\nhost = "127.0.0.1"\nport = %d\nca = "pki/ca.crt"\ncert = "pki/meter-%s.crt"\nkey = "pki/meter-%s.key"\n'
            % (MID, broker.tls_port, MID, MID))
        agent = subprocess.Popen([PY, "-m", "pmeter", "agent", "--config", "agent.toml", "--hw", "sim"], cwd=str(work),
                                 stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "wb"),
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
        master = bytes.fromhex((work / "pmeter-master.key").read_text().strip())
        head = HeadEnd(Fleet(master), Shadow(str(work / "shadow.sqlite")), broker.host, broker.tls_port,
                       tls=TLS(pki / "ca.crt", pki / "headend-ops.crt", pki / "headend-ops.key")).start()
        try:
            ack = None
            for _ in range(30):  # until the agent is up and subscribed (a command to an offline meter is lost)
                _ref, ack, _ = head.push_topup(MID, 500000, wait=1)
                if ack is not None:
                    break
            assert ack is not None and ack["b"]["code"] == results.ACCEPTED, (broker.log()[-2000:],
                                                                              (work / "agent.log").read_text()[-2000:])
            log = broker.log()
            assert re.search(r"as %s\b" % MID, log) and re.search(r"as headend-ops\b", log), log[-2000:]
        finally:
            head.stop()
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
        agent_log = (work / "agent.log").read_text()
        keys = (work / "keys.toml").read_text()
        for secret in re.findall(r'"([0-9a-f]{32,64})"', keys):
            assert secret not in agent_log  # the agent never logs a key

        # 4. Revocation: the meter's old certificate is refused once the broker runs with the new CRL.
        saved = scratch / "stolen"
        saved.mkdir()
        for ext in (".crt", ".key"):
            shutil.copy(pki / ("meter-%s%s" % (MID, ext)), saved / ("m" + ext))
        assert connects(broker, pki / "ca.crt", saved / "m.crt", saved / "m.key")  # control
        code, _out, err = pmeter(work, "pki", "revoke", "--dir", "pki", "--meter", MID)
        assert code == 0, err
        run_install(work, etc)
        broker.stop()
        broker.start()
        assert not connects(broker, pki / "ca.crt", saved / "m.crt", saved / "m.key")
        assert connects(broker, pki / "ca.crt", pki / "headend-ops.crt", pki / "headend-ops.key")
        code, out, _ = pmeter(work, "pki", "list", "--dir", "pki", "--json")
        assert [c["revoked"] for c in json.loads(out) if c["name"] == MID] == [True]
        # The name can be issued again, to a replacement; the new certificate connects.
        code, _out, err = pmeter(work, "pki", "meter", "--dir", "pki", "--meter", MID)
        assert code == 0, err
        assert connects(broker, pki / "ca.crt", pki / ("meter-%s.crt" % MID), pki / ("meter-%s.key" % MID))
    finally:
        broker.stop()


@pytest.mark.skipif(_mosquitto_user() is None, reason="needs root and Debian's mosquitto user")
def test_pki_journey_broker_key_left_private_to_root_stops_mosquitto(scratch):
    """The permission problem the install block fixes: Mosquitto reads the key
    after dropping to its own user, so a root-only key stops it at start."""
    work = scratch / "ops"
    work.mkdir()
    (work / "deploy").symlink_to(ROOT / "deploy")
    for args in (["pki", "init", "--dir", "pki"], ["pki", "broker", "--dir", "pki", "--host", "localhost"]):
        assert pmeter(work, *args)[0] == 0
    etc = scratch / "etc-mosquitto"
    run_install(work, etc)
    files = {n: etc / "pmeter" / n for n in ("ca.crt", "ca.crl", "broker.crt", "broker.key", "acl")}
    os.chown(files["broker.key"], 0, 0)
    os.chmod(files["broker.key"], 0o600)
    with pytest.raises(BrokerError) as e:
        ShippedBroker(scratch / "broker", files, user="mosquitto").start(timeout=5)
    assert "Unable to load server key file" in str(e.value), str(e.value)
