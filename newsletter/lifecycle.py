"""Issue lifecycle beyond building and sending: approve, cancel, test sends, editor notices, status.

draft -> approved -> sending -> sent, or cancelled; a `sending` issue that has
sent to some readers and waits for others is shown as "partly sent". Test sends
and editor notices go through the configured messenger but never into the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from .dispatch import requires_consent
from .messengers import messenger_from_config, send_notice
from .model import OPEN_DELIVERY, Envelope, Messenger, Notice, recipient_values
from .render import variants_of
from .sources.subscribers import normalise_email
from .store import SCHEDULABLE, TRANSITIONS


class LifecycleError(LookupError):
    pass


def get_issue(ctx: Any, issue_id: int) -> dict[str, Any]:
    issue = ctx.store.get_issue(issue_id)
    if issue is None:
        raise LifecycleError(f"issue {issue_id}: no such issue")
    return issue


def transition(ctx: Any, issue_id: int, status: str) -> dict[str, Any]:
    """Approve or cancel; a sending or sent issue cannot be cancelled (its mail is out)."""
    issue = get_issue(ctx, issue_id)
    allowed = TRANSITIONS[status]
    if not ctx.store.set_issue_status(issue_id, status, expect=allowed):
        raise LifecycleError(f"issue {issue_id}: is {issue['status']}; can only become {status} from "
                             f"{' or '.join(allowed)}")
    return get_issue(ctx, issue_id)


def parse_send_time(text: str, tz: str) -> datetime:
    """An ISO 8601 date and time; without an offset it is read in the configured zone `tz`."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LifecycleError(f"send time: {text!r} is no ISO date and time (e.g. 2026-12-07T07:00)") from None
    return when.replace(tzinfo=ZoneInfo(tz)) if when.tzinfo is None else when


def schedule(ctx: Any, issue_id: int, at: datetime | None, now: datetime | None = None) -> dict[str, Any]:
    """Set (at) or clear (None) when a draft or approved issue may go out; a time already past is refused
    (it would send at once, which `issues send` says plainly)."""
    issue = get_issue(ctx, issue_id)
    if issue["status"] not in SCHEDULABLE:
        raise LifecycleError(f"issue {issue_id}: is {issue['status']}; only a draft or approved issue is scheduled")
    stamp = None
    if at is not None:
        at = at.astimezone(timezone.utc).replace(microsecond=0)
        if at <= (now or datetime.now(timezone.utc)):
            raise LifecycleError(f"issue {issue_id}: {at.isoformat()} is in the past; "
                                 f"send it now with `newsletter issues send {issue_id}`")
        stamp = at.isoformat()
    ctx.store.schedule_issue(issue_id, stamp)
    return get_issue(ctx, issue_id)


def shown_send_time(issue: dict[str, Any], tz: str) -> str | None:
    """The issue's send time in the configured zone (None: with the next run)."""
    if not issue.get("send_at"):
        return None
    return datetime.fromisoformat(issue["send_at"]).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def send_test(ctx: Any, issue_id: int, address: str, messenger: Messenger | None = None) -> str:
    """Mail one copy, subject marked [TEST], to an editor. Never recorded as a delivery."""
    issue = get_issue(ctx, issue_id)
    address = normalise_email(address)
    rendered = variants_of(ctx, issue, test=True)([])
    envelope = Envelope(delivery_id=0, subscriber_id=0, email=address, name="",
                        values=recipient_values("test-send", "test-send", "editor"),
                        unsubscribe_url=f"{ctx.config.site_url}/u/test-send")
    messenger = messenger or messenger_from_config(ctx.config)
    try:
        outcome = messenger.send(rendered, [envelope])[0]
    finally:
        messenger.close()
    if outcome.status != "sent":
        raise LifecycleError(f"{address}: {outcome.status}: {outcome.error}")
    return outcome.provider_id or ""


def notify_editors(ctx: Any, issues: list[dict[str, Any]], messenger: Messenger | None = None) -> str | None:
    """Tell the editors' address that drafts wait for approval, with a link to each."""
    address = ctx.config.editors_email
    if not address or not issues:
        return None
    site = ctx.config.site_url
    lines = [f"Issue {i['id']}: {i['segment']} {i['cadence']} {i['period']}, {i.get('summaries', '?')} summaries: "
             f"{site}/editor/issues/{i['id']}" for i in issues]
    text = ("New digest drafts wait for approval:\n\n" + "\n".join(lines)
            + "\n\nApprove them on the site or with `newsletter issues approve ID`.\n")
    notice = Notice(to=address, subject=f"{len(issues)} digest draft(s) to approve", text=text, category="editors")
    outcome = send_notice(ctx.config, notice, messenger)
    if outcome.status != "sent":
        raise LifecycleError(f"{address}: editors' notice {outcome.status}: {outcome.error}")
    return outcome.provider_id


@dataclass
class Progress:
    """Where an issue stands: its status as shown, its delivery counts, and what resumes it."""
    issue: dict[str, Any]
    shown: str  # the issue's status, or "partly sent"
    counts: dict[str, int]
    resume: str = ""  # the command that finishes it, when something waits

    @property
    def counts_text(self) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(self.counts.items())) or "no deliveries"

    def line(self) -> str:
        return f"{self.shown} ({self.counts_text})" + (f"; {self.resume}" if self.resume else "")


def progress(ctx: Any, issue: dict[str, Any]) -> Progress:
    """A `sending` issue with anything beyond pending rows went partly out: say so, and how it finishes."""
    counts = ctx.store.delivery_counts(issue["id"])
    if issue["status"] != "sending" or not set(counts) - {"pending"}:
        return Progress(issue, issue["status"], counts)
    steps = []
    if counts.get("pending") or counts.get("deferred"):
        when = ctx.store.next_attempt_at(issue["id"]) if counts.get("deferred") else None
        steps.append("resumes with `newsletter digest run --send-only` (the ten-minute cron line)"
                     + (f", deferred ones from {when}" if when else ""))
    if counts.get("unknown"):
        steps.append(f"`newsletter issues send {issue['id']} --retry-unknown` re-sends the unknown ones "
                     "(they may have arrived)")
    return Progress(issue, "partly sent" if any(counts.get(s) for s in OPEN_DELIVERY) else "sending", counts,
                    "; ".join(steps))


@dataclass
class Status:
    latest: list[dict[str, Any]]
    deliveries: dict[str, int]
    subscribers: dict[str, int]
    attention: list[dict[str, Any]]
    drafts: list[dict[str, Any]]
    partly_sent: list[Progress]
    bounces: dict[int, dict[str, int]] = field(default_factory=dict)  # issue -> hard, soft, complaint
    failing_feeds: list[dict[str, Any]] = field(default_factory=list)  # feeds whose last poll failed
    unconsented: int = 0  # active subscribers the real backends skip: no consent record, no legacy_consent


def status(ctx: Any) -> Status:
    store = ctx.store
    partly = [p for p in (progress(ctx, i) for i in store.issues(status="sending")) if p.shown == "partly sent"]
    st = Status(store.latest_issues(), store.delivery_counts(), store.subscriber_counts(),
                store.deliveries_needing_attention(), store.issues(status="draft"), partly, store.bounce_counts())
    st.failing_feeds = store.failing_feeds()
    if requires_consent(ctx.config):
        st.unconsented = store.active_without_consent()
    return st
