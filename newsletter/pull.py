"""`summaries pull`: every configured feed polled, its new and changed items stored in one transaction per feed.

A failing feed never stops the others nor the digest after it; it is counted, shown
in `status`, and after NOTICE_AFTER failures in a row the editors get one notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messengers import send_notice
from .model import Notice
from .sources.feeds import FeedSpec, Poll, feed_specs, poll
from .store import NOTICE_AFTER, ImportCounts


@dataclass
class FeedResult:
    url: str
    status: str  # imported | not-modified | failed
    counts: ImportCounts | None = None
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str = ""
    failures: int = 0
    notice: str = ""  # what became of the editors' notice, when one was due

    def line(self) -> str:
        """One line per feed, for the cron log."""
        if self.status == "not-modified":
            return f"{self.url}: not modified"
        if self.status == "failed":
            error = self.error.removeprefix(f"{self.url}: ")
            return f"{self.url}: failed ({self.failures} in a row): {error}" + (f"; {self.notice}" if self.notice else "")
        c = self.counts or ImportCounts()
        text = f"{self.url}: {c.inserted} added, {c.updated} updated, {c.revised} new revisions, {c.unchanged} unchanged"
        if self.ignored:
            text += f"; categories ignored (not in the topic list): {', '.join(self.ignored)}"
        if self.skipped:
            text += f"; {len(self.skipped)} item(s) skipped, first: {self.skipped[0]}"
        return text


def pull_feeds(ctx: Any) -> list[FeedResult]:
    """Poll each feed of the `feeds` setting in order; returns one result per feed."""
    specs = feed_specs(ctx.config.feeds, ctx.topics)
    if not specs:
        raise LookupError("feeds: none configured (add [[feeds]] tables with a url to newsletter.toml)")
    return [_pull_one(ctx, spec) for spec in specs]


def _pull_one(ctx: Any, spec: FeedSpec) -> FeedResult:
    store = ctx.store
    state = store.feed_state(spec.url) or {}
    answer: Poll = poll(spec, ctx.topics, state.get("etag"), state.get("last_modified"), ctx.config.feed_timeout)
    if answer.status == "not-modified":
        store.feed_not_modified(spec.url, answer.etag, answer.last_modified)
        return FeedResult(spec.url, "not-modified")
    if answer.status == "fetched":
        counts = store.import_feed(spec.url, answer.read.records, answer.etag, answer.last_modified)
        return FeedResult(spec.url, "imported", counts, answer.read.ignored, answer.read.skipped)
    state = store.feed_failed(spec.url, answer.error)
    result = FeedResult(spec.url, "failed", error=answer.error, failures=state["failures"])
    if store.claim_feed_notice(spec.url):
        result.notice = _tell_editors(ctx, state)
    return result


def _tell_editors(ctx: Any, state: dict[str, Any]) -> str:
    """One notice per run of failures; if it cannot go out, the next pull tries again."""
    address = ctx.config.editors_email
    if not address:
        return "no editors_email to tell"
    text = (f"The feed {state['url']} has failed {state['failures']} times in a row since {state['failing_since']}.\n\n"
            f"Last error: {state['last_error']}\n\n"
            "Digests still go out with the summaries already imported. Check the feed's address in newsletter.toml\n"
            "or the site publishing it; `newsletter status` shows the feeds that fail. This notice is sent once;\n"
            "the next success resets the count.\n")
    notice = Notice(to=address, subject=f"Feed failing {NOTICE_AFTER} times in a row: {state['url']}", text=text,
                    category="editors")
    try:
        outcome = send_notice(ctx.config, notice)
    except Exception as exc:  # any messenger failure: keep the notice due, never stop the pull
        outcome = None
        error = str(exc)
    else:
        error = outcome.error or outcome.status
    if outcome is None or outcome.status != "sent":
        ctx.store.release_feed_notice(state["url"])
        return f"editors' notice not sent ({error}); the next pull tries again"
    return f"editors told at {address}"
