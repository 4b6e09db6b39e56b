"""``pmeter pki``: the certificate authority of a deployment, in one folder.

Every client of the broker authenticates with a certificate from this CA;
Mosquitto takes the certificate's common name as the MQTT user name
(``use_identity_as_username``) and as the client id
(``use_username_as_clientid``), and the ACL keys every permission on it:

- a meter's name is its 12-digit id (``meter-<id>.crt``);
- a head-end process's name is ``headend-<name>`` (``headend-<name>.crt``):
  one identity per process, so several run at once without taking over
  each other's session;
- the broker's certificate names its host (and addresses).

Files (keys mode 0600, never overwritten):

    pki/ca.crt ca.key ca.crl          the CA, its revocation list
    pki/broker.crt broker.key          the broker's server certificate
    pki/meter-<id>.crt .key            one per meter
    pki/headend-<name>.crt .key        one per head-end process
    pki/acl                            the Mosquitto ACL with every head-end
    pki/revoked/                       revoked certificates, kept for the record

Keys are EC P-256: small, fast, and accepted by Mosquitto, paho and
MicroPython's TLS alike.
"""

import datetime
import ipaddress
import json
import os
import re
import sys

from . import check_meter_id

DEFAULT_DIR = "pki"
CA_DAYS = 3650
CERT_DAYS = 825  # the longest validity current TLS clients accept for a server certificate
# An expired CRL makes OpenSSL refuse every client: make it outlive the CA.
CRL_DAYS = CA_DAYS + 365
HEADEND_PREFIX = "headend-"
# Head-end identities of the shipped deploy/mosquitto/acl: the old single
# name ``headend`` (certificates issued before per-process identities) and
# the name of the operator's CLI in the docs.
SHIPPED_HEADENDS = ("headend", "headend-ops")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class PKIError(Exception):
    """Bad input or a PKI folder in the wrong state: exit code 2, the message says why."""


# ------------------------------------------------------------------ ACL


def acl_text(headends):
    """The Mosquitto ACL: a write-commands/read-uplinks role per head-end
    identity in ``headends``, and every meter confined to its own subtree."""
    lines = [
        "# Mosquitto ACL for pmeter (see docs/mqtt.md); written by `pmeter pki`.",
        "# The MQTT user name is the client certificate's CN (or the password",
        "# user): a meter's 12-digit id, or headend-<name> for a head-end process.",
        "# Mosquitto refuses to substitute a user name containing + or #.",
        "",
        "# Head-end role, one block per identity: commands to any meter, every uplink.",
    ]
    for name in headends:
        lines += ["user %s" % name, "topic write pm/+/cmd"]
        lines += ["topic read pm/+/%s" % leaf for leaf in ("ack", "evt", "tele", "state", "status", "birth")]
        lines.append("")
    lines.append("# Every meter: only its own subtree, and only in its own direction.")
    lines.append("pattern read pm/%u/cmd")
    lines += ["pattern write pm/%%u/%s" % leaf for leaf in ("ack", "evt", "tele", "state", "status", "birth")]
    return "\n".join(lines) + "\n"


def cert_name(path):
    """The common name of the PEM certificate at ``path`` (the broker's name for its holder)."""
    return _cn(CA._load_cert(str(path)))


def _cn(cert):
    return cert.subject.get_attributes_for_oid(_x509().oid.NameOID.COMMON_NAME)[0].value


# ------------------------------------------------------------------ files


def _x509():
    from cryptography import x509

    return x509


def _write_private(path, data):
    from .keys import KeyFileError, create_private

    try:
        create_private(path, data)
    except KeyFileError as e:
        raise PKIError(str(e))


