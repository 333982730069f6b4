"""`newsletter subscribers`: add, import, export, list and remove."""

from __future__ import annotations

from pathlib import Path

import click

from ..context import Context
from ..model import SUBSCRIBER_STATUSES
from ..sources.subscribers import clean_subscriber, normalise_email, read_csv_file, write_csv
from .common import cadence_option, handle_errors, pass_ctx, segment_option


@click.group()
def subscribers() -> None:
    """Add, import, export, list and remove subscribers."""


@subscribers.command("add")
@click.argument("email")
@segment_option("patients, caregivers, clinicians (or any in segments.toml).", required=True)
@click.option("--name", default="", help="Name used in the greeting.")
@cadence_option("How often this person gets a digest.")
@click.option("--topic", "topics", multiple=True, help="A topic to follow (repeat; none = all topics).")
@click.option("--confirmed", is_flag=True, help="The person already confirmed (status active, not pending).")
@pass_ctx
@handle_errors
def subscribers_add(ctx: Context, email: str, segment: str, name: str, cadence: str, topics: tuple[str, ...],
                    confirmed: bool) -> None:
    """Add one subscriber (pending until confirmed, unless --confirmed)."""
    # Without --confirmed a new address is pending and an existing one keeps its status.
    rec = clean_subscriber({"email": email, "segment": segment, "name": name, "cadence": cadence,
                            "topics": list(topics), "status": "active" if confirmed else None}, ctx.segments)
    counts = ctx.store.upsert_subscribers([rec])
    current = ctx.store.get_subscriber(rec["email"])
    verb = "added" if counts["added"] else "updated"
    click.echo(f"{verb} {current['email']} ({current['segment']}, {current['cadence']}, {current['status']})")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Reject the whole file if any row is bad.")
@pass_ctx
@handle_errors
def subscribers_import(ctx: Context, csv_file: Path, strict: bool) -> None:
    """Import subscribers from CSV (columns: email,name,segment,cadence,topics,status).

    Bad rows are reported by line number and skipped; the good rows are
    imported. An address that unsubscribed is never made active again by an
    import. Topics are separated by semicolons.
    """
    result = read_csv_file(csv_file, ctx.segments)
    for line, reason in result.bad:
        click.echo(f"{csv_file}: line {line}: {reason}", err=True)
    if strict and result.bad:
        raise click.ClickException(f"{csv_file}: {len(result.bad)} bad rows; nothing imported (--strict)")
    counts = ctx.store.upsert_subscribers(result.good)
    click.echo(f"{counts['added']} added, {counts['updated']} updated, {len(result.bad)} rejected"
               + (f", {counts['kept_suppressed']} kept unsubscribed" if counts["kept_suppressed"] else ""))


@subscribers.command("export")
@segment_option()
@pass_ctx
@handle_errors
def subscribers_export(ctx: Context, segment: str | None) -> None:
    """Write subscribers as CSV to stdout (the import format)."""
    click.echo(write_csv(ctx.store.subscribers(segment=segment)), nl=False)


@subscribers.command("list")
@segment_option()
@click.option("--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only this status.")
@pass_ctx
@handle_errors
def subscribers_list(ctx: Context, segment: str | None, status: str | None) -> None:
    """List subscribers."""
    rows = ctx.store.subscribers(segment=segment, status=status)
    for r in rows:
        topics = ", ".join(r["topics"]) or "all topics"
        click.echo(f"{r['email']}  {r['segment']}  {r['cadence']}  {r['status']}  ({topics})")
    click.echo(f"{len(rows)} subscribers", err=True)


@subscribers.command("remove")
@click.argument("email")
@pass_ctx
@handle_errors
def subscribers_remove(ctx: Context, email: str) -> None:
    """Delete a subscriber's data; the address stays suppressed so no import re-adds it."""
    address = normalise_email(email)
    if not ctx.store.remove_subscriber(address):
        raise click.ClickException(f"{address}: no such subscriber")
    click.echo(f"removed {address}")
