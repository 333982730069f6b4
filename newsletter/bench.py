"""`newsletter bench`: the whole weekly digest at scale, measured.

Each (size, messenger, workers) case runs in a fresh child process, so its peak RSS is
its own. A case: generate N subscribers across segments, cadences and topics
in a scratch SQLite file, add 10 recent summaries, then time one
`DigestRunner.run("weekly")` (select, render, personalise, ledger, dispatch).
With workers, that run starts its worker processes (workers.py) and its wall time
includes them; each worker reports its own peak RSS, CPU, compiles and messenger counts.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

from . import bootstrap
from .bench_floor import FloorMessenger
from .bench_postfix import PostfixSink, self_signed
from .bench_run_floor import run_floor
from .bench_sinks import smtp_sink_counts, start_sink
from .context import Context
from .digest import DigestRunner
from .messengers.counting import CountingMessenger
from .model import Sender
from .sources.summaries import read_sources
from .settings import load_config
from .tokens import Tokens
from .workers import messenger_figures

MESSENGERS = ("counting", "json", "sendgrid", "floor", "smtp", "smtp-pool")
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
    ledger_bytes_per_recipient: float = 0.0  # the ledger's tables and indexes on disk, per planned row
    workers: int = 1
    worker_peak_rss_mb: list[float] | None = None  # each worker process's own (peak_rss_mb: the parent's)


SMTP_SERVERS = ("aiosmtpd", "sink", "postfix")
SMTP_SECURITY = ("none", "starttls")


def make_messenger(name: str, sender: Sender, port: int = 0, options: dict[str, Any] | None = None) -> Any:
    """A case's messenger; at module level, so that each worker process can build its own."""
    if name == "counting":
        return CountingMessenger()
    if name == "json":
        return FloorMessenger(sender)
    if name == "sendgrid":
        from .messengers.sendgrid import SendGridMessenger
        return SendGridMessenger("SG.bench", sender, host=f"http://127.0.0.1:{port}", timeout=30)
    from .messengers.smtp import SmtpMessenger, SmtpPool
    if name == "smtp":
        return SmtpMessenger("127.0.0.1", port, sender, **(options or {}))
    return SmtpPool(SMTP_POOL, "127.0.0.1", port, sender, **(options or {}))


