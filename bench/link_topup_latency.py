"""Top-up -> relay-close latency through Mosquitto with TLS and the durable commit.

    .venv/bin/python bench/link_topup_latency.py [--n 1000] [--dir out/bench-link]

A real Mosquitto (TLS, per-meter client certificates, the shipped ACL), the
CPython agent (Meter + TokenGuard + link Session + agent.store on disk with
fsync, paho transport) in one thread, the head-end in another.  Each round:
the meter consumes until it trips for arrears (relay opens), then the
head-end vends a top-up; we time from just before the head-end seals and
publishes the token to the moment the agent hands PulseCoil("set") to the
hardware layer (the relay-close action; the coil pulse itself is not
counted), and also to the ack arriving back at the head-end.  The close
comes after the commit of credit, used token, command sequence and outbox
(the Device commits before LinkedMeter returns actions).  Prints p50/p90/p99/max.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Broker, TLSListener, make_pki  # noqa: E402

from agent.device import Device  # noqa: E402
from agent.events import Pulses, Tick  # noqa: E402
from agent.link.agent import LinkedMeter  # noqa: E402
from agent.link.backoff import Backoff  # noqa: E402
from agent.link.session import Session  # noqa: E402
from agent.meter import load_config  # noqa: E402
from agent.store import OsFS, Store  # noqa: E402
from agent.tokens import TokenGuard  # noqa: E402
from headend.link import Fleet, HeadEnd  # noqa: E402
from headend.shadow import Shadow  # noqa: E402
from hw.mqtt_paho import TLS, PahoTransport, mono_ms, wall_s  # noqa: E402

MID = "000000000042"


def pct(sorted_ms, p):
    """The p-th percentile (nearest rank) of a sorted list."""
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="top-ups to time")
    ap.add_argument("--dir", default=None, help="work folder (default: a temp folder under out/)")
    args = ap.parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-link-", dir=str(ROOT / "out")
                                                                 if (ROOT / "out").is_dir() or not os.makedirs(ROOT / "out") else None))
    pki = make_pki(base / "pki", clients=[MID, "headend"])
    broker = Broker(base / "broker", tls=TLSListener(pki.ca_cert, pki.server_cert, pki.server_key,
                                                     require_certificate=True, use_identity_as_username=True),
                    acl_file=ROOT / "deploy" / "mosquitto" / "acl", allow_anonymous=False,
                    extra_lines=["log_type none", "set_tcp_nodelay true"]).start()
    fleet = Fleet(bytes(range(32)))
    store_dir = base / "store"
    store_dir.mkdir(exist_ok=True)
    store = Store(OsFS(), str(store_dir), MID)
    cfg = load_config({"meter": {"id": MID, "constant": 1000},
                       "account": {"opening_balance": 0, "trip_delay_s": 0, "alarm1": 0, "alarm2": 0},
                       "relay": {"min_interval_ms": 0, "pulse_ms": 10, "settle_ms": 0}})
    linked = LinkedMeter(Device(cfg, store), TokenGuard(MID, fleet.meter_key(MID)),
                         Session(MID, fleet.keys(MID), os.urandom(8), boot=1, fw="bench"))
    closes = []
    opens = []

    def on_hw(actions):
        now = time.perf_counter()
        for a in actions:
            if a.kind == "pulse_coil":
                (closes if a.coil == "set" else opens).append(now)

    transport = PahoTransport(linked, broker.host, broker.tls_port, "meter-" + MID,
                              tls=TLS(pki.ca_cert, pki.client_cert(MID), pki.client_key(MID)),
                              backoff=Backoff(50, 500), on_hw=on_hw, log=lambda m: None)
    inject = []
    stop = threading.Event()

    def agent_loop():
        on_hw(linked.boot(wall_s(), mono_ms())[0])
        next_tick = 0
        while not stop.is_set():
            transport.step(0.002)
            # The relay driver finishes a coil pulse on a later tick.
            if mono_ms() >= next_tick:
                next_tick = mono_ms() + 10
                hw, outs = linked.handle(Tick(wall_s(), mono_ms()), wall_s())
                on_hw(hw)
                transport.send(outs)
            while inject:
                hw, outs = linked.handle(inject.pop(0), wall_s())
                on_hw(hw)
                transport.send(outs)

    th = threading.Thread(target=agent_loop, daemon=True)
    th.start()
    head = HeadEnd(fleet, Shadow(base / "shadow.db"), broker.host, broker.tls_port,
                   tls=TLS(pki.ca_cert, pki.client_cert("headend"), pki.client_key("headend"))).start()
    while not transport.connected:
        time.sleep(0.01)

    def wait_for(lst, count, what):
        deadline = time.monotonic() + 5
        while len(lst) < count:
            if time.monotonic() > deadline:
                raise SystemExit("bench: no %s within 5 s (balance %d, relay %s)" % (
                    what, linked.meter.balance, linked.meter.relay_state))
            time.sleep(0.0002)

    close_ms, ack_ms, pub_close_ms = [], [], []
    commits0 = linked.commits
    for i in range(args.n + 10):  # 10 warm-up rounds
        # Consume until the meter trips for arrears: the relay opens.
        if linked.meter.relay_closed:
            n_open = len(opens)
            inject.append(Pulses(3000, wall_s(), mono_ms()))
            wait_for(opens, n_open + 1, "trip")
            time.sleep(0.1)  # let the opening pulse and its commit finish: not part of the top-up
        need = -linked.meter.balance + 10000
        n_close = len(closes)
        t0 = time.perf_counter()
        ref, ack, _secs = head.push_topup(MID, need, wait=5)
        t_ack = time.perf_counter()
        wait_for(closes, n_close + 1, "relay close")
        if ack is None or ack["b"]["code"] != "accepted":
            raise SystemExit("bench: top-up %d not accepted: %r" % (i, ack))
        if i >= 10:
            close_ms.append((closes[n_close] - t0) * 1000)
            ack_ms.append((t_ack - t0) * 1000)
            # push_topup's own timer starts at the publish, after the ledger write.
            pub_close_ms.append((closes[n_close] - (t_ack - _secs)) * 1000)
    stop.set()
    th.join(5)
    transport.close()
    head.stop()
    broker.stop()
    close_ms.sort()
    ack_ms.sort()
    pub_close_ms.sort()
    print("top-ups: %d (after 10 warm-up), TLS + client certs + ACL, durable commits: %d" % (
        len(close_ms), linked.commits - commits0))
    for name, xs in (("vend -> relay-close action", close_ms), ("publish -> relay-close action", pub_close_ms),
                     ("vend -> ack at head-end", ack_ms)):
        print("%-30s p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  max %6.2f ms" % (
            name, pct(xs, 50), pct(xs, 90), pct(xs, 99), xs[-1]))
    return 0 if pct(close_ms, 99) <= 50 else 1


if __name__ == "__main__":
    sys.exit(main())