def _write_public(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class CA:
    """A PKI folder: the CA and everything it issued."""

    def __init__(self, folder):
        self.folder = str(folder)

    def path(self, name):
        """Path of a file in the folder."""
        return os.path.join(self.folder, name)

    # ---------------------------------------------------------- creation

    def init(self, name="pmeter CA", days=CA_DAYS):
        """Make a new CA (key, self-signed certificate, empty CRL, ACL)."""
        from cryptography.hazmat.primitives.asymmetric import ec

        if os.path.exists(self.path("ca.key")) or os.path.exists(self.path("ca.crt")):
            raise PKIError("--dir: %s already holds a CA (ca.key/ca.crt): not overwriting it" % self.folder)
        os.makedirs(self.folder, mode=0o755, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = self._name(name)
        cert = self._builder(subject, subject, key.public_key(), days, ca=True).sign(key, self._hash())
        _write_private(self.path("ca.key"), self._key_pem(key))
        _write_public(self.path("ca.crt"), self._pem(cert))
        self._write_crl([], key, cert)
        self.write_acl()
        return cert

    def issue(self, kind, name, hosts=(), ips=(), days=CERT_DAYS):
        """Issue a certificate; ``kind`` is broker, meter or headend.  Returns (cert path, key path)."""
        from cryptography.hazmat.primitives.asymmetric import ec

        stem, cn = self._identity(kind, name)
        crt, keyfile = self.path(stem + ".crt"), self.path(stem + ".key")
        for p in (crt, keyfile):
            if os.path.exists(p):
                raise PKIError("%s already exists: revoke it first (pmeter pki revoke) to issue a new one" % p)
        ca_key, ca_cert = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(self._name(cn), ca_cert.subject, key.public_key(), days)
        x509 = _x509()
        oid = x509.oid.ExtendedKeyUsageOID
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([oid.SERVER_AUTH if kind == "broker" else oid.CLIENT_AUTH]), critical=False
        )
        if kind == "broker":
            sans = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, self._hash())
        _write_private(keyfile, self._key_pem(key))
        _write_public(crt, self._pem(cert))
        if kind == "headend":
            self.write_acl()
        return crt, keyfile

    def revoke(self, kind, name):
        """Revoke an issued certificate: add it to ca.crl, move it to revoked/, drop its key."""
        stem, _cn = self._identity(kind, name)
        crt = self.path(stem + ".crt")
        if not os.path.exists(crt):
            raise PKIError("%s does not exist: nothing to revoke (pmeter pki list shows what was issued)" % crt)
        ca_key, ca_cert = self._load_ca()
        cert = self._load_cert(crt)
        entries = [(r.serial_number, r.revocation_date_utc) for r in self._load_crl()]
        entries.append((cert.serial_number, self._now()))
        self._write_crl(entries, ca_key, ca_cert)
        os.makedirs(self.path("revoked"), mode=0o755, exist_ok=True)
        os.replace(crt, self.path(os.path.join("revoked", "%x-%s.crt" % (cert.serial_number, stem))))
        try:
            os.remove(self.path(stem + ".key"))
        except FileNotFoundError:
            pass
        if kind == "headend":
            self.write_acl()
        return cert.serial_number

    def write_acl(self):
        """Rewrite pki/acl for the head-end certificates in the folder."""
        names = sorted(c["name"] for c in self.certificates() if c["kind"] == "headend" and not c["revoked"])
        _write_public(self.path("acl"), acl_text(names).encode())

    # ---------------------------------------------------------- reading

    def certificates(self):
        """Every certificate in the folder and revoked/, as dicts (file, kind, name, serial, not_after, revoked)."""
        revoked = set(r.serial_number for r in self._load_crl()) if os.path.exists(self.path("ca.crl")) else set()
        out = []
        for sub in ("", "revoked"):
            folder = self.path(sub) if sub else self.folder
            if not os.path.isdir(folder):
                continue
            for fn in sorted(os.listdir(folder)):
                if not fn.endswith(".crt") or (not sub and fn == "ca.crt"):
                    continue
                cert = self._load_cert(os.path.join(folder, fn))
                cn = _cn(cert)
                stem = fn[:-4].split("-", 1)[1] if sub else fn[:-4]
                kind = "broker" if stem == "broker" else "meter" if stem.startswith("meter-") else "headend"
                out.append({
                    "file": os.path.join(sub, fn) if sub else fn,
                    "kind": kind,
                    "name": cn,
                    "serial": "%x" % cert.serial_number,
                    "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d"),
                    "revoked": cert.serial_number in revoked,
                })
        return out

    # ---------------------------------------------------------- internals

    @staticmethod
    def _identity(kind, name):
        """(file stem, certificate CN) of an identity; PKIError naming the option if the name is bad."""
        if kind == "broker":
            return "broker", name
        if kind == "meter":
            try:
                return "meter-" + name, check_meter_id(name)
            except ValueError as e:
                raise PKIError("--meter: %s" % e)
        if not _NAME.match(name or ""):
            raise PKIError("--name: %r must be 1-32 of a-z, 0-9, '-', '_', starting with a letter or digit" % (name,))
        return HEADEND_PREFIX + name, HEADEND_PREFIX + name

    def _load_ca(self):
        from cryptography.hazmat.primitives import serialization

        try:
            with open(self.path("ca.key"), "rb") as f:
                key = serialization.load_pem_private_key(f.read(), None)
        except FileNotFoundError:
            raise PKIError("--dir: no CA in %s (make one with: pmeter pki init --dir %s)" % (self.folder, self.folder))
        except ValueError as e:
            raise PKIError("%s is not a PEM private key: %s" % (self.path("ca.key"), e))
        return key, self._load_cert(self.path("ca.crt"))

    @staticmethod
    def _load_cert(path):
        try:
            with open(path, "rb") as f:
                return _x509().load_pem_x509_certificate(f.read())
        except FileNotFoundError:
            raise PKIError("%s does not exist" % path)
        except ValueError as e:
            raise PKIError("%s is not a PEM certificate: %s" % (path, e))

    def _load_crl(self):
        try:
            with open(self.path("ca.crl"), "rb") as f:
                return _x509().load_pem_x509_crl(f.read())
        except FileNotFoundError:
            raise PKIError("%s does not exist (pmeter pki init makes it)" % self.path("ca.crl"))
        except ValueError as e:
            raise PKIError("%s is not a PEM CRL: %s" % (self.path("ca.crl"), e))

    def _write_crl(self, entries, ca_key, ca_cert):
        x509 = _x509()
        now = self._now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=CRL_DAYS))
        )
        for serial, when in entries:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        _write_public(self.path("ca.crl"), self._pem(builder.sign(ca_key, self._hash())))

    def _builder(self, subject, issuer, public_key, days, ca=False):
        x509 = _x509()
        now = self._now()
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        return b

    @staticmethod
    def _name(cn):
        x509 = _x509()
        return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])

    @staticmethod
    def _now():
        return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

    @staticmethod
    def _hash():
        from cryptography.hazmat.primitives import hashes

        return hashes.SHA256()

    @staticmethod
    def _pem(obj):
        from cryptography.hazmat.primitives import serialization

        return obj.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _key_pem(key):
        from cryptography.hazmat.primitives import serialization

        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


