"""Set-up commands: `init`, `demo`, `settings`."""

from __future__ import annotations

from pathlib import Path

import click

from .. import bootstrap
from ..context import Context
from ..select import period_for
from ..settings import SETTINGS
from .common import handle_errors, pass_ctx


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def init(directory: Path) -> None:
    """Write a commented newsletter.toml and create the database in DIRECTORY.

    Running it again changes nothing. When NEWSLETTER_SECRET is not set, a
    signing secret is written beside the database, readable only by you.
    """
    result = bootstrap.init(directory)
    click.echo(f"{'wrote' if result.wrote_config else 'kept'} {result.config_path}")
    click.echo(f"database {result.database}")
    if result.wrote_secret:
        click.echo(f"wrote signing secret {result.database.parent / '.newsletter-secret'} (mode 600)")


@click.command()
@click.argument("directory", default="newsletter-demo", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def demo(directory: Path) -> None:
    """Run the whole job on embedded defaults: no account, no server, no network.

    Creates DIRECTORY (default ./newsletter-demo), imports the bundled sample
    summaries and subscribers, runs the weekly digest into a Maildir outbox and
    writes an HTML preview of each segment's issue.
    """
    result = bootstrap.demo(directory)
    s = result.summaries
    click.echo(f"Demo in {directory.resolve()}")
    click.echo(f"  summaries: {s.inserted} new, {s.updated + s.revised} updated, {s.unchanged} unchanged")
    click.echo(f"  subscribers: {result.subscribers['added']} new, {result.subscribers['updated']} updated")
    click.echo(f"  digest run as of {result.now:%Y-%m-%d %H:%M} ({period_for(result.now, 'weekly').label})")
    report = result.report
    for issue in report.created:
        click.echo(f"  issue {issue['id']} built: {issue['segment']}, {issue['summaries']} summaries")
    if not report.created:
        click.echo("  no new issues: this week's digest was already built")
    for segment, sent in sorted(result.per_segment.items()):
        click.echo(f"  {segment}: {sent} messages in the outbox")
    click.echo(f"  this run: {report.tally.line()}")
    click.echo(f"  Maildir outbox: {result.outbox}  (open with: mutt -f {result.outbox})")
    if result.preview:
        click.echo(f"  HTML preview: {result.preview}")


@click.command()
@pass_ctx
@handle_errors
def settings(ctx: Context) -> None:
    """Show every setting: its value now, and what it does."""
    values = ctx.config.as_dict()
    click.echo(f"# from {ctx.config.source or 'defaults (no newsletter.toml found)'}")
    for s in SETTINGS:
        click.echo(f"{s.name} = {values[s.name]!r}    # {s.help}")
