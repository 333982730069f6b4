"""`newsletter summaries`: import, pull (the configured feeds), list, publish and check research summaries."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict
from datetime import datetime

import click

from ..context import Context
from ..pull import pull_feeds
from ..readability import flagged
from ..sources.summaries import read_sources
from .audit import cli_actor
from .common import handle_errors, pass_ctx


@click.group()
def summaries() -> None:
    """Import, pull, list, publish and check research summaries."""


@summaries.command("import")
@click.argument("sources", nargs=-1, required=True)
@pass_ctx
@handle_errors
def summaries_import(ctx: Context, sources: tuple[str, ...]) -> None:
    """Import summaries from Markdown (.md with YAML front matter), JSON, or RSS/Atom (file or URL).

    All or nothing: one bad file rejects the batch and nothing is stored.
    Importing a summary again updates it (by slug, else source URL); one that
    was already sent becomes a new revision instead.

    \b
    Example:
        newsletter summaries import summaries/*.md feed.xml
    """
    records = read_sources(sources, ctx.topics)
    counts = ctx.store.upsert_summaries(records)
    ctx.store.record_audit(cli_actor(), "summaries.import", "summaries", {"sources": len(sources), **asdict(counts)})
    click.echo(f"{counts.inserted} added, {counts.updated} updated, {counts.revised} new revisions, "
               f"{counts.unchanged} unchanged")
    for line in reading_warnings(records, ctx.config.max_reading_grade):
        click.echo(f"warning: {line}", err=True)


@summaries.command("list")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Only summaries published on or after this date (YYYY-MM-DD).")
@click.option("--topic", help="Only summaries with this topic (e.g. NMOSD).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
@handle_errors
def summaries_list(ctx: Context, since: datetime | None, topic: str | None, as_json: bool) -> None:
    """List summaries, newest first (latest revision of each)."""
    rows = ctx.store.summaries(since=since.date().isoformat() if since else None, topic=topic)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        rev = f" (rev {r['revision']})" if r["revision"] > 1 else ""
        held = " (draft)" if r.get("draft") else ""
        click.echo(f"{r['published']}  {r['slug']}{rev}{held}  [{', '.join(r['topics'])}]  {r['title']}")
    click.echo(f"{len(rows)} summaries", err=True)


@summaries.command("pull")
@pass_ctx
@handle_errors
def summaries_pull(ctx: Context) -> None:
    """Poll every feed of the `feeds` setting and import its new and changed items.

    Each feed is fetched with a conditional GET (its ETag and Last-Modified are
    kept), so an unchanged feed costs one 304 and imports nothing. Each feed's
    items are stored in one transaction; a feed item is known by its guid, then
    its link, then its title. One line per feed. A feed that fails does not stop
    the others; after three failures in a row the editors get one notice. Exits 1
    when any feed failed.

    \b
    Example (newsletter.toml):
        [[feeds]]
        url = "https://example.org/feed/"
        topics = ["NMOSD"]
        drafts = false
    \b
        newsletter summaries pull
    """
    results = pull_feeds(ctx)
    # Only what changed content: an hourly pull of unchanged feeds leaves no row.
    imported = [r for r in results if r.status == "imported" and r.counts
                and r.counts.inserted + r.counts.updated + r.counts.revised]
    if imported:
        totals = Counter[str]()
        for r in imported:
            totals.update(asdict(r.counts))
        ctx.store.record_audit(cli_actor(), "summaries.import", "feeds", {"feeds": [r.url for r in imported],
                                                                          **totals})
    for result in results:
        click.echo(result.line())
    if any(r.status == "failed" for r in results):
        sys.exit(1)


@summaries.command("publish")
@click.argument("slugs", nargs=-1, required=True)
@pass_ctx
@handle_errors
def summaries_publish(ctx: Context, slugs: tuple[str, ...]) -> None:
    """Release summaries held as drafts (items of a feed with `drafts = true`) to the digests.

    \b
    Example:
        newsletter summaries publish serum-gfap-rises-before-nmosd-attacks
    """
    count = ctx.store.publish_summaries(list(slugs))
    click.echo(f"{count} published, {len(slugs) - count} already published")
# -- summaries check: the reading grade of the lay text ---------------------------------------------------

def reading_warnings(summaries: list[dict], max_grade: float) -> list[str]:
    """"slug  field  grades" for each lay field above max_grade."""
    return [f"{s.get('slug') or s.get('derived_slug')}  {flag.field}  {flag.describe()} (above {max_grade:g})"
            for s in summaries for flag in flagged(s, max_grade)]


@summaries.command("check")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Only summaries published on or after this date (YYYY-MM-DD).")
@click.option("--max-grade", type=float, help="Flag above this grade instead of the max_reading_grade setting.")
@pass_ctx
@handle_errors
def summaries_check(ctx: Context, since: datetime | None, max_grade: float | None) -> None:
    """List the lay fields (teaser, patients, caregivers) that read above max_reading_grade.

    One line per flagged field: slug, field, Flesch-Kincaid and SMOG grades
    (SMOG only from three sentences on). Exits 1 when any is flagged. With
    enforce_reading_grade set, `digest run` and `issues send` hold an issue
    carrying any of them.

    \b
    Example:
        newsletter summaries check --since 2026-11-01
    """
    limit = ctx.config.max_reading_grade if max_grade is None else max_grade
    rows = ctx.store.summaries(since=since.date().isoformat() if since else None)
    lines = reading_warnings(rows, limit)
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} fields above grade {limit:g} in {len(rows)} summaries", err=True)
    if lines:
        sys.exit(1)
