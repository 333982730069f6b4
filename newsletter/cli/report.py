"""`newsletter report`: what each issue did, or how the list changed week by week."""

from __future__ import annotations

import json

import click

from ..context import Context
from ..report import PROXY_NOTE, WINDOW_DAYS, as_csv, as_table, issue_rows, subscriber_rows, tracking_on
from .common import handle_errors, pass_ctx


@click.command()
@click.argument("issue", type=int, required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="How to print the rows.")
@click.option("--subscribers", "over_time", is_flag=True,
              help="Subscribers over time instead: new, confirmed, unsubscribed, bounced, complained per week and segment.")
@pass_ctx
@handle_errors
def report(ctx: Context, issue: int | None, fmt: str, over_time: bool) -> None:
    """What each issue did: planned, each delivery status, bounces, complaints, unsubscribes.

    One row per issue (each issue is one segment's). Bounces, complaints and
    unsubscribes are unique recipients in the 7 days after the issue's
    deliveries were planned. Opens and clicks appear only where tracking is on
    (the sendgrid backend), only as unique counts per issue; privacy proxies
    inflate opens.

    \b
    Examples:
        newsletter report
        newsletter report 12 --format json
        newsletter report --subscribers --format csv > subscribers.csv
    """
    if over_time:
        if issue is not None:
            raise click.UsageError("--subscribers shows the whole list; leave out ISSUE")
        rows = subscriber_rows(ctx.store, ctx.config.timezone)
    else:
        rows = issue_rows(ctx.store, issue, tracking=tracking_on(ctx.config), days=WINDOW_DAYS)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        click.echo(as_csv(rows), nl=False)
    else:
        click.echo(as_table(rows) or "nothing to report yet", nl=bool(not rows))
    if not over_time and rows and fmt == "table":
        click.echo(PROXY_NOTE if tracking_on(ctx.config) else
                   f"Opens and clicks: not tracked with the {ctx.config.backend} backend.", err=True)
