"""A real Postfix on loopback, started by the tests: STARTTLS with a private CA, Maildir delivery.

Each `PostfixRelay` is a private instance (`postfix -c DIR start`): its own
main.cf and master.cf, queue and data directories in a temporary folder,
smtpd on 127.0.0.1 at a free port only, STARTTLS required with a certificate
signed by a CA made here with `cryptography`, and every address of the test
domain delivered by virtual(8) into a Maildir. Nothing can leave: other
domains and local delivery answer with an error transport. A missing or
failing Postfix is a test failure, never a skip.

Reuse: `postfix_relay` is a ready instance; `make_postfix_relay(mailboxes=...,
main_cf=...)` builds others (say, a `bounces` Maildir for the sender and
`smtpd_reject_unlisted_recipient = no` so that an unknown recipient is
accepted and then bounced for real). `relay.stop()` / `relay.start()` take
it down and bring it back on the same port; `relay.messages("inbox")` parses
what was delivered; `relay.wait_for(n)` waits for the queue to deliver.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter import bench_postfix
from tests.conftest import read_maildir
from tests.fixtures_servers import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOMAIN = "example.org"
#: The user virtual(8) delivers as (anything but root, at or above virtual_minimum_uid).
MAIL_UID = MAIL_GID = 65534


@dataclass
class TlsFiles:
    ca: Path  # the private CA's certificate (what smtp_ca_file names)
    cert: Path  # the relay's certificate, signed by the CA, for localhost and 127.0.0.1
    key: Path


def make_private_ca(folder: Path, names: tuple[str, ...] = ("localhost",), ip: bool = True) -> TlsFiles:
    """A CA and a server certificate signed by it, for `names` (and 127.0.0.1 unless `ip` is false)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter tests private CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName(n) for n in names] + ([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if ip else [])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(folder / "ca.pem", folder / "relay.pem", folder / "relay.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


@dataclass
class PostfixRelay:
    root: Path
    port: int
    tls: TlsFiles
    #: regexp on the recipient -> Maildir name under mail/ (virtual_mailbox_maps)
    mailboxes: dict[str, str] = field(default_factory=lambda: {rf"^[^@]+@{DOMAIN.replace('.', '[.]')}$": "inbox"})
    main_cf: dict[str, str] = field(default_factory=dict)  # extra or overriding main.cf parameters
    host: str = "127.0.0.1"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_file(self) -> Path:
        return self.root / "maillog"

    def write_config(self) -> None:
        """The bench's private instance (bench_postfix.postfix_params), delivering the test domain into Maildirs."""
        (self.root / "mail").mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "mail", MAIL_UID, MAIL_GID)
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        maps = self.config_dir / "virtual_mailboxes"
        maps.write_text("".join(f"/{pattern}/ {name}/\n" for pattern, name in self.mailboxes.items()))
        params = {
            **bench_postfix.postfix_params(self.root, self.tls.cert, self.tls.key),
            "default_transport": "error:5.7.1 nothing leaves the test relay",
            "virtual_mailbox_domains": DOMAIN, "virtual_mailbox_base": str(self.root / "mail"),
            "virtual_mailbox_maps": f"regexp:{maps}", "virtual_minimum_uid": "100",
            "virtual_uid_maps": f"static:{MAIL_UID}", "virtual_gid_maps": f"static:{MAIL_GID}",
            "smtpd_tls_received_header": "yes",
            **self.main_cf,
        }
        bench_postfix.write_postfix(self.root, self.port, params)

    def start(self) -> None:
        """Start (again, on the same port) and wait until smtpd answers; a failure fails the test."""
        # On a restart after a stop that caught a message mid-write, postsuper (running as the mail owner)
        # warns into the maillog, which postlogd created as root: let the mail owner open it.
        if self.log_file.exists():
            shutil.chown(self.log_file, user="postfix", group="postfix")
        proc = bench_postfix.postfix(self.config_dir, "start")
        if proc.returncode != 0 or not _wait_listening(self.port, 30):
            pytest.fail(f"Postfix did not start on 127.0.0.1:{self.port} (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-1500:]}\n{self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop the whole instance; returns once nothing listens on its port."""
        bench_postfix.postfix(self.config_dir, "stop")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _listening(self.port):
            time.sleep(0.05)

    def maildir(self, name: str = "inbox") -> Path:
        return self.root / "mail" / name

    def messages(self, name: str = "inbox") -> list[EmailMessage]:
        """What virtual(8) delivered into that Maildir, parsed."""
        return read_maildir(self.maildir(name))

    def count(self, name: str = "inbox") -> int:
        path = self.maildir(name)
        return sum(1 for sub in ("new", "cur") if (path / sub).exists() for _ in (path / sub).iterdir())

    def wait_for(self, count: int, timeout: float = 60, name: str = "inbox") -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(name) >= count:
                return True
            time.sleep(0.1)
        return self.count(name) >= count

    def queue_empty(self) -> bool:
        """Nothing waits in the relay's own queue (everything accepted was delivered or bounced)."""
        queue = self.root / "queue"
        return not any(files for sub in ("maildrop", "incoming", "active", "deferred", "hold")
                       for _, _, files in os.walk(queue / sub))

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else "(no maillog)"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def make_postfix_relay():
    """Build and start private Postfix instances; every one is stopped and removed at teardown."""
    if not Path(POSTFIX).exists():
        pytest.fail("postfix not found: run tests/setup.sh (apt-get install postfix); Postfix tests never skip")
    made: list[PostfixRelay] = []
    # Not under pytest's tmp_path: its parents are private to root, and Postfix's own users
    # (postfix for the queue, the Maildir owner for delivery) must reach these folders.
    root = Path(tempfile.mkdtemp(prefix="nl-postfix-"))
    root.chmod(0o755)

    def make(**options) -> PostfixRelay:
        where = root / f"relay{len(made)}"
        tls = make_private_ca(where / "tls")
        relay = PostfixRelay(where, free_port(), tls, **options)
        made.append(relay)
        relay.write_config()
        relay.start()
        return relay

    try:
        yield make
    finally:
        for relay in made:
            relay.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postfix_relay(make_postfix_relay) -> PostfixRelay:
    """A running Postfix: STARTTLS required on 127.0.0.1:port, every @example.org address into mail/inbox."""
    return make_postfix_relay()
