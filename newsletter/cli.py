"""The `newsletter` command: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import functools
import json
import logging
import sys
import webbrowser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import click

from . import bootstrap, lifecycle
from .context import Context
from .digest import DigestRunner, LockBusy, RunReport, period_for, run_lock
from .ingest_subscribers import SubscriberError, clean_subscriber, normalise_email, read_csv, write_csv
from .ingest_summaries import IngestError, read_sources
from .messengers import FatalSendError
from .preview import render_issue, render_upcoming, write_preview
from .progress import progress_callbacks
from .render import RenderError
from .segments import CADENCES, SegmentError
from .settings import SETTINGS, ConfigError
from .store import ISSUE_STATUSES, SUBSCRIBER_STATUSES
from .tokens import TokenError

EXPECTED_ERRORS = (ConfigError, IngestError, SubscriberError, SegmentError, RenderError, FatalSendError,
                   LockBusy, TokenError, LookupError)


def handle_errors(fn: Callable) -> Callable:
    """Known failures become one clear line and exit status 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EXPECTED_ERRORS as exc:
            # KeyError's str() adds quotes; every other message is shown as written.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(str(message)) from None
    return wrapper


def parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(timezone.utc)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date-time: {value!r}", param_hint="--now") from None


pass_ctx = click.make_pass_decorator(Context)


