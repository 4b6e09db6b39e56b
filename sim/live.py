"""Live mode: virtual meters as real MQTT sessions against a real broker.

Every virtual meter is the real agent stack - meter core, TokenGuard and
link ``Session`` in an ``agent.link.agent.LinkedMeter`` - behind its own
MQTT connection (``hw.mqtt_paho.PahoTransport``, one paho client per
meter).  Thousands of them share one thread: instead of a thread or a
blocking ``loop()`` per client, one selector waits on every socket and
paho's external-loop calls (``loop_read``/``loop_write``/``loop_misc``)
are made only for the clients that have something to do.

The head-end is ``headend.link``: its ``Fleet`` seals top-up tokens and
opens what meters send, and several ``HeadEnd`` workers subscribe with a
shared subscription (``$share/<group>/pm/+/<leaf>``), so the broker
splits the meters' traffic between them - the way to scale the head-end
out against a clustered broker (see docs/fleet.md).  Each worker is a
process of its own, as the head-end is a separate service in production:
it would otherwise compete with the meters' thread for the GIL.  Acks
may reach any worker, so each worker reports the acks it saw and the run
merges them (in production: the shared database behind the head-end).
Ack times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, one
clock for all processes).

Time is real: telemetry every ``telemetry_s`` seconds, consumption from
each meter's seeded household at ``speed`` times real time.  Each meter
reports at its own seeded offset within the period, not all at the top
of the wall-clock minute: a real fleet's clocks and boot times spread
it, and aligned reports are a burst of N per tick window at the broker.
A vendor pushes top-ups at ``topup_rate`` per second to random meters and the
report gives the latency from the publish of the sealed token to (a) the
relay-close action at a meter that was cut and (b) the ack at a head-end
worker.
"""

import gc
import multiprocessing
import os
import random
import selectors
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import App
from agent.events import Pulses
from agent.link import topics
from agent import settings
from headend.link import Fleet, HeadEnd
from hw.mqtt_paho import TLS, PahoTransport, mono_ms, nodelay, wall_s
from sim import derive_seed
from sim.household import Household
from sim.pulses import PulseSource
from sim.runner import TZ_S, meter_config, percentile

TICKS_PER_PASS = 32  # meter ticks between two looks at the sockets
MISC_PER_PASS = 128  # keep-alive upkeeps between two looks at the sockets
MASTER = bytes(range(32))  # the simulator's head-end master key (a simulation, not a secret)


def parse_url(url):
    """``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT`` -> (host, port, tls);
    ValueError naming what is wrong.  Default ports: 1883, and 8883 for TLS."""
    scheme = url.partition("://")[0] if isinstance(url, str) else None
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError("must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got %r" % (url,))
    tls = scheme == "mqtts"
    rest = url[len(scheme) + 3:].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "8883" if tls else "1883"
    if not host:
        raise ValueError("no host in %r" % (url,))
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("port must be 1..65535 in %r" % (url,))
    return host, int(port), tls


