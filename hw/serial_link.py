"""DL/T 645 transports for CPython: pyserial ports and URLs, and a TCP server.

The protocol lives in agent.dlt645 (sans-I/O); this module only moves
bytes, keeps time and never lets a bad byte, a dropped connection or a
failing callback end the thread.

Slave side::

    link = SlaveLink(Slave(cfg, tz_offset_min), meter, dispatch, lock)
    server = open_slave(link, "tcp://0.0.0.0:8645")        # gateways, simulator
    server = open_slave(link, "/dev/ttyUSB0", baud=2400)    # RS-485 adapter
    server = open_slave(link, "socket://10.0.0.7:4001")     # a serial server in TCP-server mode
    ...
    server.stop()

``dispatch(events)`` hands core events (Command, SetClock) to the agent and
returns the core's actions; the ``Ack`` among them completes the reply to a
control frame.  It and every read of ``meter`` run under ``lock`` (pass the
lock the agent loop holds while it drives the core).

Master side::

    with SerialMaster("/dev/ttyUSB1", baud=2400) as m:
        wh = m.read_energy_wh("123456781012")
"""

import logging
import socket
import threading
import time

import serial

from agent.dlt645 import frame as F
from agent.dlt645 import master as M

log = logging.getLogger("pmeter.dlt645")

GAP_S = 0.05  # read timeout; a quiet line this long ends a partial frame on serial
TCP_IDLE_S = 0.5  # a partial frame left this long on a TCP connection is dropped
MAX_CONNECTIONS = 8


def _now():
    return int(time.time()), int(time.monotonic() * 1000)


class LinkTimeout(TimeoutError):
    """No valid reply arrived in time."""


class SlaveLink:
    """Shared by every connection of one slave: the Slave, the meter view, the core."""

    def __init__(self, slave, view, dispatch=None, lock=None, clock=_now, persist=None):
        self.slave = slave
        self.view = view
        self.dispatch = dispatch
        self.lock = lock if lock is not None else threading.RLock()
        self.clock = clock
        self.persist = persist  # commits the slave's lockout (a Device part) before the reply goes out

    def handle(self, frames):
        """Answer ``frames``; return the list of reply byte strings."""
        replies = []
        for fr in frames:
            with self.lock:
                wall, mono = self.clock()
                reply, events = self.slave.handle(fr, self.view, wall, mono)
                if events:
                    reply = self._dispatch(events) or reply
                if self.slave.dirty and self.persist is not None:
                    self.slave.dirty = False
                    self.persist()
            if reply is not None:
                replies.append(reply)
        return replies

    def _dispatch(self, events):
        if self.dispatch is None:
            log.warning("dlt645: no core attached, dropping %r", events)
            return None
        try:
            actions = self.dispatch(events) or []
        except Exception:
            log.exception("dlt645: the core failed on %r", events)
            return None
        reply = None
        for action in actions:
            if getattr(action, "kind", None) == "ack":
                answer = self.slave.ack(action)
                if answer is not None:
                    reply = answer
        return reply


class Connection:
    """One byte stream (a serial port or a TCP client): its own frame parser."""

    def __init__(self, link):
        self.link = link
        self.parser = F.Parser()

    def receive(self, chunk):
        """Bytes arrived; return the replies to send."""
        return self.link.handle(self.parser.feed(chunk))

    def quiet(self):
        """The line went quiet: drop a partial frame, answer any frame it hid."""
        if not self.parser.pending():
            return []
        return self.link.handle(self.parser.timeout())


