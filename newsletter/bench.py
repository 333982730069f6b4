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
from .context import Context
from .digest import DigestRunner
from .messengers.counting import CountingMessenger
from .messengers.sendgrid import build_payload
from .model import Envelope, Outcome, Rendered, Sender
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


class JsonFloorMessenger:
    """Builds the SendGrid request bodies as the reference dicts (build_payload) and times json.dumps
    of them alone: the floor. Sends nothing."""
    name = "json"
    batch_size = 1000

    def __init__(self, sender: Sender):
        self.sender = sender
        self.encode_seconds = 0.0
        self.requests = 0

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        payload = build_payload(rendered, envelopes, self.sender)
        started = time.perf_counter()
        json.dumps(payload)
        self.encode_seconds += time.perf_counter() - started
        self.requests += 1
        return [Outcome("sent", [e.delivery_id for e in envelopes], provider_id="json")]

    def close(self) -> None:
        pass


# -- loopback sinks, run in their own process so they do not share our core ----

TO_RE = re.compile(rb'"to":\s*\[')


class _SinkHandler(BaseHTTPRequestHandler):
    counts = {"requests": 0, "recipients": 0}

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


def serve_smtp_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    threading.Event().wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sink(kind: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    target = "serve_http_sink" if kind == "sendgrid" else "serve_smtp_sink"
    proc = subprocess.Popen([sys.executable, "-c", f"from newsletter.bench import {target}; {target}({port})"])
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} sink did not start on port {port}")


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
    json_encode_s: float | None
    messenger_s: float
    setup_s: float
    sink_recipients: int | None = None  # what the loopback HTTP sink counted


def run_case(n: int, messenger_name: str, workdir: Path) -> Result:
    started_setup = time.perf_counter()
    settings = {"postal_address": "Bench, 1 Example Street", "require_approval": "no",
                "site_url": "https://digest.example.org"}
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret"}
    result = bootstrap.init(workdir, settings, env=env)
    ctx = Context(load_config(result.config_path, env=env))
    ctx.store.bulk_add_subscribers(subscriber_rows(n))
    ctx.store.upsert_summaries(recent_summaries())
    sender = Sender("digest@example.org", "MS Research Digest", site_url=ctx.config.site_url)
    sink = None
    if messenger_name == "counting":
        messenger: Any = CountingMessenger()
    elif messenger_name == "json":
        messenger = JsonFloorMessenger(sender)
    elif messenger_name == "sendgrid":
        from .messengers.sendgrid import SendGridMessenger
        sink, port = _start_sink("sendgrid")
        messenger = SendGridMessenger("SG.bench", sender, host=f"http://127.0.0.1:{port}", timeout=30)
    elif messenger_name in ("smtp", "smtp-pool"):
        from .messengers.smtp import SmtpMessenger, SmtpPool
        sink, port = _start_sink("smtp")
        if messenger_name == "smtp":
            messenger = SmtpMessenger("127.0.0.1", port, sender, security="none", batch_size=100)
        else:
            messenger = SmtpPool(SMTP_POOL, "127.0.0.1", port, sender, security="none", batch_size=100)
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
        setup_s=round(setup_s, 2), sink_recipients=sink_recipients)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_isolated(n: int, messenger_name: str) -> Result:
    """A case in a fresh interpreter, so peak RSS belongs to that case alone."""
    with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
        code = ("import json, sys, dataclasses; from pathlib import Path; from newsletter.bench import run_case; "
                f"r = run_case({n}, {messenger_name!r}, Path({tmp!r}) / 'site'); "
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