def check_tls(ca, cert, key):
    """Load the TLS files once before anything connects; returns a ``TLS`` or
    raises ValueError("--option: what is wrong") so a bad file is a clear refusal."""
    import ssl

    if not ca:
        raise ValueError("--ca: mqtts:// needs the CA certificate that signed the broker's certificate (PEM)")
    if bool(cert) != bool(key):
        raise ValueError("--cert and --key go together (the client certificate and its private key, PEM)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for name, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path and not os.path.isfile(path):
            raise ValueError("%s: no such file %s" % (name, path))
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError("--ca: %s is not a readable PEM CA certificate (%s)" % (ca, exc))
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ValueError("--cert/--key: %s and %s are not a readable PEM certificate and its key (%s)" % (cert, key, exc))
    return TLS(ca, cert, key)


class MemFS:
    """A file system in RAM with the interface of ``agent.store.OsFS``."""

    def __init__(self):
        self.files = {}

    def create(self, path):
        return _MemHandle(self.files, path)

    def read(self, path, limit):
        data = self.files.get(path)
        return None if data is None else data[: limit + 1]

    def rename(self, src, dst):
        self.files[dst] = self.files.pop(src)

    def remove(self, path):
        self.files.pop(path, None)

    def exists(self, path):
        return path in self.files

    def sync_dir(self, directory):
        pass


class _MemHandle:
    __slots__ = ("files", "path", "parts")

    def __init__(self, files, path):
        self.files = files
        self.path = path
        self.parts = []
        files[path] = b""

    def write(self, data):
        self.parts.append(bytes(data))

    def flush(self):
        self.files[self.path] = b"".join(self.parts)

    def sync(self):
        self.flush()

    def close(self):
        self.flush()


class SelectorTransport(PahoTransport):
    """A PahoTransport pumped by a shared selector instead of its own ``loop()``."""

    def __init__(self, *args, **kwargs):
        PahoTransport.__init__(self, *args, **kwargs)
        self.sock = None

    def readable(self):
        """The socket has data: read it and handle what came."""
        c = self.client
        if c is None:
            return
        rc = c.loop_read()
        # TLS: records already decrypted wait in the SSL object, where the
        # selector does not see them: read on until it is empty.
        while rc == 0 and self.client is c and _tls_pending(c):
            rc = c.loop_read()
        self._dispatch()
        if rc != 0 and self.client is not None:
            self._lost(mono_ms(), "connection lost (rc=%s)" % (rc,))

    def flush(self):
        c = self.client
        if c is not None and c.want_write():
            c.loop_write()

    def misc(self):
        """Keep-alive pings and reconnection when due."""
        if self.client is None:
            if mono_ms() >= self.next_attempt:
                self._attempt(mono_ms())
            return
        rc = self.client.loop_misc()
        self._dispatch()
        if rc != 0 and self.client is not None:
            self._lost(mono_ms(), "connection lost (rc=%s)" % (rc,))


def _tls_pending(client):
    sock = client.socket()
    return sock is not None and hasattr(sock, "pending") and sock.pending() > 0


def _tls_set(client, tls):
    """Client certificate TLS on a paho client, as the head-end does it."""
    if tls is not None:
        import ssl

        client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key, cert_reqs=ssl.CERT_REQUIRED)


class LiveMeter:
    """One virtual meter on the wire: household, pulses, the agent stack, its transport."""

    def __init__(self, index, seed, base, fleet, host, port, telemetry_s, speed, on_close, log, spread=True, tls=None):
        raw = meter_config(base, index)
        self.id = raw["meter"]["id"]
        raw["tokens"] = {"key": fleet.meter_key(self.id).hex()}
        raw["link"] = dict(raw.get("link") or {}, key=fleet.link_key(self.id).hex())
        raw["agent"] = dict(raw.get("agent") or {}, fw="sim-live")
        cfg = settings.load(raw)
        rng = random.Random(derive_seed(seed, "live", index))
        nonce = bytes(rng.getrandbits(8) for _ in range(8))
        # The real Device and Store (encode, CRC, A/B slots, deltas) on a RAM
        # file system: thousands of meters on one disk would measure the disk.
        self.app = App(cfg, MemFS(), "/mem/" + self.id, nonce, telemetry_s=telemetry_s,
                       telemetry_offset_s=random.Random(derive_seed(seed, "tele", index)).randrange(telemetry_s) if spread else 0)
        self.linked = self.app.linked
        self.house = Household(derive_seed(seed, "house", index), tz_offset_s=TZ_S)
        self.source = PulseSource(cfg["meter"]["constant"])
        self.speed = speed
        self.on_close = on_close
        self.transport = SelectorTransport(self.app, host, port, "sim-%s-%d" % (self.id, os.getpid()),
                                           tls=tls, on_hw=self._hw, log=log, rng=rng)
        self.sim_t = None
        self.last_wall = None
        self.telemetry_s = telemetry_s
        self.tele_offset = self.linked.telemetry_offset_s

    def _hw(self, actions):
        for a in actions:
            if a.kind == "pulse_coil" and a.coil == "set":
                self.on_close(self.id, time.perf_counter())

    def boot(self):
        wall = wall_s()
        self.sim_t = wall
        self.last_wall = wall
        hw, outs = self.app.boot(wall, mono_ms())
        self._hw(hw)

    def tick(self, wall):
        """Consume since the last tick (at ``speed`` x real time) and let the core run."""
        if wall <= self.last_wall:
            return
        t1 = self.sim_t + (wall - self.last_wall) * self.speed
        self.last_wall = wall
        mwh = self.house.energy_mwh(self.sim_t, t1) if self.linked.meter.relay_position is not False else 0
        self.sim_t = t1
        hw, outs = self.app.event(Pulses(self.source.advance(mwh), wall, mono_ms()), wall)
        if hw:
            self._hw(hw)
        if outs:
            self.transport.send(outs)