class LazyContext(Context):
    """Loads the config only when a command needs it, so `--help` works anywhere."""

    def __init__(self, path: str | None):
        self._path = path

    @functools.cached_property
    def config(self):  # type: ignore[override]
        return Context.load(self._path).config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="newsletter.toml to use (default: $NEWSLETTER_CONFIG, then ./newsletter.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(click_ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Email digests of plain-language MS research summaries.

    \b
    Quick start:
        newsletter demo                 # everything on embedded defaults
        newsletter init mysite && cd mysite
        newsletter summaries import summaries/*.md
        newsletter subscribers import people.csv
        newsletter digest run --cadence weekly
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    ctx = LazyContext(config_path)
    click_ctx.obj = ctx
    click_ctx.call_on_close(ctx.close)


# -- set-up ------------------------------------------------------------------

@cli.command()
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


@cli.command()
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


# -- summaries ---------------------------------------------------------------

@cli.group()
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


# -- subscribers -------------------------------------------------------------

@cli.group()
def subscribers() -> None:
    """Add, import, export, list and remove subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--segment", required=True, help="patients, caregivers, clinicians (or any in segments.toml).")
@click.option("--name", default="", help="Name used in the greeting.")
@click.option("--cadence", type=click.Choice(CADENCES), default="weekly", show_default=True,
              help="How often this person gets a digest.")
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
    try:
        with csv_file.open(encoding="utf-8-sig", newline="") as fh:
            result = read_csv(fh, ctx.segments, where=str(csv_file))
    except UnicodeDecodeError:
        raise click.ClickException(f"{csv_file}: encoding: not UTF-8 text (save the CSV as UTF-8)") from None
    for line, reason in result.bad:
        click.echo(f"{csv_file}: line {line}: {reason}", err=True)
    if strict and result.bad:
        raise click.ClickException(f"{csv_file}: {len(result.bad)} bad rows; nothing imported (--strict)")
    counts = ctx.store.upsert_subscribers(result.good)
    click.echo(f"{counts['added']} added, {counts['updated']} updated, {len(result.bad)} rejected"
               + (f", {counts['kept_suppressed']} kept unsubscribed" if counts["kept_suppressed"] else ""))


@subscribers.command("export")
@click.option("--segment", help="Only this segment.")
@pass_ctx
@handle_errors
def subscribers_export(ctx: Context, segment: str | None) -> None:
    """Write subscribers as CSV to stdout (the import format)."""
    click.echo(write_csv(ctx.store.subscribers(segment=segment)), nl=False)


@subscribers.command("list")
@click.option("--segment", help="Only this segment.")
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


# -- digests -----------------------------------------------------------------

@cli.group()
def digest() -> None:
    """Build and send digests."""


@digest.command("run")
@click.option("--cadence", type=click.Choice(CADENCES), default="weekly", show_default=True,
              help="Which digest to build for the current period.")
@click.option("--now", "now_text", metavar="ISO-DATETIME", help="Pretend it is this moment (tests, backfills).")
@click.option("--segment", help="Only build this segment's issue (sending covers every approved issue).")
@click.option("--send-only", is_flag=True, help="Build nothing; send issues already approved.")
@click.option("--no-send", is_flag=True, help="Build issues but send nothing.")
@click.option("--retry-unknown", is_flag=True,
              help="Send again deliveries whose outcome is unknown (may mail some people twice).")
@click.option("--retry-failed", is_flag=True, help="Send again deliveries the provider refused or that gave up.")
@click.option("--lock-wait", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long to queue behind another run (default: 3600 when building, 0 with --send-only).")
@pass_ctx
@handle_errors
def digest_run(ctx: Context, cadence: str, now_text: str | None, segment: str | None, send_only: bool,
               no_send: bool, retry_unknown: bool, retry_failed: bool, lock_wait: float | None) -> None:
    """Build this period's issue per segment and send approved issues.

    Safe to run twice: a period's issue is built once, and no delivery is
    sent twice. A build queues behind a run already holding the lock; a
    --send-only run finding the lock taken leaves the work to its holder.
    Exits non-zero when anything failed or is unknown.

    \b
    Example (cron, Monday 07:00):
        newsletter --config /srv/newsletter/newsletter.toml digest run --cadence weekly
    """
    now = parse_now(now_text)
    with progress_callbacks() as (on_issue, on_progress):
        runner = DigestRunner(ctx.config, ctx.store, ctx.segments,
                              on_issue=on_issue, on_progress=on_progress,
                              on_drafts=lambda drafts: lifecycle.notify_editors(ctx, drafts))
        try:
            report = runner.run(None if send_only else cadence, now, send=not no_send, retry_unknown=retry_unknown,
                                retry_failed=retry_failed, segment=segment, lock_wait=lock_wait)
        except LockBusy as exc:
            if not send_only:
                raise
            # The holder sends whatever this run would have sent: not a failure.
            click.echo(str(exc), err=True)
            return
    print_report(report)
    if report.tally.needs_attention:
        sys.exit(1)


@cli.group()
def issues() -> None:
    """List, inspect, approve, cancel and send issues."""


@issues.command("list")
@click.option("--status", type=click.Choice(ISSUE_STATUSES),
              help="Only issues in this state.")
@pass_ctx
@handle_errors
def issues_list(ctx: Context, status: str | None) -> None:
    """List issues, oldest first, with their delivery counts."""
    for issue in ctx.store.issues(status=status):
        counts = ctx.store.delivery_counts(issue["id"])
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no deliveries"
        click.echo(f"{issue['id']:>5}  {issue['segment']:<11} {issue['cadence']:<8} {issue['period']:<9} "
                   f"{issue['status']:<9} {shown}")


@issues.command("show")
@click.argument("issue_id", type=int)
@pass_ctx
@handle_errors
def issues_show(ctx: Context, issue_id: int) -> None:
    """Show an issue: status, summaries, deliveries."""
    issue = ctx.store.get_issue(issue_id)
    if issue is None:
        raise click.ClickException(f"issue {issue_id}: no such issue")
    click.echo(f"issue {issue['id']}: {issue['segment']} {issue['cadence']} {issue['period']} ({issue['status']})")
    click.echo(f"created {issue['created_at']}, approved {issue['approved_at'] or '-'}, sent {issue['sent_at'] or '-'}")
    for s in ctx.store.issue_summaries(issue_id):
        mark = " [updated]" if s["is_update"] else ""
        click.echo(f"  {s['published']}  {s['slug']}{mark}  {s['title']}")
    for status_name, n in sorted(ctx.store.delivery_counts(issue_id).items()):
        click.echo(f"  deliveries {status_name}: {n}")


@issues.command("approve")
@click.argument("issue_id", type=int)
@pass_ctx
@handle_errors
def issues_approve(ctx: Context, issue_id: int) -> None:
    """Approve a draft; the next `digest run` (or `issues send`) sends it."""
    lifecycle.transition(ctx, issue_id, "approved")
    click.echo(f"issue {issue_id} approved")


@issues.command("cancel")
@click.argument("issue_id", type=int)
@pass_ctx
@handle_errors
def issues_cancel(ctx: Context, issue_id: int) -> None:
    """Cancel a draft or approved issue; its summaries return to the pool for the next one."""
    lifecycle.transition(ctx, issue_id, "cancelled")
    click.echo(f"issue {issue_id} cancelled")


@issues.command("add-update")
@click.argument("issue_id", type=int)
@click.argument("slug")
@pass_ctx
@handle_errors
def issues_add_update(ctx: Context, issue_id: int, slug: str) -> None:
    """Include the latest revision of an already-sent summary (a correction) in a draft, marked updated."""
    summary = ctx.store.add_summary_to_issue(issue_id, slug)
    click.echo(f"issue {issue_id}: added {slug} revision {summary['revision']}")


@issues.command("send")
@click.argument("issue_id", type=int)
@click.option("--retry-unknown", is_flag=True, help="Send again deliveries whose outcome is unknown.")
@click.option("--retry-failed", is_flag=True, help="Send again deliveries the provider refused or that gave up.")
@pass_ctx
@handle_errors
def issues_send(ctx: Context, issue_id: int, retry_unknown: bool, retry_failed: bool) -> None:
    """Send (or resume) one approved issue now."""
    issue = ctx.store.get_issue(issue_id)
    if issue is None:
        raise click.ClickException(f"issue {issue_id}: no such issue")
    retrying = retry_unknown or retry_failed
    if issue["status"] not in ("approved", "sending") and not (retrying and issue["status"] == "sent"):
        raise click.ClickException(f"issue {issue_id}: is {issue['status']}; approve it first")
    report = RunReport()
    with progress_callbacks() as (on_issue, on_progress):
        runner = DigestRunner(ctx.config, ctx.store, ctx.segments,
                              on_issue=on_issue, on_progress=on_progress)
        with run_lock(runner.lock_path):
            runner.send([issue_id], report, retry_unknown=retry_unknown, retry_failed=retry_failed)
    print_report(report)
    if report.tally.needs_attention:
        sys.exit(1)


@issues.command("test-send")
@click.argument("issue_id", type=int)
@click.option("--to", "address", required=True, help="Where the test copy goes.")
@pass_ctx
@handle_errors
def issues_test_send(ctx: Context, issue_id: int, address: str) -> None:
    """Send one copy marked [TEST] to an address; never recorded as a delivery."""
    lifecycle.send_test(ctx, issue_id, address)
    click.echo(f"test copy of issue {issue_id} sent to {address}")


@cli.command()
@pass_ctx
@handle_errors
def status(ctx: Context) -> None:
    """What went out, what waits, and what needs attention."""
    st = lifecycle.status(ctx)
    click.echo("Latest issue per segment and cadence:")
    for i in st.latest:
        click.echo(f"  {i['segment']:<11} {i['cadence']:<8} issue {i['id']} {i['period']} {i['status']}")
    if not st.latest:
        click.echo("  none yet")
    click.echo("Deliveries: " + (", ".join(f"{k} {v}" for k, v in sorted(st.deliveries.items())) or "none"))
    click.echo("Subscribers: " + (", ".join(f"{k} {v}" for k, v in sorted(st.subscribers.items())) or "none"))
    for d in st.drafts:
        click.echo(f"Waiting for approval: issue {d['id']} ({d['segment']} {d['cadence']} {d['period']})")
    for a in st.attention:
        hint = "see `issues show`; resend only with --retry-unknown" if a["status"] == "unknown" else a["example"]
        click.echo(f"Needs attention: issue {a['issue_id']}: {a['n']} {a['status']} ({hint})")


def print_report(report: RunReport) -> None:
    for issue in report.created:
        click.echo(f"issue {issue['id']}: {issue['segment']} {issue['cadence']} {issue['period']}, "
                   f"{issue['summaries']} summaries ({issue['status']})")
    for name in report.empty:
        click.echo(f"{name}: no new summaries, no issue")
    for reason, count in report.tally.errors.most_common(10):
        click.echo(f"  {count} x {reason}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report.tally.line())


@cli.command()
@click.option("--segment", help="Only this segment.")
@click.option("--issue", "issue_id", type=int, help="Preview this issue instead of the upcoming one.")
@click.option("--cadence", type=click.Choice(CADENCES), default="weekly", show_default=True,
              help="Which digest to preview.")
@click.option("--out", "out_dir", default="preview", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the HTML, text and side-by-side page.")
@click.option("--now", "now_text", metavar="ISO-DATETIME", help="Preview as of this moment.")
@click.option("--open", "open_browser", is_flag=True, help="Open the preview page in a browser.")
@pass_ctx
@handle_errors
def preview(ctx: Context, segment: str | None, issue_id: int | None, cadence: str, out_dir: Path,
            now_text: str | None, open_browser: bool) -> None:
    """Write each segment's HTML and text, and a side-by-side page. Sends nothing."""
    if issue_id is not None:
        rendered = render_issue(ctx, issue_id)
        renders = {rendered.segment: rendered}
    else:
        now = parse_now(now_text)
        names = [segment] if segment else list(ctx.segments)
        for name in names:
            if name not in ctx.segments:
                raise click.BadParameter(f"unknown segment {name!r}", param_hint="--segment")
        renders = {n: r for n in names if (r := render_upcoming(ctx, n, cadence, now))}
    index = write_preview(out_dir, renders)
    for name, r in renders.items():
        click.echo(f"{name}: {out_dir / (name + '.html')} ({len(r.html.encode()) / 1024:.1f} KB), "
                   f"{len(r.summary_ids)} summaries")
    if not renders:
        click.echo("no segment has new summaries")
    click.echo(f"preview page: {index}")
    if open_browser:
        webbrowser.open(index.resolve().as_uri())


@cli.command()
@click.option("--subscribers", "sizes", type=int, multiple=True, default=(10_000,), show_default=True,
              help="Number of subscribers (repeat for several sizes, e.g. 10000 100000 1000000).")
@click.option("--messenger", "messengers", type=click.Choice(["counting", "json", "sendgrid", "smtp", "smtp-pool"]),
              multiple=True, help="Messenger to measure (repeat; default: all, the smtp ones only up to 20,000). "
                                  "smtp-pool uses 4 connections.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results here.")
def bench(sizes: tuple[int, ...], messengers: tuple[str, ...], json_out: Path | None) -> None:
    """Measure the whole weekly digest at scale in a scratch database.

    Each case (size, messenger) runs in a fresh process: generate subscribers
    across segments, cadences and topics, add 10 recent summaries, run the
    weekly digest, and report wall and CPU time, peak RSS, recipients per
    second, MJML and premailer compiles, ledger write time and, for the json
    messenger, the time to JSON-encode the SendGrid request bodies alone (the
    floor). Sinks for sendgrid (HTTP) and smtp run on loopback in their own process.

    \b
    Example:
        newsletter bench --subscribers 10000 --subscribers 100000 --messenger counting
    """
    from rich.console import Console
    from rich.table import Table

    from . import bench as bench_mod

    chosen = messengers or bench_mod.MESSENGERS
    results = []
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log file gets the whole table
    console.print(f"machine: {bench_mod.machine()}")
    for n in sizes:
        for name in chosen:
            if name.startswith("smtp") and n > bench_mod.SMTP_LIMIT and not messengers:
                continue
            with console.status(f"{n:,} subscribers, {name}..."):
                results.append(bench_mod.run_isolated(n, name))
    table = Table("subscribers", "messenger", "recipients", "wall s", "cpu s", "peak RSS MB", "recipients/s",
                  "MJML", "premailer", "render s", "ledger s", "messenger s", "requests", "JSON encode s")
    for r in results:
        table.add_row(f"{r.subscribers:,}", r.messenger, f"{r.recipients:,}", f"{r.wall_s:.2f}", f"{r.cpu_s:.2f}",
                      f"{r.peak_rss_mb:.0f}", f"{r.recipients_per_s:,}", str(r.mjml_compiles),
                      str(r.premailer_compiles), f"{r.render_s:.2f}", f"{r.ledger_write_s:.2f}",
                      f"{r.messenger_s:.2f}", str(r.requests),
                      "" if r.json_encode_s is None else f"{r.json_encode_s:.2f}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"machine": bench_mod.machine(), "results": bench_mod.as_dicts(results)},
                                       indent=2))


@cli.command()
@pass_ctx
@handle_errors
def settings(ctx: Context) -> None:
    """Show every setting: its value now, and what it does."""
    values = ctx.config.as_dict()
    click.echo(f"# from {ctx.config.source or 'defaults (no newsletter.toml found)'}")
    for s in SETTINGS:
        click.echo(f"{s.name} = {values[s.name]!r}    # {s.help}")

from .web.commands import editors, serve  # noqa: E402
cli.add_command(serve)
cli.add_command(editors)
