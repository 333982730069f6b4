"""`newsletter issues`: list, inspect, approve, cancel, correct, send and test-send issues."""

from __future__ import annotations

import click

from .. import lifecycle
from ..context import Context
from ..digest import DigestRunner
from ..model import ISSUE_STATUSES
from ..progress import progress_callbacks
from ..store import SCHEDULABLE
from .audit import cli_actor
from .common import handle_errors, pass_ctx
from .digest import finish_run


@click.group()
def issues() -> None:
    """List, inspect, approve, cancel and send issues."""


@issues.command("list")
@click.option("--status", type=click.Choice(ISSUE_STATUSES),
              help="Only issues in this state.")
@pass_ctx
@handle_errors
def issues_list(ctx: Context, status: str | None) -> None:
    """List issues, oldest first, with their delivery counts.

    An issue that went out to some readers while others wait (deferred by
    the relay, or of unknown outcome) shows as "partly sent", with the
    command that finishes it.

    \b
    Example:
        newsletter issues list --status sending
    """
    for issue in ctx.store.issues(status=status):
        p = lifecycle.progress(ctx, issue)
        at = lifecycle.shown_send_time(issue, ctx.config.timezone)
        click.echo(f"{issue['id']:>5}  {issue['segment']:<11} {issue['cadence']:<8} {issue['period']:<9} "
                   f"{p.shown:<9} {p.counts_text}" + (f"; {p.resume}" if p.resume else "")
                   + (f"; sends at {at}" if at and issue["status"] in SCHEDULABLE else ""))


@issues.command("show")
@click.argument("issue_id", type=int)
@pass_ctx
@handle_errors
def issues_show(ctx: Context, issue_id: int) -> None:
    """Show an issue: status, summaries, deliveries."""
    issue = ctx.store.get_issue(issue_id)
    if issue is None:
        raise click.ClickException(f"issue {issue_id}: no such issue")
    p = lifecycle.progress(ctx, issue)
    click.echo(f"issue {issue['id']}: {issue['segment']} {issue['cadence']} {issue['period']} ({p.shown})")
    click.echo(f"created {issue['created_at']}, approved {issue['approved_at'] or '-'}, sent {issue['sent_at'] or '-'}")
    if issue["status"] in SCHEDULABLE:
        at = lifecycle.shown_send_time(issue, ctx.config.timezone)
        click.echo(f"sends at {at}" if at else "sends with the next run once approved")
    for s in ctx.store.issue_summaries(issue_id):
        mark = " [updated]" if s["is_update"] else ""
        click.echo(f"  {s['published']}  {s['slug']}{mark}  {s['title']}")
    for status_name, n in sorted(p.counts.items()):
        click.echo(f"  deliveries {status_name}: {n}")
    if issue.get("compacted_at"):
        click.echo(f"  compacted {issue['compacted_at']} (ledger_retention_days): counts only, nothing to retry")
    if p.resume:
        click.echo(f"  {p.resume}")


def _transition_command(name: str, status: str, doc: str) -> click.Command:
    """approve and cancel: the same move through lifecycle.transition, to a different status."""
    @issues.command(name, help=doc)
    @click.argument("issue_id", type=int)
    @pass_ctx
    @handle_errors
    def command(ctx: Context, issue_id: int) -> None:
        before = lifecycle.get_issue(ctx, issue_id)["status"]
        lifecycle.transition(ctx, issue_id, status)
        ctx.store.record_audit(cli_actor(), f"issue.{name}", f"issue:{issue_id}", {"status": [before, status]})
        click.echo(f"issue {issue_id} {status}")
    return command


issues_approve = _transition_command("approve", "approved",
                                     "Approve a draft; the next `digest run` (or `issues send`) sends it.")
issues_cancel = _transition_command("cancel", "cancelled",
                                    "Cancel a draft or approved issue; its summaries return to the pool for the next one.")


@issues.command("schedule")
@click.argument("issue_id", type=int)
@click.option("--at", "at_text", metavar="ISO-DATETIME",
              help="When it may go out; without an offset, in the configured timezone.")
@click.option("--clear", is_flag=True, help="Drop the time: the next run sends it once approved.")
@pass_ctx
@handle_errors
def issues_schedule(ctx: Context, issue_id: int, at_text: str | None, clear: bool) -> None:
    """Set when a draft or approved issue goes out.

    The ten-minute cron line (`digest run --send-only`) sends an approved
    issue only once its time has come; until then it stays approved. A
    draft still needs approving. A time in the past is refused.

    \b
    Example:
        newsletter issues schedule 12 --at 2026-12-07T07:00          # in the configured timezone
        newsletter issues schedule 12 --at 2026-12-07T06:00+00:00
        newsletter issues schedule 12 --clear
    """
    if clear == (at_text is not None):
        raise click.UsageError("give either --at ISO-DATETIME or --clear")
    at = None if clear else lifecycle.parse_send_time(at_text or "", ctx.config.timezone)
    before = lifecycle.get_issue(ctx, issue_id).get("send_at")
    issue = lifecycle.schedule(ctx, issue_id, at)
    ctx.store.record_audit(cli_actor(), "issue.schedule", f"issue:{issue_id}", {"send_at": [before, issue["send_at"]]})
    shown = lifecycle.shown_send_time(issue, ctx.config.timezone)
    click.echo(f"issue {issue_id}: sends at {shown}" if shown else f"issue {issue_id}: sends with the next run")


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
@click.option("--retry-failed", is_flag=True,
              help="Send again deliveries refused for good or whose retries ran out (an operator's choice).")
@click.option("--failed-matching", metavar="TEXT", default="",
              help="With --retry-failed: only those whose error contains TEXT.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Worker processes sending the issue, its pending deliveries split by id range, as "
                   "`digest run --workers`.")
@pass_ctx
@handle_errors
def issues_send(ctx: Context, issue_id: int, retry_unknown: bool, retry_failed: bool, failed_matching: str,
                workers: int) -> None:
    """Send (or resume) one approved issue now.

    \b
    Examples (after fixing the relay that refused some addresses; a large issue through two processes):
        newsletter issues send 12 --retry-failed --failed-matching "relay access denied"
        newsletter issues send 12 --workers 2
    """
    if failed_matching and not retry_failed:
        raise click.UsageError("--failed-matching goes with --retry-failed")
    with progress_callbacks() as (on_issue, on_progress):
        runner = DigestRunner(ctx.config, ctx.store, ctx.segments, on_issue=on_issue, on_progress=on_progress,
                              actor=cli_actor(), workers=workers)
        report = runner.send_one(issue_id, retry_unknown=retry_unknown, retry_failed=retry_failed,
                                 failed_matching=failed_matching)
    finish_run(report)  # a stopped run (a worker died, the sender was refused) says so and exits 1


@issues.command("test-send")
@click.argument("issue_id", type=int)
@click.option("--to", "address", required=True, help="Where the test copy goes.")
@pass_ctx
@handle_errors
def issues_test_send(ctx: Context, issue_id: int, address: str) -> None:
    """Send one copy marked [TEST] to an address; never recorded as a delivery."""
    lifecycle.send_test(ctx, issue_id, address)
    ctx.store.record_audit(cli_actor(), "issue.test-send", f"issue:{issue_id}", {"to": address})
    click.echo(f"test copy of issue {issue_id} sent to {address}")
