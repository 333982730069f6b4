"""`newsletter subscribers`: add, import, export, list and remove."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from ..context import Context
from ..model import SUBSCRIBER_STATUSES
from ..retention import erase
from ..segments import CADENCES
from ..sources.imports import FIELDS, LAYOUTS, known_topics, open_import_file, parse_map
from ..store import ImportRefused
from ..sources.subscribers import clean_subscriber, normalise_email, write_csv
from .audit import cli_actor
from .common import cadence_option, handle_errors, pass_ctx, segment_option


def site_known_topics(ctx: Context) -> list[str]:
    """Topics of the stored summaries plus the site's topic list (topics.toml), if it has one."""
    return known_topics((t for s in ctx.store.summaries() for t in s["topics"]), ctx.config.segments_file or None)


def consent_option(default_help: str) -> Callable:
    return click.option("--consent-basis", metavar="TEXT",
                        help="How these people agreed to the digest, kept as a consent record "
                             f"(e.g. \"paper form 2025\"); {default_help}")


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
@consent_option("without it none is recorded.")
@pass_ctx
@handle_errors
def subscribers_add(ctx: Context, email: str, segment: str, name: str, cadence: str, topics: tuple[str, ...],
                    confirmed: bool, consent_basis: str | None) -> None:
    """Add one subscriber (pending until confirmed, unless --confirmed).

    A topic must be one of the site's (stored summaries' topics and topics.toml).

    \b
    Example:
        newsletter subscribers add ana@example.org --segment caregivers --topic NMOSD --confirmed \\
            --consent-basis "paper form 2025"
    """
    # Without --confirmed a new address is pending and an existing one keeps its status.
    rec = clean_subscriber({"email": email, "segment": segment, "name": name, "cadence": cadence,
                            "topics": list(topics), "status": "active" if confirmed else None}, ctx.segments,
                           site_known_topics(ctx))
    if consent_basis:
        rec["consent"] = {"method": "cli", "basis": consent_basis}
    counts = ctx.store.upsert_subscribers_with_consent([rec])
    current = ctx.store.get_subscriber(rec["email"])
    verb = "added" if counts["added"] else "updated"
    ctx.store.record_audit(cli_actor(), "subscriber.import", f"subscriber:{current['id']}",
                           {"how": f"subscribers add ({verb})", "consent": bool(counts["consents"])})
    click.echo(f"{verb} {current['email']} ({current['segment']}, {current['cadence']}, {current['status']})"
               + (", consent recorded" if counts["consents"] else ""))


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "tool", type=click.Choice(sorted(LAYOUTS)),
              help="The tool that wrote the file (default: recognised by its header, else our own CSV).")
@click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD",
              help=f"Read COLUMN as FIELD (repeat), one of: {', '.join(FIELDS)}.")
@segment_option("Segment for rows that name none (files from other tools have no segment column).")
@click.option("--cadence", type=click.Choice(CADENCES), help="Cadence for rows that name none (default weekly).")
@consent_option("default for --from and detected exports: \"imported from <tool>\".")
@click.option("--strict", is_flag=True, help="Reject the whole file if any row is bad.")
@pass_ctx
@handle_errors
def subscribers_import(ctx: Context, csv_file: Path, tool: str | None, maps: tuple[str, ...], segment: str | None,
                       cadence: str | None, consent_basis: str | None, strict: bool) -> None:
    """Import subscribers from our CSV (email,name,segment,cadence,topics,status) or another tool's export.

    Mailchimp, listmonk, Substack, Buttondown and Ghost exports are recognised
    by their header (or named with --from); their statuses keep who
    unsubscribed or bounced (never made active), their opt-in times become
    consent records, and columns we have no use for are listed once and
    ignored. Bad rows are reported by line number and skipped; an address
    that unsubscribed is never made active again by an import. Topics are
    separated by semicolons and must be the site's topics. The file is read,
    checked and written in chunks inside one transaction (memory stays flat
    for a million rows), the editors' search index brought up to date once
    before the commit; with --strict a bad row anywhere rolls it all back.

    \b
    Examples:
        newsletter subscribers import people.csv
        newsletter subscribers import subscribed_members_export.csv --segment patients
        newsletter subscribers import members.csv --from ghost --segment caregivers --cadence monthly
        newsletter subscribers import list.csv --map "E-mail=email" --map "Full name=name" --segment patients \\
            --consent-basis "paper form 2025"
    """
    with open_import_file(csv_file, ctx.segments, site_known_topics(ctx), tool=tool, mapping=parse_map(maps),
                          defaults={"segment": segment, "cadence": cadence}, stream=True) as result:
        if result.detected:
            click.echo(f"{csv_file}: {result.layout.label} export (recognised by its header; --from to say "
                       "otherwise)", err=True)
        if result.ignored:
            click.echo(f"{csv_file}: ignored {len(result.ignored)} columns: {', '.join(result.ignored)}", err=True)
        basis = consent_basis or (f"imported from {result.layout.label}" if result.layout.name in LAYOUTS else None)

        def with_consent():
            for rec in result.good:  # read, checked and written a chunk at a time
                if basis:
                    rec["consent"] = {"method": "import", "basis": basis, "opted_in_at": rec.get("opted_in_at"),
                                      "ip": rec.get("ip")}
                yield rec

        def refuse(duplicates: list[tuple[int, str]]) -> str:
            bad = len(result.bad) + len(duplicates)
            return f"{csv_file}: {bad} bad rows; nothing imported (--strict)" if strict and bad else ""

        refused = ""
        try:
            counts = ctx.store.import_subscribers(with_consent(), refuse)
            duplicates = counts["duplicates"]
        except ImportRefused as exc:
            duplicates, refused = exc.duplicates, str(exc)
        for line, reason in sorted(result.bad + duplicates):
            click.echo(f"{csv_file}: line {line}: {reason}", err=True)
        if refused:
            raise click.ClickException(refused)
    ctx.store.record_audit(cli_actor(), "subscriber.import", f"file:{csv_file.name}", {
        "layout": result.layout.name, "rejected": len(result.bad) + len(duplicates),
        **{k: counts[k] for k in ("added", "updated", "kept_suppressed", "consents") if k in counts}})
    click.echo(f"{counts['added']} added, {counts['updated']} updated, {len(result.bad) + len(duplicates)} rejected"
               + (f", {counts['kept_suppressed']} kept unsubscribed" if counts["kept_suppressed"] else "")
               + (f", {counts['consents']} consent records" if counts["consents"] else ""))


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
    found = ctx.store.get_subscriber(address)
    if found is None:
        raise click.ClickException(f"{address}: no such subscriber")
    erased = erase(ctx.config, ctx.store, address, actor=cli_actor(), subscriber_id=found["id"])
    click.echo(f"removed {address} (and {erased['outbox_messages']} message(s) to it in the outbox)")
