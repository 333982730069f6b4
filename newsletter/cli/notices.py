"""`newsletter notices send|list`: the confirmations the web app could not hand over when they were asked for."""

from __future__ import annotations

import click

from ..context import Context
from ..notices import send_queued
from .common import handle_errors, now_option, parse_now, pass_ctx


@click.group()
def notices() -> None:
    """Confirmation emails waiting for the transport (a relay or API that was down)."""


@notices.command("send")
@now_option("Act as if it were this moment (ISO 8601), e.g. to try every queued one now.")
@pass_ctx
@handle_errors
def notices_send(ctx: Context, now_text: str | None) -> None:
    """Try each queued confirmation whose time has come.

    The web app sends a confirmation once it has answered the sign-up; one
    the transport did not take is queued and tried again here after 5
    minutes, doubling to at most 4 hours, for retry_deferred_days; then it
    is dropped (with a log line), since its link would soon expire anyway.
    One whose answer was lost after it was handed over may have gone out,
    and is never sent again. Exits 1 while any is still waiting.

    \b
    Example (cron, every ten minutes):
        newsletter --config /srv/newsletter/newsletter.toml notices send
    """
    counts = send_queued(ctx.config, ctx.store, parse_now(now_text))
    click.echo(", ".join(f"{name} {counts[name]}" for name in ("sent", "unknown", "waiting", "dropped")))
    if counts["waiting"]:
        raise SystemExit(1)


@notices.command("list")
@pass_ctx
@handle_errors
def notices_list(ctx: Context) -> None:
    """Queued confirmations: when queued, attempts, next attempt, last error (addresses are not shown)."""
    rows = ctx.store.queued_notices()
    for row in rows:
        click.echo(f"{row['id']}  {row['category']}  queued {row['created_at']}  attempts {row['attempts']}  "
                   f"next {row['next_attempt_at']}  {row['error']}")
    if not rows:
        click.echo("no queued notices")
