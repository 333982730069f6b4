"""`newsletter init` and `newsletter demo` as plain functions."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from .context import Context
from .digest import DigestRunner, RunReport
from .sources.subscribers import read_csv
from .sources.summaries import read_sources
from .preview import render_issue, write_preview
from .settings import SECRETS, load_config, render_config_file, write_secret_file

DEMO_SETTINGS = {
    "postal_address": "Demo only: 1 Example Street, Springfield, USA",
    "require_approval": "no",
}


@dataclass
class InitResult:
    config_path: Path
    wrote_config: bool
    wrote_secret: bool
    database: Path


def init(directory: Path, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> InitResult:
    """Write a commented newsletter.toml and create the database; a second run changes nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "newsletter.toml"
    wrote_config = not config_path.exists()
    if wrote_config:
        config_path.write_text(render_config_file(overrides), encoding="utf-8")
    config = load_config(config_path, env=env)
    Context(config).create_store().close()
    wrote_secret = False
    if not config.env.get(SECRETS["secret"]):
        wrote_secret = write_secret_file(config.secret_file)
    return InitResult(config_path, wrote_config, wrote_secret, Path(config.database))


def sample_summary_files() -> list[str]:
    root = Path(str(resources.files("newsletter.sample"))) / "summaries"
    return sorted(glob.glob(str(root / "*.md")))


def sample_subscribers_csv() -> Path:
    return Path(str(resources.files("newsletter._subscribers").joinpath("sample.csv")))


@dataclass
class DemoResult:
    summaries: Any
    subscribers: dict[str, int]
    now: datetime
    report: RunReport
    outbox: Path
    preview: Path | None
    per_segment: dict[str, int]


def demo(directory: Path, env: dict[str, str] | None = None) -> DemoResult:
    """Init, load the bundled samples, run the weekly digest into the Maildir, write previews."""
    result = init(directory, DEMO_SETTINGS, env=env)
    ctx = Context(load_config(result.config_path, env=env))
    try:
        records = read_sources(sample_summary_files())
        counts = ctx.store.upsert_summaries(records)
        with sample_subscribers_csv().open(encoding="utf-8") as fh:
            rows = read_csv(fh, ctx.segments, where=str(sample_subscribers_csv()))
        sub_counts = ctx.store.upsert_subscribers(rows.good)
        # The samples are dated; run the digest as of the morning after the newest one.
        newest = max(r["published"] for r in records)
        now = datetime.combine(datetime.fromisoformat(newest).date() + timedelta(days=1), time(7, 0))
        runner = DigestRunner(ctx.config, ctx.store, ctx.segments)
        report = runner.run("weekly", now)
        issues = report.created + report.existing
        renders = {i["segment"]: render_issue(ctx, i["id"]) for i in issues}
        preview = write_preview(directory / "preview", renders) if renders else None
        per_segment = {i["segment"]: ctx.store.delivery_counts(i["id"]).get("sent", 0) for i in issues}
        return DemoResult(counts, sub_counts, now, report, Path(ctx.config.outbox), preview, per_segment)
    finally:
        ctx.close()
