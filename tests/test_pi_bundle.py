"""The Raspberry Pi journey of docs/deploy.md, done literally: build the bundle
with scripts/flash.sh (``pi --out DIR``, the same build as ``pi USER@HOST``
without ssh), install its source into a fresh venv as its install.sh does,
and start the agent with the shipped systemd unit's ExecStart (only ``--hw pi``
becomes ``--hw sim`` and the paths move into a temp dir)."""

import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLASH = ROOT / "scripts" / "flash.sh"
PY = sys.executable
MID = "000000000001"  # the example config's meter


def _clean_env():
    # Nothing may leak the worktree into the installed agent.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PMETER_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/bin:/bin"
    return env


def _unit_values(text):
    """The [Service] keys of a systemd unit: {key: value} (last one wins)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _wait_for(path, text, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return True
        if proc.poll() is not None:
            return text in path.read_text()
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_the_pi_bundle_installs_into_a_fresh_venv_and_the_units_command_starts_the_agent(tmp_path):
    out = tmp_path / "bundle"
    keys = tmp_path / "keys.toml"  # the example config names keys/keys.toml
    keys.write_text('[tokens]\nkey = "%s"\n' % ("00" * 32))
    keys.chmod(0o600)
    r = subprocess.run(["bash", str(FLASH), "pi", "--out", str(out), "--config", str(ROOT / "hw/systemd/config.example.toml"),
                        "--keys", str(keys)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    pi = tmp_path / "pi"  # what the Pi unpacks (flash.sh: tar -xzf pmeter-bundle.tar.gz)
    with tarfile.open(out / "pmeter-bundle.tar.gz") as tar:
        tar.extractall(pi, filter="data")
    src = pi / "src"
    assert (src / "pmeter" / "agent_cli.py").is_file()
    assert not (src / "headend").exists()  # the meter gets no head-end code

    # The install script's paths, which the unit's ExecStart must match.
    install = (pi / "install.sh").read_text()
    unit = _unit_values((pi / "pmeter-agent.service").read_text())
    assert "python3 -m venv /opt/pmeter/venv" in install
    assert '/opt/pmeter/venv/bin/pip install --upgrade "/opt/pmeter/src[$extra]"' in install
    assert '"$HERE/config.toml" /etc/pmeter/config.toml' in install
    doc = unit["Documentation"]
    assert doc.startswith("file:///opt/pmeter/src/") and (src / doc[len("file:///opt/pmeter/src/"):]).is_file()
    exec_start = shlex.split(unit["ExecStart"])
    assert exec_start == ["/opt/pmeter/venv/bin/pmeter", "agent", "--hw", "pi", "--config", "/etc/pmeter/config.toml",
                          "--data", "/var/lib/" + unit["StateDirectory"]]

    # install.sh's venv and pip install, into a temp dir.  The [pi] extra
    # (RPi.GPIO) only builds on a Pi; --hw sim below needs none.
    venv = tmp_path / "opt-pmeter-venv"
    subprocess.run([PY, "-m", "venv", str(venv)], check=True, timeout=120, env=_clean_env())
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(src)], capture_output=True, text=True,
                       timeout=600, env=_clean_env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr

    r = subprocess.run([str(venv / "bin" / "pmeter"), "--help"], capture_output=True, text=True, cwd=str(tmp_path),
                       env=_clean_env(), timeout=60)
    assert r.returncode == 0 and "Not installed here: the headend commands." in r.stdout, r.stdout + r.stderr
    moved = {"/opt/pmeter/venv/bin/pmeter": str(venv / "bin" / "pmeter"),
             "/etc/pmeter/config.toml": str(pi / "config.toml"),
             "/var/lib/pmeter": str(tmp_path / "var-lib-pmeter"),
             "pi": "sim"}
    argv = [moved.get(a, a) for a in exec_start]
    log_path = tmp_path / "journal.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=_clean_env())
        try:
            assert _wait_for(log_path, "running offline", proc), log_path.read_text()
            assert "meter %s booted (sim backend)" % MID in log_path.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "stopped: balance" in log_path.read_text()
    assert any(n.startswith("state") for n in os.listdir(tmp_path / "var-lib-pmeter"))
    # The agent ran from the venv, not from the worktree.
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pmeter; print(pmeter.__file__)"],
                           capture_output=True, text=True, cwd=str(tmp_path), env=_clean_env())
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr


def test_the_agent_and_diag_commands_import_no_head_end_or_simulator_code(tmp_path):
    code = ("import sys\nfrom pmeter import cli\n"
            "rc = cli.main(['diag', '--config', %r])\n"
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'headend', 'sim'}))" % str(tmp_path / "none.toml"))
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert r.stdout.strip() == "2 []", r.stdout + r.stderr


def test_help_lists_every_command_and_names_what_is_not_installed(tmp_path):
    from pmeter import cli

    text = cli.build_parser().format_help()
    for name in ("sim", "vend", "push", "agent", "diag"):
        assert name in text
    lean = cli.build_parser(("pmeter.agent_cli", "pmeter_no_such_package.cli")).format_help()
    assert "Not installed here: the pmeter_no_such_package commands." in lean