# ------------------------------------------------------------------ CLI


def _days(text):
    try:
        value = int(text)
    except ValueError:
        raise PKIError("--days must be a whole number, got %r" % (text,))
    if not 1 <= value <= 36500:
        raise PKIError("--days must be between 1 and 36500, got %d" % value)
    return value


def register(subparsers):
    """Add ``pki`` and its subcommands to the ``pmeter`` command."""
    p = subparsers.add_parser("pki", help="certificate authority: CA, broker, meter and head-end certificates, revocation")
    ps = p.add_subparsers(dest="pki_command", metavar="{init,broker,meter,headend,list,revoke}")
    ps.required = True

    def sub(name, help, days=CERT_DAYS):
        q = ps.add_parser(name, help=help)
        q.add_argument("--dir", default=DEFAULT_DIR, help="PKI folder (default %s)" % DEFAULT_DIR)
        if days:
            q.add_argument("--days", default=str(days), help="validity in days (default %d)" % days)
        q.set_defaults(handler=cmd_pki, pki_command=name)
        return q

    q = sub("init", "make the CA (ca.crt, ca.key, an empty ca.crl, the ACL)", CA_DAYS)
    q.add_argument("--name", default="pmeter CA", help="the CA's common name")
    q = sub("broker", "issue the broker's server certificate (broker.crt/.key)")
    q.add_argument("--host", action="append", required=True,
                   help="DNS name clients connect to (repeat for more names)")
    q.add_argument("--ip", action="append", default=[], help="IP address clients connect to (repeatable)")
    q = sub("meter", "issue a meter's client certificate (meter-<id>.crt/.key, CN = the meter id)")
    q.add_argument("--meter", required=True, help="meter id, 12 digits")
    q = sub("headend", "issue a head-end process's certificate (headend-<name>.crt/.key) and add it to the ACL")
    q.add_argument("--name", required=True, help="the process's name, e.g. ops, billing (CN headend-<name>)")
    q = sub("list", "list the certificates issued, with expiry and revocation", days=0)
    q.add_argument("--json", action="store_true", help="print JSON")
    q = sub("revoke", "revoke a meter's or head-end's certificate (adds it to ca.crl)", days=0)
    who = q.add_mutually_exclusive_group(required=True)
    who.add_argument("--meter", help="meter id, 12 digits")
    who.add_argument("--headend", help="head-end name (as given to pmeter pki headend --name)")
    who.add_argument("--broker", action="store_true", help="the broker's certificate")