class SharedHeadEnd(HeadEnd):
    """A head-end worker on a shared subscription: the broker splits the fleet's traffic."""

    def __init__(self, fleet, host, port, group, number, on_ack, tls=None):
        HeadEnd.__init__(self, fleet, None, host, port, tls=tls, client_id="sim-headend-%d-%d" % (number, os.getpid()), session_expiry_s=0)
        self.group = group
        self.on_ack = on_ack
        self.received = 0

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        nodelay(client)
        subs = [("$share/%s/%s" % (self.group, topics.fleet(leaf, self.fleet.prefix)), 1) for leaf in topics.METER_LEAVES]
        client.subscribe(subs)

    def _on_message(self, client, userdata, msg):
        self.received += 1
        try:
            meter_id, leaf, fields = self.fleet.open(msg.topic, bytes(msg.payload))
        except Exception:
            self.rejected += 1
            return
        if leaf == topics.ACK:
            self.on_ack(fields.get("b", {}).get("r"), time.perf_counter(), fields.get("b", {}).get("code"))


def _worker_process(host, port, group, number, conn, tls_files=None):
    """A head-end worker process: commands "mark" and "stop" come over ``conn``.

    Sends ("ready", None) once subscribed (or ("error", text)), and on "stop"
    ("done", {received since mark, rejected, acks: ref -> (t, code)}).
    """
    acks = {}
    tls = TLS(*tls_files) if tls_files else None
    w = SharedHeadEnd(Fleet(MASTER), host, port, group, number, lambda ref, t, code: acks.setdefault(ref, (t, code)), tls)
    try:
        w.start()
    except Exception as exc:
        conn.send(("error", "head-end worker %d cannot subscribe at %s:%d: %s (is the broker running?)" % (number, host, port, exc)))
        return
    conn.send(("ready", None))
    base = 0
    while True:
        cmd = conn.recv()
        if cmd == "mark":
            base = w.received
        elif cmd == "stop":
            break
    w.stop()
    conn.send(("done", {"received": w.received - base, "rejected": w.rejected, "acks": dict(acks)}))


class WorkerProcess:
    """The parent's handle on one head-end worker process."""

    def __init__(self, host, port, group, number, tls=None):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        files = (tls.ca, tls.cert, tls.key) if tls is not None else None
        self.proc = ctx.Process(target=_worker_process, args=(host, port, group, number, child, files), daemon=True)
        self.number = number
        self.result = None

    def start(self):
        self.proc.start()

    def wait_ready(self, timeout):
        if not self.conn.poll(timeout):
            raise RuntimeError("head-end worker %d did not subscribe within %.0f s" % (self.number, timeout))
        what, detail = self.conn.recv()
        if what != "ready":
            raise RuntimeError(detail)

    def mark(self):
        self.conn.send("mark")

    def stop(self, timeout=30.0):
        """Stop it and collect what it saw (None if it did not answer)."""
        try:
            self.conn.send("stop")
            if self.conn.poll(timeout):
                what, self.result = self.conn.recv()
        except (OSError, EOFError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
        return self.result


class Vendor:
    """The vendor's MQTT client: publishes sealed tokens (its own network thread)."""

    def __init__(self, host, port, timeout=10.0, tls=None):
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-vendor-%d" % os.getpid(), protocol=mqtt.MQTTv5)
        _tls_set(c, tls)
        c.on_connect = self._on_connect
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self.client = c
        if not self.ready.wait(timeout):
            self.stop()
            raise RuntimeError("vendor client: no CONNACK from %s:%d within %.0f s" % (host, port, timeout))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            nodelay(client)
            self.ready.set()

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1, retain=False)

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


