"""`newsletter bench`: the whole weekly digest at scale, measured.

Each (size, messenger) case runs in a fresh child process, so its peak RSS is
its own. A case: generate N subscribers across segments, cadences and topics
in a scratch SQLite file, add 10 recent summaries, then time one
`DigestRunner.run("weekly")` (select, render, personalise, ledger, dispatch).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from . import bootstrap
from .bench_floor import FloorMessenger
from .context import Context
from .digest import DigestRunner
from .messengers.counting import CountingMessenger
from .model import Sender
from .sources.summaries import read_sources
from .settings import load_config
from .tokens import Tokens

MESSENGERS = ("counting", "json", "sendgrid", "smtp", "smtp-pool")
SMTP_POOL = 4  # connections of the smtp-pool case
SEGMENTS = ("patients", "caregivers", "clinicians")
TOPIC_SETS = ([], ["MS"], ["NMOSD", "MOGAD"], ["MS", "PML"], [], ["Autoimmune encephalitis"], [], ["MS"])
NOW = datetime(2026, 11, 23, 7, 0)
SMTP_LIMIT = 20_000


def subscriber_rows(n: int):
    """Deterministic, streamed: never a list of all subscribers."""
    for i in range(n):
        cadence = "monthly" if i % 10 == 9 else "weekly"
        yield (f"reader{i}@bench.example.org", f"Reader {i}" if i % 3 else "", SEGMENTS[i % 3], cadence,
               json.dumps(TOPIC_SETS[i % len(TOPIC_SETS)]))


def recent_summaries(count: int = 10) -> list[dict[str, Any]]:
    records = read_sources(bootstrap.sample_summary_files())[:count]
    for i, record in enumerate(records):
        record["published"] = (NOW.date() - timedelta(days=i % 6)).isoformat()
    return records


# -- loopback sinks, run in their own process so they do not share our core ----

TO_RE = re.compile(rb'"to":\s*\[')


class _SinkHandler(BaseHTTPRequestHandler):
    counts = {"requests": 0, "recipients": 0}
    protocol_version = "HTTP/1.1"  # keep-alive, as SendGrid's API

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.counts["requests"] += 1
        self.counts["recipients"] += len(TO_RE.findall(body))
        self.send_response(202)
        self.send_header("X-Message-Id", f"sink-{self.counts['requests']}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        data = json.dumps(self.counts).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def serve_http_sink(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _SinkHandler).serve_forever()


def serve_smtp_sink(port: int, cert: str = "", key: str = "") -> None:
    """aiosmtpd answering 250 to everything; with a certificate it offers (and requires) STARTTLS."""
    import ssl

    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            return "250 OK"

    tls: dict[str, Any] = {}
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        tls = {"tls_context": context, "require_starttls": True}
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, **tls)
    controller.start()
    threading.Event().wait()


# -- a private Postfix on loopback (the bench's, and the tests' fixture builds on it) ----------------

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _start_sink(kind: str, cert: Path | None = None, key: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    target = "serve_http_sink" if kind == "sendgrid" else "serve_smtp_sink"
    args = f"{port}, {str(cert)!r}, {str(key)!r}" if cert else f"{port}"
    proc = subprocess.Popen([sys.executable, "-c", f"from newsletter.bench import {target}; {target}({args})"])
    if _listening(port):
        return proc, port
    proc.kill()
    raise RuntimeError(f"{kind} sink did not start on port {port}")


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
        self.port = _free_port()
        self.config_dir = write_postfix(folder, self.port, postfix_params(folder, self.cert, key))
        proc = postfix(self.config_dir, "start")
        if proc.returncode != 0 or not _listening(self.port, 30):
            raise RuntimeError(f"postfix did not start on 127.0.0.1:{self.port}: {proc.stderr.strip()[-500:]} "
                               "(it needs root and Debian's postfix package)")

    def stop(self) -> None:
        postfix(self.config_dir, "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


# -- one case ----------------------------------------------------------------

@dataclass
class Result:
    subscribers: int
    messenger: str
    recipients: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    recipients_per_s: float
    mjml_compiles: int
    premailer_compiles: int
    render_s: float
    ledger_write_s: float
    requests: int
    json_encode_s: float | None  # the json case: encode_payload alone
    messenger_s: float
    setup_s: float
    sink_recipients: int | None = None  # what the loopback HTTP sink counted
    server: str = ""  # for the smtp cases: which server, over which security
    floor_s: float | None = None  # the json case: the least cost of the same bodies (bench_floor)
    ledger_bytes_per_recipient: float = 0.0  # deliveries table and indexes on disk, per planned row


SMTP_SERVERS = ("aiosmtpd", "postfix")
SMTP_SECURITY = ("none", "starttls")


def run_case(n: int, messenger_name: str, workdir: Path, smtp_server: str = "aiosmtpd",
             smtp_security: str = "none") -> Result:
    started_setup = time.perf_counter()
    settings = {"postal_address": "Bench, 1 Example Street", "require_approval": "no",
                "site_url": "https://digest.example.org"}
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret"}
    result = bootstrap.init(workdir, settings, env=env)
    ctx = Context(load_config(result.config_path, env=env))
    ctx.store.bulk_add_subscribers(subscriber_rows(n))
    ctx.store.upsert_summaries(recent_summaries())
    sender = Sender("digest@example.org", "MS Research Digest", site_url=ctx.config.site_url)
    sink, relay, server = None, None, ""
    if messenger_name == "counting":
        messenger: Any = CountingMessenger()
    elif messenger_name == "json":
        messenger = FloorMessenger(sender)
    elif messenger_name == "sendgrid":
        from .messengers.sendgrid import SendGridMessenger
        sink, port = _start_sink("sendgrid")
        messenger = SendGridMessenger("SG.bench", sender, host=f"http://127.0.0.1:{port}", timeout=30)
    elif messenger_name in ("smtp", "smtp-pool"):
        from .messengers.smtp import SmtpMessenger, SmtpPool
        if smtp_server == "postfix":  # Postfix requires STARTTLS
            smtp_security = "starttls"
            relay = PostfixSink()
            port, ca_file = relay.port, relay.cert
        else:
            cert = key = None
            if smtp_security == "starttls":
                cert, key = self_signed(workdir.parent)
            sink, port = _start_sink("smtp", cert, key)
            ca_file = cert
        options = dict(security=smtp_security, batch_size=100, ca_file=str(ca_file or ""))
        if messenger_name == "smtp":
            messenger = SmtpMessenger("127.0.0.1", port, sender, **options)
        else:
            messenger = SmtpPool(SMTP_POOL, "127.0.0.1", port, sender, **options)
        server = f"{smtp_server}, {smtp_security}"
    else:
        raise ValueError(f"messenger: unknown {messenger_name!r} (use {', '.join(MESSENGERS)})")
    setup_s = time.perf_counter() - started_setup
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=lambda: messenger,
                          tokens=Tokens("bench-secret"))
    ledger_before = ctx.store.write_seconds
    cpu_before = _cpu()
    started = time.perf_counter()
    try:
        report = runner.run("weekly", NOW)
    finally:
        wall = time.perf_counter() - started
        cpu = _cpu() - cpu_before
        sink_recipients = None
        if sink:
            if messenger_name == "sendgrid":
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as resp:
                    sink_recipients = json.loads(resp.read())["recipients"]
            sink.kill()
            sink.wait()
        if relay:
            relay.stop()
    stats = runner.renderer.stats
    return Result(
        subscribers=n, messenger=messenger_name, recipients=report.tally.sent, wall_s=round(wall, 3),
        cpu_s=round(cpu, 3), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        recipients_per_s=round(report.tally.sent / wall) if wall else 0,
        mjml_compiles=stats.counts["mjml"], premailer_compiles=stats.counts["premailer"],
        render_s=round(sum(stats.seconds.values()), 3),
        ledger_write_s=round(ctx.store.write_seconds - ledger_before, 3),
        requests=getattr(messenger, "requests", 0),
        json_encode_s=round(messenger.encode_seconds, 3) if messenger_name == "json" else None,
        messenger_s=round(report.messenger_seconds, 3),
        setup_s=round(setup_s, 2), sink_recipients=sink_recipients, server=server,
        floor_s=round(messenger.floor_seconds, 3) if messenger_name == "json" else None,
        ledger_bytes_per_recipient=round(ctx.store.ledger_bytes() / max(1, sum(ctx.store.delivery_counts().values())),
                                         1))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_isolated(n: int, messenger_name: str, smtp_server: str = "aiosmtpd", smtp_security: str = "none") -> Result:
    """A case in a fresh interpreter, so peak RSS belongs to that case alone."""
    with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
        code = ("import json, sys, dataclasses; from pathlib import Path; from newsletter.bench import run_case; "
                f"r = run_case({n}, {messenger_name!r}, Path({tmp!r}) / 'site', {smtp_server!r}, {smtp_security!r}); "
                "print('RESULT ' + json.dumps(dataclasses.asdict(r)))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"bench case {n} {messenger_name} failed:\n{proc.stderr[-2000:]}")
        return Result(**json.loads(lines[-1][len("RESULT "):]))


def cases(sizes: Sequence[int], messengers: Sequence[str]) -> list[tuple[int, str]]:
    """(size, messenger) pairs to run: every messenger by default, the smtp ones only up to SMTP_LIMIT."""
    chosen = messengers or MESSENGERS
    return [(n, name) for n in sizes for name in chosen
            if messengers or not (name.startswith("smtp") and n > SMTP_LIMIT)]


def machine() -> str:
    import platform
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def as_dicts(results: list[Result]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


__all__ = ["MESSENGERS", "Result", "machine", "run_case", "run_isolated", "as_dicts"]