def cmd_pki(args):
    """Run one ``pmeter pki`` subcommand; 0 ok, 2 bad input or a folder in the wrong state."""
    try:
        return _run(args)
    except PKIError as e:
        print("pmeter: %s" % e, file=sys.stderr)
        return 2
    except OSError as e:
        print("pmeter: --dir %s: %s" % (args.dir, e), file=sys.stderr)
        return 2


def _run(args):
    ca = CA(args.dir)
    cmd = args.pki_command
    if cmd == "init":
        ca.init(args.name, _days(args.days))
        print("CA made in %s: ca.crt (give to the broker, meters and head-ends), ca.key (keep offline, mode 600), "
              "ca.crl, acl" % args.dir)
        return 0
    if cmd == "list":
        certs = ca.certificates()
        if args.json:
            print(json.dumps(certs, indent=1, sort_keys=True))
        else:
            for c in certs:
                print("%-8s %-20s %-34s until %s%s" % (c["kind"], c["name"], c["file"], c["not_after"],
                                                       "  REVOKED" if c["revoked"] else ""))
        return 0
    if cmd == "revoke":
        kind, name = ("meter", args.meter) if args.meter else ("headend", args.headend) if args.headend else ("broker", "")
        serial = ca.revoke(kind, name)
        print("revoked serial %x; install the new %s on the broker and restart it (docs/deploy.md)"
              % (serial, ca.path("ca.crl")))
        return 0
    if cmd == "broker":
        for a in args.ip:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise PKIError("--ip: %r is not an IP address" % (a,))
        for h in args.host:
            if not h or not re.match(r"^[A-Za-z0-9.-]+$", h):
                raise PKIError("--host: %r is not a DNS name" % (h,))
        crt, key = ca.issue("broker", args.host[0], args.host, args.ip, _days(args.days))
    elif cmd == "meter":
        crt, key = ca.issue("meter", args.meter, days=_days(args.days))
    else:
        crt, key = ca.issue("headend", args.name, days=_days(args.days))
        print("added %s%s to %s" % (HEADEND_PREFIX, args.name, ca.path("acl")))
    print("%s\n%s" % (crt, key))
    return 0