class LiveRun:
    """A live run: meters, head-end workers, vendor; ``run(seconds)`` -> report dict.

    ``spread=False`` keeps the agent's minute-aligned telemetry (every meter
    reports in the same tick window): for comparison in the benchmark.
    """

    def __init__(self, host, port, meters, seed, base, workers=2, telemetry_s=60, speed=60, topup_rate=5.0, log=None, progress=None, tick_s=5, warmup_s=0,
                 spread=True, tls=None):
        self.host = host
        self.tls = tls
        self.tick_s = tick_s
        self.warmup_s = warmup_s
        self.port = port
        self.fleet = Fleet(MASTER)
        self.lock = threading.Lock()
        self.sent = {}  # ref -> (meter id, t_publish, was_cut)
        self.acks = {}  # ref -> (t_ack, code)
        self.closes = {}  # meter id -> [t of relay-close actions]
        self.seq = {}
        self.rng = random.Random(derive_seed(seed, "vendor"))
        self.topup_rate = topup_rate
        self.telemetry_s = telemetry_s
        self.progress = progress
        self.last_log = None
        self.log = log or self._note
        self.meters = [LiveMeter(i, seed, base, self.fleet, host, port, telemetry_s, speed, self._closed, self.log, spread, tls) for i in range(meters)]
        self.by_id = dict((m.id, m) for m in self.meters)
        self.workers = [WorkerProcess(host, port, "pm-sim", k, tls) for k in range(workers)]
        self.worker_results = []
        self.stop = threading.Event()
        self.loop_error = None
        self.max_lag_ms = 0
        self.connected_at_end = 0

    def _note(self, message):
        # Transports log every failed connect: keep the latest for the error report.
        self.last_log = message

    def _closed(self, meter_id, t):
        self.closes.setdefault(meter_id, []).append(t)

    # ------------------------------------------------------------ the meters' thread

    def _meter_loop(self):
        try:
            self._meter_loop_inner()
        except Exception as exc:  # reported, never silent
            self.loop_error = repr(exc)
            self.stop.set()

    def _meter_loop_inner(self):
        sel = selectors.DefaultSelector()
        registered = {}
        meters = self.meters
        n = len(meters)
        for m in meters:
            m.boot()
        # Spread the work: every meter is ticked once per tick_s and gets
        # its keep-alive upkeep once a second, a slice at a time, so no
        # pass over thousands of meters holds up the sockets.
        cursor = misc_cursor = 0
        slice_t = misc_t = last = time.monotonic()
        rate = n / float(self.tick_s)
        while not self.stop.is_set():
            for key, _ in sel.select(0.002):
                key.data.readable()
            now = time.monotonic()
            # The longest time one pass took: how late a waiting socket can be served.
            if (now - last) * 1000 > self.max_lag_ms:
                self.max_lag_ms = (now - last) * 1000
            last = now
            due = int((now - slice_t) * rate)
            if due:
                # At most TICKS_PER_PASS, so waiting sockets are served between
                # slices; a backlog is caught up over the next passes.
                due = min(due, n, TICKS_PER_PASS)
                slice_t += due / rate
                wall = wall_s()
                for _ in range(due):
                    meters[cursor].tick(wall)
                    cursor = (cursor + 1) % n
            due = int((now - misc_t) * n)
            if due:
                due = min(due, n, MISC_PER_PASS)
                misc_t += due / float(n)
                for _ in range(due):
                    m = meters[misc_cursor]
                    misc_cursor = (misc_cursor + 1) % n
                    t = m.transport
                    t.misc()
                    # paho writes at once when nothing else is writing; finish partial writes here.
                    t.flush()
                    sock = t.client.socket() if t.client is not None else None
                    old = registered.get(t)
                    if sock is not old:
                        if old is not None:
                            try:
                                sel.unregister(old)
                            except (KeyError, ValueError, OSError):
                                pass
                        if sock is not None:
                            try:
                                sel.register(sock, selectors.EVENT_READ, t)
                            except KeyError:
                                # The fd was another meter's socket, closed since but
                                # not yet dropped by that meter's upkeep: drop it now.
                                stale = sel.unregister(sock.fileno())
                                registered[stale.data] = None
                                sel.register(sock, selectors.EVENT_READ, t)
                        registered[t] = sock
        for m in meters:
            m.transport.close()

    # ------------------------------------------------------------ the run

    def connected(self):
        return sum(1 for m in self.meters if m.transport.connected)

    def _stop_workers(self):
        self.worker_results = [w.stop() for w in self.workers]

    def run(self, seconds):
        for w in self.workers:
            w.start()
        try:
            for w in self.workers:
                w.wait_ready(30)
            vendor = Vendor(self.host, self.port, tls=self.tls)
        except Exception:
            self._stop_workers()
            raise
        th = threading.Thread(target=self._meter_loop, daemon=True)
        th.start()
        deadline = time.monotonic() + 30 + len(self.meters) / 200.0
        while self.connected() < len(self.meters):
            if time.monotonic() > deadline or self.loop_error:
                self.stop.set()
                th.join(10)
                vendor.stop()
                self._stop_workers()
                raise RuntimeError("only %d of %d meters connected to %s:%d%s%s" % (
                    self.connected(), len(self.meters), self.host, self.port,
                    (": " + self.loop_error) if self.loop_error else "",
                    ("; last transport message: " + self.last_log) if self.last_log else ""))
            time.sleep(0.05)
        # Let the connection storm (births, retained states, replays) settle.
        time.sleep(self.warmup_s)
        # Thousands of long-lived meters are millions of objects: a full
        # garbage collection over them stalls every socket for hundreds of
        # ms.  They live for the whole run, so take them out of the GC's sight.
        gc.collect()
        gc.freeze()
        self.max_lag_ms = 0
        for w in self.workers:
            w.mark()
        t_end = time.monotonic() + seconds
        nxt = time.monotonic()
        while time.monotonic() < t_end and not self.loop_error:
            now = time.monotonic()
            if self.topup_rate and now >= nxt:
                nxt += 1.0 / self.topup_rate
                self._vend(vendor)
            if self.progress:
                done = int(seconds - (t_end - now))
                self.progress(min(done, int(seconds)), int(seconds))
            time.sleep(min(0.01, max(0.0, nxt - time.monotonic())) if self.topup_rate else 0.05)
        time.sleep(1.0)  # let the last acks arrive
        self.connected_at_end = self.connected()
        self.stop.set()
        th.join(30)
        vendor.stop()
        self._stop_workers()
        for res in self.worker_results:
            for ref, got in (res or {}).get("acks", {}).items():
                if ref not in self.acks or got[0] < self.acks[ref][0]:
                    self.acks[ref] = got
        gc.unfreeze()
        return self.report(seconds)

    def _vend(self, vendor):
        m = self.meters[self.rng.randrange(len(self.meters))]
        seq = self.seq.get(m.id, 0) + 1
        self.seq[m.id] = seq
        wall = wall_s()
        ref = "sim-%s-%d" % (m.id, seq)
        amount = 100 * 10000
        token = self.fleet.topup_token(m.id, seq, amount, wall)
        topic, payload = self.fleet.seal_token(m.id, seq, token, ref, wall)
        was_cut = m.linked.meter.relay_state == "tripped_arrears"
        t0 = time.perf_counter()
        with self.lock:
            self.sent[ref] = (m.id, t0, was_cut)
        vendor.publish(topic, payload)

    def report(self, seconds):
        ack_ms = []
        close_ms = []
        codes = {}
        for ref in sorted(self.sent):
            mid, t0, was_cut = self.sent[ref]
            got = self.acks.get(ref)
            if got is not None:
                ack_ms.append(int((got[0] - t0) * 1000000))
                codes[got[1]] = codes.get(got[1], 0) + 1
            if was_cut:
                later = [t for t in self.closes.get(mid, []) if t >= t0]
                if later:
                    close_ms.append(int((later[0] - t0) * 1000000))
        ack_ms.sort()
        close_ms.sort()
        received = [(res or {}).get("received", 0) for res in self.worker_results]
        tele = sum(received)
        return {
            "mode": "live",
            "broker": "%s://%s:%d" % ("mqtts" if self.tls else "mqtt", self.host, self.port),
            "meters": len(self.meters),
            "connected": self.connected_at_end,
            "seconds": seconds,
            "telemetry_s": self.telemetry_s,
            "headend_workers": len(self.workers),
            "messages_per_worker": received,
            "messages_per_s": tele * 1.0 / seconds if seconds else 0.0,
            "topups_sent": len(self.sent),
            "topups_acked": sum(1 for r in self.sent if r in self.acks),
            "ack_codes": codes,
            "ack_us": _dist(ack_ms),
            "restore_us": _dist(close_ms),
            "rejected": sum((res or {}).get("rejected", 0) for res in self.worker_results),
            "workers_answered": sum(1 for res in self.worker_results if res is not None),
            "meter_loop_max_lag_ms": int(self.max_lag_ms),
            "loop_error": self.loop_error,
            "balances": dict((m.id, m.linked.meter.balance) for m in self.meters[:20]),
        }


