"""The bounce mailbox over IMAP: a real Dovecot (Debian's dovecot-imapd) started on 127.0.0.1 by the test, with a
certificate of a private CA (trusted through bounce_ca_file), over implicit TLS (imaps://) and STARTTLS (imap://).
A missing Dovecot is a failure, never a skip (tests/setup.sh installs it)."""

from __future__ import annotations

import datetime as dt
import imaplib
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from newsletter.cli import cli
from newsletter.setting_values import parse_mailbox
from newsletter.sources.bounces import BounceMailboxError, ImapBounces

from .fixtures_servers import free_port, wait_for_port
from .test_bounces import FIXTURES, bounce_of, sent  # noqa: F401  (the `sent` fixture)

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "bounces@example.org", "imap-test-password"
MAIL_UID = 65534  # nobody: Dovecot never runs a user's mail processes as root


def private_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Dovecot:
    def __init__(self, root: Path):
        if not Path(DOVECOT).exists():
            pytest.fail("dovecot is not installed: run tests/setup.sh (Debian's dovecot-imapd)")
        self.root = root
        self.ca, cert, key = private_ca_and_cert(root)
        self.imaps_port, self.imap_port = free_port(), free_port()
        self.maildir = root / "home" / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        for path in [root / "home", *root.joinpath("home").rglob("*")]:
            os.chown(path, MAIL_UID, MAIL_UID)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        self.config = root / "dovecot.conf"
        self.config.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain
first_valid_uid = {MAIL_UID}
mail_location = maildir:{self.maildir}
namespace inbox {{
  inbox = yes
  separator = .
}}
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={root}/home
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
        with (root / "dovecot.out").open("wb") as out:
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config)], stdout=out,
                                         stderr=subprocess.STDOUT)
        alive = lambda: self.proc.poll() is None  # noqa: E731
        if not (wait_for_port(self.imaps_port, 15, alive) and wait_for_port(self.imap_port, 15, alive)):
            self.stop()
            logs = [p.read_text() for p in (root / "dovecot.out", root / "dovecot.log") if p.exists()]
            pytest.fail(f"dovecot did not start: {' '.join(logs)}")

    def append(self, raw: bytes) -> None:
        with imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port,
                               ssl_context=ssl.create_default_context(cafile=str(self.ca))) as conn:
            conn.login(USER, PASSWORD)
            assert conn.append("INBOX", None, None, raw)[0] == "OK"

    def count(self, mailbox: str) -> int:
        with imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port,
                               ssl_context=ssl.create_default_context(cafile=str(self.ca))) as conn:
            conn.login(USER, PASSWORD)
            typ, data = conn.select(mailbox, readonly=True)
            return int(data[0]) if typ == "OK" else -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def dovecot():
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    root.chmod(0o755)  # the mail user (nobody) must reach its home inside
    server = Dovecot(root)
    yield server
    server.stop()
    time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)


def point_at(sent, dovecot, scheme: str, monkeypatch) -> None:  # noqa: F811
    port = dovecot.imaps_port if scheme == "imaps" else dovecot.imap_port
    config = Path(sent.config.source)
    text = "".join(line for line in config.read_text().splitlines(keepends=True)
                   if not line.startswith("bounce_mailbox ="))
    config.write_text(f'bounce_mailbox = "{scheme}://bounces%40example.org@127.0.0.1:{port}/INBOX"\n'
                      f'bounce_ca_file = "{dovecot.ca}"\n' + text)
    monkeypatch.setenv("NEWSLETTER_BOUNCE_PASSWORD", PASSWORD)


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_bounces_are_read_over_imap_applied_and_moved(sent, dovecot, runner, monkeypatch, scheme):  # noqa: F811
    hard, complaint = sent.outbox_messages[:2]
    dovecot.append(bounce_of("postfix_user_unknown", hard))
    dovecot.append(bounce_of("yahoo_arf_abuse", complaint))
    dovecot.append(b"Subject: hello\r\n\r\nnot a bounce\r\n")
    point_at(sent, dovecot, scheme, monkeypatch)
    result = runner.invoke(cli, ["--config", str(sent.config.source), "bounces", "process"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"{scheme}://127.0.0.1:{dovecot.imaps_port if scheme == 'imaps' else dovecot.imap_port}"
                                     "/INBOX: 3 message(s): hard 1, soft 0, complaint 1, delivered 0, ignored 0, "
                                     "unmatched 0, unreadable 1")
    status = {m["To"].addresses[0].addr_spec: sent.store.get_subscriber(m["To"].addresses[0].addr_spec)["status"]
              for m in (hard, complaint)}
    assert list(status.values()) == ["bounced", "complained"]
    assert (dovecot.count("INBOX"), dovecot.count("INBOX.processed"), dovecot.count("INBOX.unreadable")) == (0, 2, 1)
    again = runner.invoke(cli, ["--config", str(sent.config.source), "bounces", "process"], catch_exceptions=False)
    assert "0 message(s)" in again.output


def test_a_wrong_password_or_an_untrusted_certificate_is_one_line(sent, dovecot, runner, monkeypatch):  # noqa: F811
    point_at(sent, dovecot, "imaps", monkeypatch)
    monkeypatch.setenv("NEWSLETTER_BOUNCE_PASSWORD", "wrong")
    result = runner.invoke(cli, ["--config", str(sent.config.source), "bounces", "process"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"Error: imaps://127.0.0.1:{dovecot.imaps_port}/INBOX: IMAP: ")
    where = parse_mailbox(f"imaps://u@127.0.0.1:{dovecot.imaps_port}/INBOX")
    with pytest.raises(BounceMailboxError, match="certificate not trusted .*; set bounce_ca_file for a private CA"):
        ImapBounces(where, PASSWORD)  # the system's CAs do not know ours
    with pytest.raises(BounceMailboxError, match="NEWSLETTER_BOUNCE_PASSWORD is not set"):
        ImapBounces(where, None)
