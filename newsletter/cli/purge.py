"""`newsletter purge`: apply the retention settings once, printing what went (a nightly cron line)."""

from __future__ import annotations

import click

from ..context import Context
from ..retention import purge as run_purge
from .common import handle_errors, pass_ctx


@click.command()
@click.option("--dry-run", is_flag=True,
              help="Print what would go, and change nothing (the database's writes are made and rolled back).")
@pass_ctx
@handle_errors
def purge(ctx: Context, dry_run: bool) -> None:
    """Remove what the retention settings say has been kept long enough.

    \b
    Provider events older than retention_events_days (90), sign-ups never
    confirmed after retention_pending_days (30), the link between an
    erased reader's delivery rows after retention_erased_days (0), and the
    delivery rows of digests sent more than ledger_retention_days ago (90;
    0 = never), compacted to counts per status and the readers each reached.
    Running it twice removes nothing more the second time. With --dry-run
    it prints the same counts and keeps everything: it makes the same
    writes in one transaction and rolls it back, so other writers (sign-ups,
    webhooks, a send) wait while it runs, which on a large ledger's
    compaction is a matter of seconds.

    \b
    Examples:
        newsletter --config /srv/newsletter/newsletter.toml purge --dry-run
        newsletter --config /srv/newsletter/newsletter.toml purge
    """
    removed = run_purge(ctx.config, ctx.store, dry_run=dry_run)
    for what, count in removed:
        click.echo(f"{count:>6}  {what}")
    total = sum(count for _, count in removed)
    if dry_run:
        click.echo(f"{total} row(s) would be removed, unlinked or compacted (dry run: nothing changed)", err=True)
    else:
        click.echo(f"{total} row(s) removed, unlinked or compacted", err=True)