def _dist(xs):
    return {"n": len(xs), "p50": percentile(xs, 50), "p90": percentile(xs, 90), "p99": percentile(xs, 99), "max": xs[-1] if xs else None}


def run_live(url, meters, seconds, seed, base, workers=2, telemetry_s=60, speed=60, topup_rate=5.0, progress=None, tls=None):
    """Run ``meters`` live meters for ``seconds`` against the broker at ``url``
    (``tls``: a ``TLS`` from ``check_tls`` for an mqtts:// URL)."""
    host, port, secure = parse_url(url)
    if secure and tls is None:
        raise ValueError("mqtts:// needs --ca (and --cert/--key if the broker asks for a client certificate)")
    if tls is not None and not secure:
        raise ValueError("--ca/--cert/--key are for mqtts:// URLs, got %r" % (url,))
    return LiveRun(host, port, meters, seed, base, workers, telemetry_s, speed, topup_rate, progress=progress, tls=tls).run(seconds)


def _ms(us):
    return "n/a" if us is None else "%d.%d ms" % (us // 1000, us % 1000 // 100)


def render(rep):
    """A readable summary of a live run."""
    a = rep["ack_us"]
    r = rep["restore_us"]
    codes = rep["ack_codes"]
    answers = ", ".join("%s %d" % (code, codes[code]) for code in sorted(codes, key=str)) or "none"
    workers = rep["messages_per_worker"]
    lines = [
        "Live: %d meters (%d connected at the end) on %s for %d s, %d head-end worker%s on a shared subscription."
        % (rep["meters"], rep["connected"], rep["broker"], rep["seconds"], rep["headend_workers"], "" if rep["headend_workers"] == 1 else "s"),
        "Messages from meters: %d (%.1f/s), per worker %s; rejected %d."
        % (sum(workers), rep["messages_per_s"], " / ".join(str(x) for x in workers) or "none", rep["rejected"]),
        "Top-ups: %d sent, %d acked (%s)%s." % (rep["topups_sent"], rep["topups_acked"], answers,
                                                 ", %d not acked" % (rep["topups_sent"] - rep["topups_acked"]) if rep["topups_acked"] < rep["topups_sent"] else ""),
        "Publish -> ack at the head-end: p50 %s, p90 %s, p99 %s, max %s (%d acks)." % (_ms(a["p50"]), _ms(a["p90"]), _ms(a["p99"]), _ms(a["max"]), a["n"]),
        "Publish -> relay close at a cut meter: p50 %s, p99 %s, max %s (%d restores)." % (_ms(r["p50"]), _ms(r["p99"]), _ms(r["max"]), r["n"]),
        "Meter loop: worst lag %d ms." % rep["meter_loop_max_lag_ms"],
    ]
    if rep["workers_answered"] < rep["headend_workers"]:
        lines.append("HEAD-END WORKERS: only %d of %d reported back." % (rep["workers_answered"], rep["headend_workers"]))
    if rep["loop_error"]:
        lines.append("METER LOOP FAILED: %s" % rep["loop_error"])
    return "\n".join(lines)
