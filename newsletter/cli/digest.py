"""`newsletter digest run` and `newsletter status`: the cron job, and what it left."""

from __future__ import annotations

import sys

import click

from .. import lifecycle
from ..context import Context
from ..digest import DigestRunner, LockBusy, RunReport
from ..progress import progress_callbacks
from .audit import cli_actor
from .common import cadence_option, handle_errors, now_option, parse_now, pass_ctx, segment_option


@click.group()
def digest() -> None:
    """Build and send digests."""


@digest.command("run")
@cadence_option("Which digest to build for the current period.")
@now_option("Pretend it is this moment (tests, backfills).")
@segment_option("Only build this segment's issue (sending covers every approved issue).")
@click.option("--send-only", is_flag=True, help="Build nothing; send issues already approved.")
@click.option("--no-send", is_flag=True, help="Build issues but send nothing.")
@click.option("--retry-unknown", is_flag=True,
              help="Send again deliveries whose outcome is unknown (may mail some people twice).")
@click.option("--retry-failed", is_flag=True,
              help="Send again deliveries refused for good or whose retries ran out (an operator's choice).")
@click.option("--failed-matching", metavar="TEXT", default="",
              help="With --retry-failed: only those whose error contains TEXT (e.g. '550 5.1.1').")
@click.option("--lock-wait", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long to queue behind another run (default: 3600 when building, 0 with --send-only).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Worker processes sending each issue, its pending deliveries split by id range "
                   "(each its own messenger and connections; rate_limit is shared out).")
@pass_ctx
@handle_errors
def digest_run(ctx: Context, cadence: str, now_text: str | None, segment: str | None, send_only: bool,
               no_send: bool, retry_unknown: bool, retry_failed: bool, failed_matching: str,
               lock_wait: float | None, workers: int) -> None:
    """Build this period's issue per segment and send approved issues.

    Safe to run twice: a period's issue is built once, and no delivery is
    sent twice. A build queues behind a run already holding the lock; a
    --send-only run finding the lock taken leaves the work to its holder.
    Deliveries deferred by a relay that was down or said 4xx are retried by
    each run once their delay (5 minutes, doubling, at most 4 hours) is over,
    for retry_deferred_days; after a few transient failures in a row the run
    stops and leaves the rest deferred. Exits non-zero when anything failed or
    is unknown, the run stopped, or an approved issue is held back because its
    text is above max_reading_grade (enforce_reading_grade).

    With --workers N, N processes send each issue, each a run of its pending
    deliveries by id, claiming and recording its own batches in the same
    database with the same guarantees. If one dies, the others stop after
    the batch they have in flight and the run exits non-zero; the next run
    marks what the dead worker had claimed unknown and sends the rest.

    \b
    Examples (cron, Monday 07:00, and every ten minutes; two worker processes):
        newsletter --config /srv/newsletter/newsletter.toml digest run --cadence weekly
        newsletter --config /srv/newsletter/newsletter.toml digest run --send-only
        newsletter digest run --cadence weekly --workers 2
    """
    if failed_matching and not retry_failed:
        raise click.UsageError("--failed-matching goes with --retry-failed")
    now = parse_now(now_text)
    with progress_callbacks() as (on_issue, on_progress):
        runner = DigestRunner(ctx.config, ctx.store, ctx.segments,
                              on_issue=on_issue, on_progress=on_progress,
                              on_drafts=lambda drafts: lifecycle.notify_editors(ctx, drafts), actor=cli_actor(),
                              workers=workers)
        try:
            report = runner.run(None if send_only else cadence, now, send=not no_send, retry_unknown=retry_unknown,
                                retry_failed=retry_failed, failed_matching=failed_matching, segment=segment,
                                lock_wait=lock_wait)
        except LockBusy as exc:
            if not send_only:
                raise
            # The holder sends whatever this run would have sent: not a failure.
            click.echo(str(exc), err=True)
            return
    finish_run(report)


@click.command()
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
    for p in st.partly_sent:
        i = p.issue
        click.echo(f"Partly sent: issue {i['id']} ({i['segment']} {i['cadence']} {i['period']}): {p.counts_text}; "
                   f"{p.resume}")
    for a in st.attention:
        if a["kind"] == "welcome":  # welcome issues are no digest: `issues show` does not know them
            click.echo(f"Needs attention: welcome emails: {a['n']} {a['status']} ({a['example']})")
            continue
        hint = "see `issues show`; resend only with --retry-unknown" if a["status"] == "unknown" else a["example"]
        click.echo(f"Needs attention: issue {a['issue_id']}: {a['n']} {a['status']} ({hint})")
    for issue_id, n in sorted(st.bounces.items()):
        click.echo(f"Bounces: issue {issue_id}: {n['hard']} hard, {n['soft']} soft, {n['complaint']} complaints")
    if st.unconsented:
        click.echo(f"Without consent: {st.unconsented} active subscriber(s) have no consent record and are skipped "
                   "(set legacy_consent = yes if this list predates consent records)")
    for f in st.failing_feeds:  # summaries pull
        click.echo(f"Feed failing: {f['url']}: {f['failures']} in a row since {f['failing_since']}: {f['last_error']}")


def finish_run(report: RunReport) -> None:
    """A run's report, then its one Error line if it stopped; exit 1 when anything needs the operator
    (failed or unknown deliveries, an issue held back, a stopped run): cron mails it."""
    print_report(report)
    if report.failure:
        click.echo(f"Error: {report.failure}", err=True)
    if report.tally.needs_attention or report.held or report.failure:
        sys.exit(1)


def print_report(report: RunReport) -> None:
    for issue in report.created:
        click.echo(f"issue {issue['id']}: {issue['segment']} {issue['cadence']} {issue['period']}, "
                   f"{issue['summaries']} summaries ({issue['status']})")
    for name in report.empty:
        click.echo(f"{name}: no new summaries, no issue")
    for reason, count in report.tally.errors.most_common(10):
        click.echo(f"  {count} x {reason}", err=True)
    if report.tally.stopped:
        click.echo(report.tally.stopped, err=True)  # one line for the relay, not one per deferral
    else:
        for reason, count in report.tally.deferrals.most_common(3):
            click.echo(f"  {count} x {reason} (deferred, will retry)", err=True)
    for held in report.held:
        click.echo(f"error: {held}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report.tally.line())
