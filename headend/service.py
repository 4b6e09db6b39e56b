"""``pmeter headend serve``: the head-end as a running service.

One process: the MQTT head-end (``headend.link.HeadEnd``, a persistent
session that reconnects by itself) keeps the shadow current from every
birth, telemetry, event, state and ack; the delivery worker
(``headend.delivery``) gets queued top-ups and commands to their meters;
notifications (``headend.notify``) go to the webhook and the log; daily
freezes are settled as they come (``headend.settlement``); the HTTP
API (``headend.api``) runs on uvicorn.  SIGTERM or SIGINT stops it
cleanly: the API stops taking requests, then everything received is in the
file before it exits.  All state is in the ledger's SQLite file.
"""

import signal
import sys

from . import options
from .batches import Batches
from .delivery import Deliverer, Queue
from .link import Fleet, HeadEnd
from .notify import Outbox, Webhook
from .options import BadInput, Settings
from .settlement import Settlement


def log(message):
    """The service's log line (stderr)."""
    sys.stderr.write("pmeter headend: %s\n" % message)
    sys.stderr.flush()


class Service:
    """The running parts on one config (``Settings``); ``start``/``stop``."""

    def __init__(self, st):
        key = st.master()
        host, port, tls, client_id = st.broker()
        self.where = "%s:%d" % (host, port)
        self.ttl_s = st.service("service", "ttl_s")
        url, secret = st.service("webhook", "url"), st.service("webhook", "secret")
        if url is not None and secret is None:
            raise BadInput("webhook.secret", "required with webhook.url (the key notifications are signed with)")
        if url is not None and not url.startswith(("http://", "https://")):
            raise BadInput("webhook.url", "must be an http:// or https:// URL, got %r" % url)
        group = st.service("service", "group")
        if group is not None and (any(c in group for c in "/+#") or not group.isprintable()):
            raise BadInput("service.group", "must be a name without /, + or #, got %r" % group)
        self.shadow = st.shadow()
        self.queue = Queue(self.shadow.ledger)
        self.outbox = Outbox(self.shadow.ledger, log)
        self.settlement = Settlement(self.shadow, self.outbox)
        self.batches = Batches(self.queue)
        self.head = HeadEnd(Fleet(key), self.shadow, host, port, tls=tls, client_id=client_id,
                            group=group)
        self.head.client.reconnect_delay_set(1, 30)
        self.deliverer = Deliverer(self.head, self.queue, st.service("service", "poll_s"), log, shared=bool(group))
        self.head.listeners.extend([self.deliverer.listen, self.outbox.listen, self.settlement.listen])
        self.webhook = None
        if url is not None:
            self.webhook = Webhook(self.outbox, url, secret, st.service("webhook", "retry_s"),
                                   st.service("webhook", "max_retry_s"), log)

    def start(self):
        """Connect (in the background: a broker that is down now is retried) and start the workers."""
        self.head.start(background=True)
        self.deliverer.start()
        if self.webhook is not None:
            self.webhook.start()
        return self

    def stop(self):
        """Stop the workers, disconnect with everything received in the file, close it."""
        self.deliverer.stop()
        if self.webhook is not None:
            self.webhook.stop()
        self.head.stop()
        self.shadow.close()

    def topup(self, meter, amount, key, source, wait_s):
        """Vend and queue a top-up, deliver it, wait up to ``wait_s``: ``(row, replayed)``."""
        row, replayed = self.queue.topup(self.head.fleet.master, meter, amount, self.ttl_s, key, source)
        return self._wait(row, replayed, wait_s)

    def command(self, meter, what, key, source, wait_s):
        """Issue and queue command ``what`` = (name, args), deliver it, wait: ``(row, replayed)``."""
        name, args = what
        row, replayed = self.queue.command(self.head.fleet.master, meter, name, args, self.ttl_s, key, source)
        return self._wait(row, replayed, wait_s)

    def batch(self, rows, name, args, source):
        """Queue command ``name`` to every ``(line, meter)`` of ``rows`` (checked), deliver: the batch id."""
        batch_id = self.batches.create(self.head.fleet.master, rows, name, args, self.ttl_s, source)
        for _, meter in rows:
            self.deliverer.kick(meter)
        return batch_id

    def _wait(self, row, replayed, wait_s):
        if not replayed:
            self.deliverer.kick(row["meter"])
        return self.queue.wait(row["id"], wait_s), replayed


def register(subparsers):
    """Add ``headend serve`` to the ``pmeter`` command."""
    p = subparsers.add_parser("headend", help="the head-end service (HTTP API, delivery queue, notifications)")
    sub = p.add_subparsers(dest="headend_command", metavar="SUBCOMMAND")
    sub.required = True
    s = sub.add_parser("serve", help="run the head-end service until SIGTERM (see docs/headend.md)")
    options.add(s, ["master", "ledger"] + list(options.BROKER))
    s.set_defaults(handler=cmd_serve)


def cmd_serve(args):
    """Run the service; exit code 0 after SIGTERM/SIGINT, 2 on bad configuration."""
    return options.run(_serve, args)


def listen_address(st):
    """``(host, port)`` of ``[service] listen``; BadInput naming it."""
    text = st.service("service", "listen")
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
        raise BadInput("service.listen", "must be HOST:PORT (port 1-65535), got %r" % text)
    return host.strip("[]"), int(port)


def _serve(args):
    try:
        import uvicorn

        from . import api
    except ImportError as e:
        raise BadInput("headend serve", "needs the HTTP server (%s): pip install 'prepaid-meter[headend]'" % e)

    st = Settings(args)
    host, port = listen_address(st)
    tokens = {role: st.service("api", role) for role in api.ROLES}
    if not any(tokens.values()):
        raise BadInput("api", "no bearer tokens: set [api] payment, operator and/or read (lists of tokens)")
    svc = Service(st)
    server = uvicorn.Server(uvicorn.Config(api.app(svc, tokens, st.service("service", "wait_s")), host=host,
                                           port=port, log_level="warning", access_log=False, lifespan="off"))
    # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the
    # handlers it found: these do nothing, so the process ends through
    # ``finally`` (with everything in the file) instead of being killed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: None)
    svc.start()
    log("serving http://%s:%d (broker %s, ledger %s)" % (host, port, svc.where, st.get("ledger")))
    try:
        server.run()
    finally:
        svc.stop()
        log("stopped")
    if not server.started:
        return options.fail("the HTTP API could not listen on %s:%d (in use?)" % (host, port), 1)
    return 0
