"""`newsletter summaries`: import and list research summaries."""

from __future__ import annotations

import json
from datetime import datetime

import click

from ..context import Context
from ..sources.summaries import read_sources
from .common import handle_errors, pass_ctx


@click.group()
def summaries() -> None:
    """Import and list research summaries."""


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
    counts = ctx.store.upsert_summaries(read_sources(sources))
    click.echo(f"{counts.inserted} added, {counts.updated} updated, {counts.revised} new revisions, "
               f"{counts.unchanged} unchanged")


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
        click.echo(f"{r['published']}  {r['slug']}{rev}  [{', '.join(r['topics'])}]  {r['title']}")
    click.echo(f"{len(rows)} summaries", err=True)
