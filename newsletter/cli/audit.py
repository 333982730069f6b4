"""`newsletter audit`: the audit log on the terminal or as JSON; and the actor name CLI commands record."""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone

import click

from ..context import Context
from .common import handle_errors, pass_ctx


def cli_actor() -> str:
    """Who an audit row names for a command: the operating-system user who ran it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


def _since(value: str | None) -> str | None:
    """An ISO date or date-time as the stored stamps' UTC text (they compare as text)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"not an ISO date or date-time: {value!r}", param_hint="--since") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat()


@click.command()
@click.option("--since", metavar="DATE", help="Only entries at or after this ISO date or date-time (UTC).")
@click.option("--actor", help="Only entries by this editor (or cli:USER).")
@click.option("--action", help='Only this action, or a group ending in a dot ("subscriber.").')
@click.option("--limit", type=click.IntRange(1), help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@pass_ctx
@handle_errors
def audit(ctx: Context, since: str | None, actor: str | None, action: str | None, limit: int | None,
          as_json: bool) -> None:
    """Show who did what and when: approvals, sends, subscriber changes, logins.

    \b
    Example:
        newsletter audit --since 2026-11-01
        newsletter audit --action subscriber. --json > changes.jsonl
    """
    rows = ctx.store.audit_entries(actor=actor, action=action, since=_since(since), limit=limit)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False, sort_keys=True))
            continue
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(row["detail"].items()))
        click.echo(f"{row['at']}  {row['actor']:<16} {row['action']:<28} {row['target']}"
                   + (f"  ({detail})" if detail else ""))
