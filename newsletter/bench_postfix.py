"""A private Postfix on loopback for `newsletter bench` (the tests' Postfix fixture builds on it):
127.0.0.1 only, STARTTLS required with a self-signed certificate, every message discarded."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .bench_sinks import free_port, listening

POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_params(root: Path, cert: Path, key: Path) -> dict[str, str]:
    """main.cf of a private instance in `root`: 127.0.0.1 only, STARTTLS required, every message discarded
    (nothing can leave); callers override what they need (the tests deliver into a Maildir)."""
    return {
        "compatibility_level": "3.6", "queue_directory": str(root / "queue"), "data_directory": str(root / "data"),
        "maillog_file": str(root / "maillog"), "maillog_file_prefixes": str(root),
        "myhostname": "relay.test", "mydomain": "relay.test", "myorigin": "$myhostname", "mydestination": "",
        "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4", "mynetworks": "127.0.0.0/8",
        "relay_domains": "", "alias_maps": "", "alias_database": "", "biff": "no",
        "local_transport": "error:5.1.1 no local delivery on this relay", "default_transport": "discard:benchmark",
        "smtpd_tls_cert_file": str(cert), "smtpd_tls_key_file": str(key), "smtpd_tls_security_level": "encrypt",
        "smtp_tls_security_level": "none", "smtpd_banner": "$myhostname ESMTP private relay",
        "maximal_queue_lifetime": "1h", "bounce_queue_lifetime": "1h",
    }


def write_postfix(root: Path, port: int, params: dict[str, str]) -> Path:
    """main.cf and master.cf of a private instance; returns its config directory (for `postfix -c`)."""
    import pwd
    for sub in ("etc", "queue", "data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chown(root / "data", pwd.getpwnam("postfix").pw_uid, -1)
    (root / "etc" / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
    (root / "etc" / "master.cf").write_text(POSTFIX_MASTER_CF.format(port=port))
    return root / "etc"


def postfix(config_dir: Path, *args: str) -> subprocess.CompletedProcess:
    program = shutil.which("postfix") or "/usr/sbin/postfix"
    return subprocess.run([program, "-c", str(config_dir), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, its own CA (openssl: the bench needs no test extras)."""
    cert, key = folder / "relay.pem", folder / "relay.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class PostfixSink:
    """The bench's own Postfix: 127.0.0.1 only, STARTTLS with a self-signed certificate, discard transport."""

    def __init__(self):
        # Its queue on tmpfs where there is one: Postfix fsyncs every queue file, and on this VM's disk
        # that alone held it near 110 messages a second; the figure is meant for the SMTP path.
        shm = Path("/dev/shm")
        folder = self.folder = Path(tempfile.mkdtemp(prefix="newsletter-bench-postfix-",
                                                     dir=shm if shm.is_dir() else None))
        folder.chmod(0o755)  # Postfix's own user works in its queue under here
        self.cert, key = self_signed(folder)
        self.port = free_port()
        self.config_dir = write_postfix(folder, self.port, postfix_params(folder, self.cert, key))
        proc = postfix(self.config_dir, "start")
        if proc.returncode != 0 or not listening(self.port, 30):
            raise RuntimeError(f"postfix did not start on 127.0.0.1:{self.port}: {proc.stderr.strip()[-500:]} "
                               "(it needs root and Debian's postfix package)")

    def stop(self) -> None:
        postfix(self.config_dir, "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