def run_case(n: int, messenger_name: str, workdir: Path, smtp_server: str = "aiosmtpd",
             smtp_security: str = "none", workers: int = 1) -> Result:
    if messenger_name not in MESSENGERS:
        raise ValueError(f"messenger: unknown {messenger_name!r} (use {', '.join(MESSENGERS)})")
    started_setup = time.perf_counter()
    # backend sendgrid: every case sends as a real backend does, only to readers whose consent is on record
    # (each has one), whichever messenger the case measures
    settings = {"postal_address": "Bench, 1 Example Street", "require_approval": "no", "backend": "sendgrid",
                "site_url": "https://digest.example.org"}
    env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret"}
    result = bootstrap.init(workdir, settings, env=env)
    ctx = Context(load_config(result.config_path, env=env))
    ctx.store.bulk_add_subscribers(subscriber_rows(n), consent_basis="bench")
    ctx.store.upsert_summaries(recent_summaries())
    sender = Sender("digest@example.org", "MS Research Digest", site_url=ctx.config.site_url)
    sink, relay, server, port, options = None, None, "", 0, None
    if messenger_name in ("sendgrid", "floor"):  # floor: the whole run's floor (bench_run_floor), not a messenger
        sink, port = start_sink("sendgrid")
    elif messenger_name in ("smtp", "smtp-pool"):
        if smtp_server == "postfix":  # Postfix requires STARTTLS
            smtp_security = "starttls"
            relay = PostfixSink()
            port, ca_file = relay.port, relay.cert
        else:
            cert = key = None
            if smtp_security == "starttls":
                cert, key = self_signed(workdir.parent)
            sink, port = start_sink("smtp-reader" if smtp_server == "sink" else "smtp", cert, key)
            ca_file = cert
        options = dict(security=smtp_security, batch_size=100, ca_file=str(ca_file or ""))
        server = f"{smtp_server}, {smtp_security}"
    factory = functools.partial(make_messenger, messenger_name, sender, port, options)
    # With workers, each builds its own from `factory`; the floor needs none.
    messenger = factory() if workers == 1 and messenger_name != "floor" else None
    setup_s = time.perf_counter() - started_setup
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments, tokens=Tokens("bench-secret"), workers=workers,
                          messenger_factory=(lambda: messenger) if messenger else factory)
    ledger_before = ctx.store.write_seconds
    cpu_before = _cpu()
    started = time.perf_counter()
    try:
        if messenger_name == "floor":
            floor = run_floor(runner, "weekly", NOW, sender, port, "bench-secret", workers)
        else:
            report = runner.run("weekly", NOW)
    finally:
        wall = time.perf_counter() - started
        cpu = _cpu() - cpu_before
        sink_recipients = None  # the counting messenger is its own sink: set below
        if sink:
            sink_recipients = _sink_count(messenger_name, smtp_server, port)
            sink.kill()
            sink.wait()
        if relay:
            relay.stop()
    if messenger_name == "floor":
        return floor_result(n, runner, floor, wall, cpu, setup_s, sink_recipients, workers)
    if report.failure:
        raise RuntimeError(report.failure)
    stats, own = report.worker_stats, runner.renderer.stats
    figures: dict[str, float] = {}
    for counted in [s.messenger_figures for s in stats] or [messenger_figures(messenger)]:
        for key, value in counted.items():
            figures[key] = figures.get(key, 0) + value
    return Result(
        subscribers=n, messenger=messenger_name, recipients=report.tally.sent, wall_s=round(wall, 3),
        cpu_s=round(cpu + sum(s.cpu_s for s in stats), 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        recipients_per_s=round(report.tally.sent / wall) if wall else 0,
        mjml_compiles=own.counts["mjml"] + sum(s.mjml_compiles for s in stats),
        premailer_compiles=own.counts["premailer"] + sum(s.premailer_compiles for s in stats),
        render_s=round(sum(own.seconds.values()) + sum(s.render_s for s in stats), 3),
        ledger_write_s=round(ctx.store.write_seconds - ledger_before + sum(s.ledger_write_s for s in stats), 3),
        requests=int(figures.get("requests", 0)),
        json_encode_s=round(figures["encode_seconds"], 3) if messenger_name == "json" else None,
        messenger_s=round(report.messenger_seconds, 3),
        setup_s=round(setup_s, 2), server=server,
        sink_recipients=int(figures["recipients"]) if messenger_name == "counting" else sink_recipients,
        floor_s=round(figures["floor_seconds"], 3) if messenger_name == "json" else None,
        ledger_bytes_per_recipient=ledger_bytes_per_recipient(ctx.store),
        workers=workers, worker_peak_rss_mb=[s.peak_rss_mb for s in stats] if workers > 1 else None)


def _sink_count(messenger_name: str, smtp_server: str, port: int) -> int | None:
    """Recipients the loopback sink received: the HTTP sink's GET /count, the reading SMTP sink's XCOUNT."""
    if messenger_name in ("sendgrid", "floor"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as resp:
            return json.loads(resp.read())["recipients"]
    if smtp_server == "sink":
        return smtp_sink_counts(port)[1]
    return None


def ledger_bytes_per_recipient(store: Any) -> float:
    """The ledger's bytes on disk per planned delivery."""
    return round(store.ledger_bytes() / max(1, sum(store.delivery_counts().values())), 1)


def floor_result(n: int, runner: DigestRunner, floor: dict[str, Any], wall: float, cpu: float, setup_s: float,
                 sink_recipients: int | None, workers: int) -> Result:
    stats, store = runner.renderer.stats, runner.store
    return Result(
        subscribers=n, messenger="floor", recipients=int(floor["recipients"]), wall_s=round(wall, 3),
        cpu_s=round(cpu + floor.get("cpu_s", 0), 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        recipients_per_s=round(floor["recipients"] / wall) if wall else 0,
        mjml_compiles=stats.counts["mjml"] + floor.get("mjml", 0),
        premailer_compiles=stats.counts["premailer"] + floor.get("premailer", 0),
        render_s=round(sum(stats.seconds.values()) + floor.get("render_s", 0), 3),
        ledger_write_s=round(floor["ledger_s"], 3),
        requests=int(floor["requests"]), json_encode_s=None, messenger_s=0.0, setup_s=round(setup_s, 2),
        sink_recipients=sink_recipients, ledger_bytes_per_recipient=ledger_bytes_per_recipient(store),
        workers=workers, worker_peak_rss_mb=floor.get("worker_rss_mb"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_isolated(n: int, messenger_name: str, smtp_server: str = "aiosmtpd", smtp_security: str = "none",
                 workers: int = 1) -> Result:
    """A case in a fresh interpreter, so peak RSS belongs to that case alone."""
    with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
        code = ("import json, sys, dataclasses; from pathlib import Path; from newsletter.bench import run_case; "
                f"r = run_case({n}, {messenger_name!r}, Path({tmp!r}) / 'site', {smtp_server!r}, {smtp_security!r}, "
                f"{workers}); print('RESULT ' + json.dumps(dataclasses.asdict(r)))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"bench case {n} {messenger_name} (workers {workers}) failed:\n{proc.stderr[-2000:]}")
        return Result(**json.loads(lines[-1][len("RESULT "):]))


def cases(sizes: Sequence[int], messengers: Sequence[str], workers: Sequence[int] = (1,)) -> list[tuple[int, str, int]]:
    """(size, messenger, workers) to run: every messenger by default, the smtp ones only up to SMTP_LIMIT."""
    chosen = messengers or MESSENGERS
    return [(n, name, w) for n in sizes for name in chosen for w in workers
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