class SerialSlave:
    """Serve a slave on a pyserial port or URL, in a thread; reopens on errors.

    ``direction(on)``, when given, switches a half-duplex RS-485
    transceiver: True just before a reply is written, False once
    ``flush()`` (tcdrain: the UART has shifted out the last stop bit) has
    returned, so the line is driven only while a frame is on it.
    """

    def __init__(self, link, url, baud=2400, parity="E", reply_delay_ms=20, retry_s=2.0, direction=None):
        self.link = link
        self.direction = direction
        self.url = url
        self.baud = baud
        self.parity = parity
        self.reply_delay_s = reply_delay_ms / 1000.0
        self.retry_s = retry_s
        self.port = None
        self._stop = threading.Event()
        self._thread = None
        self.opened = threading.Event()

    def start(self):
        """Start the thread; returns self."""
        self._thread = threading.Thread(target=self._run, name="dlt645-serial-%s" % self.url, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop the thread and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.port = serial.serial_for_url(
                    self.url, baudrate=self.baud, bytesize=8, parity=self.parity, stopbits=1, timeout=GAP_S
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                log.warning("dlt645: cannot open %s: %s (retrying in %.0f s)", self.url, exc, self.retry_s)
                self._stop.wait(self.retry_s)
                continue
            self.opened.set()
            try:
                self._serve(self.port)
            except (serial.SerialException, OSError) as exc:
                log.warning("dlt645: %s failed: %s (reopening)", self.url, exc)
                self._stop.wait(self.retry_s)
            finally:
                self.opened.clear()
                try:
                    self.port.close()
                except (serial.SerialException, OSError):
                    pass

    def _serve(self, port):
        conn = Connection(self.link)
        while not self._stop.is_set():
            chunk = port.read(max(1, min(port.in_waiting, 512)))
            replies = conn.receive(chunk) if chunk else conn.quiet()
            for reply in replies:
                if self.reply_delay_s:
                    # the standard wants >= 20 ms so the master's transceiver turns round
                    time.sleep(self.reply_delay_s)
                self._send(port, reply)

    def _send(self, port, reply):
        if self.direction is None:
            port.write(reply)
            port.flush()
            return
        self.direction(True)
        try:
            port.write(reply)
            port.flush()
        finally:
            self.direction(False)  # never leave the bus driven, even if the write failed


class TcpSlaveServer:
    """Serve a slave to TCP clients (gateways, test tools), a thread each."""

    def __init__(self, link, host="127.0.0.1", port=0):
        self.link = link
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(MAX_CONNECTIONS)
        self._sock.settimeout(0.2)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._threads = []
        self._clients = set()
        self._guard = threading.Lock()
        self._thread = None

    def start(self):
        """Start accepting; returns self."""
        self._thread = threading.Thread(target=self._accept, name="dlt645-tcp-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Close the listener and every client, join the threads."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()
        with self._guard:
            clients = list(self._clients)
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("dlt645: accept failed")
                time.sleep(0.2)
                continue
            with self._guard:
                if len(self._clients) >= MAX_CONNECTIONS:
                    log.warning("dlt645: refusing %s: %d clients already", peer, MAX_CONNECTIONS)
                    client.close()
                    continue
                self._clients.add(client)
            t = threading.Thread(target=self._serve, args=(client, peer), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, client, peer):
        conn = Connection(self.link)
        client.settimeout(TCP_IDLE_S)
        try:
            while not self._stop.is_set():
                try:
                    chunk = client.recv(1024)
                except socket.timeout:
                    replies = conn.quiet()
                else:
                    if not chunk:
                        return
                    replies = conn.receive(chunk)
                for reply in replies:
                    client.sendall(reply)
        except OSError as exc:
            log.info("dlt645: client %s gone: %s", peer, exc)
        finally:
            with self._guard:
                self._clients.discard(client)
            client.close()


def open_slave(link, device, baud=2400, parity="E", reply_delay_ms=20, direction=None):
    """Start serving ``link`` on ``device``: ``tcp://HOST:PORT`` listens, anything else is pyserial's.

    ``direction`` switches an RS-485 transceiver around each reply on a
    serial device (``SerialSlave``); a TCP server has no bus to turn round.
    Raises ValueError for a malformed ``tcp://`` address (naming it) and
    OSError when the port cannot be bound.
    """
    if device.startswith("tcp://"):
        host, port = parse_hostport(device[6:], "dlt645.device")
        return TcpSlaveServer(link, host, port).start()
    return SerialSlave(link, device, baud, parity, reply_delay_ms, direction=direction).start()


def parse_hostport(text, field):
    """``"HOST:PORT"`` -> (host, port); ValueError naming ``field`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("%s: %r must look like tcp://HOST:PORT" % (field, text))
    return host.strip("[]"), int(port)


class SerialMaster:
    """Ask a meter over a pyserial port or URL (``socket://host:port`` works)."""

    def __init__(self, url, baud=2400, parity="E", timeout=1.0, retries=1):
        self.timeout = timeout
        self.retries = retries
        self.port = serial.serial_for_url(url, baudrate=baud, bytesize=8, parity=parity, stopbits=1, timeout=0.05)
        self.parser = F.Parser()

    def close(self):
        """Close the port."""
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def broadcast(self, raw):
        """Send a broadcast frame (no reply is expected)."""
        self.port.write(raw)
        self.port.flush()

    def request(self, raw, function, address=None):
        """Send ``raw`` and return the data of the matching reply.

        Frames that are not the reply (our own echo on a half-duplex bus,
        other slaves) are skipped.  Raises M.ReplyError on an abnormal reply
        and LinkTimeout when nothing valid arrives after the retries.
        """
        for _ in range(self.retries + 1):
            self.port.reset_input_buffer()
            self.parser.reset()
            self.port.write(raw)
            self.port.flush()
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                chunk = self.port.read(max(1, min(self.port.in_waiting, 512)))
                frames = self.parser.feed(chunk) if chunk else self.parser.timeout()
                for fr in frames:
                    try:
                        return fr, M.check_reply(fr, function, address)
                    except M.ReplyError:
                        raise
                    except ValueError:
                        continue
        raise LinkTimeout("no valid reply to function 0x%02X within %.1f s" % (function, self.timeout))

    def read(self, address, di):
        """The value bytes of ``di`` from the meter at ``address``."""
        fr, _ = self.request(M.read_request(address, di), F.READ, address)
        return M.read_reply(fr, address, di)

    def read_energy_wh(self, address):
        """Forward active total energy (00010000) in Wh."""
        return M.energy_wh(self.read(address, M.DI_FORWARD_TOTAL))

    def read_address(self):
        """Ask the only meter on the line for its address (12-digit str)."""
        fr, _ = self.request(M.read_address_request(), F.READ_ADDRESS)
        return M.address_reply(fr)
