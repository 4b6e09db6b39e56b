"""SIGKILL the soak driver at random moments; the store must keep every promise."""

import os
import random
import signal
import subprocess
import sys
import time

from sim import soak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_requests(d, n):
    with open(os.path.join(d, "requests.txt"), "w") as f:
        for i in range(n):
            f.write("tk%03d %d\n" % (i, 5_000 + 1_000 * (i % 7)))


def forked_kill(d, seed, delay):
    """Fork a soak process (modules already imported: ~1 ms), SIGKILL it after ``delay`` s."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            soak.run(d, seed)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    # killed by us, never died on its own
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def campaign(d, kills, seed):
    """``kills`` kill/verify rounds; returns how many kills left an unfinished commit."""
    rng = random.Random(seed)
    mid_commit = 0
    for i in range(kills):
        forked_kill(d, "%d-%d" % (seed, i), rng.uniform(0.0, 0.12))
        mid_commit += os.path.exists(os.path.join(d, "state.tmp")) or os.path.exists(os.path.join(d, "ckpt.tmp"))
        soak.verify(d)
    return mid_commit


def test_kill_200_forked_kills_keep_every_invariant(tmp_path):
    d = str(tmp_path)
    write_requests(d, 150)
    mid_commit = campaign(d, 210, seed=11)
    assert mid_commit > 0  # some kills landed inside a commit
    acked, units = soak.read_acks(d)
    assert len(acked) > 20 and units > 0  # the kills landed mid-work, not before it
    # finish cleanly: every request applied exactly once
    soak.run(d, "final", steps=5 * 150 + 10)
    meter = soak.verify(d)
    acked, _ = soak.read_acks(d)
    assert len(acked) == 150
    charged = meter.regs.total * soak.PRICE // (1000 * soak.CONSTANT)
    assert meter.balance == soak.OPENING + sum(acked.values()) - charged


def test_kill_real_process_from_the_command_line(tmp_path):
    d = str(tmp_path)
    write_requests(d, 50)
    env = dict(os.environ, PYTHONPATH=ROOT)
    rng = random.Random(5)
    acks = os.path.join(d, "acks.log")
    for i in range(6):
        before = os.path.getsize(acks) if os.path.exists(acks) else 0
        p = subprocess.Popen([sys.executable, "-m", "sim.soak", "--store", d, "--seed", str(i)], cwd=ROOT, env=env)
        # Kill once this process is at work (its first ack is out), not after
        # a fixed delay: interpreter start-up on a loaded machine can take
        # longer than any fixed delay, and then no kill lands mid-work.
        deadline = time.monotonic() + 60
        while (not os.path.exists(acks) or os.path.getsize(acks) == before) and time.monotonic() < deadline:
            assert p.poll() is None, "the soak process exited by itself"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.1))
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        soak.verify(d)
    assert soak.read_acks(d)[0]


def test_kill_detector_catches_a_broken_store(tmp_path):
    d = str(tmp_path)
    write_requests(d, 10)
    soak.run(d, "x", steps=60)
    with open(os.path.join(d, "acks.log"), "a") as f:
        f.write("A forged 5000 accepted\n")
    try:
        soak.verify(d)
    except AssertionError as e:
        assert "forged" in str(e)
    else:
        raise AssertionError("verify missed an acknowledged top-up that is not stored")


def test_kill_soak_cli_rejects_bad_arguments(tmp_path):
    assert soak.main(["--store"]) == 2
    assert soak.main(["--store", str(tmp_path / "nope")]) == 2
    assert soak.main(["--store", str(tmp_path), "--steps", "many"]) == 2
    assert soak.main(["--bogus", "1"]) == 2
