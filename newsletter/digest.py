"""The digest job: select -> build issues -> render variants -> dispatch, under one lock.

Idempotent per (segment, cadence, period): the issue row is unique, and the
ledger never sends a planned delivery twice, so cron may fire twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

from .dispatch import Dispatcher, Tally
from .messengers import Messenger, messenger_from_config
from .render import Rendered, Renderer
from .segments import Segment
from .store import Store
from .tokens import Tokens

log = logging.getLogger("newsletter.digest")


class LockBusy(Exception):
    pass


@dataclass(frozen=True)
class Period:
    key: str  # 2026-W48 or 2026-11
    start: date

    @property
    def label(self) -> str:
        if "-W" in self.key:
            return f"Week of {self.start.day} {self.start:%B %Y}"
        return f"{self.start:%B %Y}"

    @classmethod
    def from_key(cls, key: str) -> "Period":
        if "-W" in key:
            year, week = key.split("-W")
            return cls(key, date.fromisocalendar(int(year), int(week), 1))
        return cls(key, date.fromisoformat(key + "-01"))


def period_for(now: datetime, cadence: str, tz: str = "UTC") -> Period:
    """The week (ISO, Monday first) or month that `now` falls in, in the configured zone."""
    day = local_today(now, tz)
    if cadence == "monthly":
        return Period(f"{day:%Y-%m}", day.replace(day=1))
    year, week, _ = day.isocalendar()
    return Period(f"{year}-W{week:02d}", day - timedelta(days=day.weekday()))


def local_today(now: datetime, tz: str) -> date:
    """Naive datetimes are read as already local."""
    return (now.astimezone(ZoneInfo(tz)) if now.tzinfo else now).date()


def topic_key(topics: list[str]) -> str:
    return "+".join(sorted(t.lower().replace(" ", "-") for t in topics)) or "all"


def matching(summaries: list[dict[str, Any]], topics: list[str]) -> list[dict[str, Any]]:
    """No topics chosen means every topic."""
    if not topics:
        return summaries
    wanted = {t.lower() for t in topics}
    return [s for s in summaries if wanted & {t.lower() for t in s["topics"]}]


def select_summaries(store: Store, segment: str, cadence: str, today: date, max_age_days: int,
                     limit: int) -> list[dict[str, Any]]:
    """Published, recent, and not yet carried by any live issue of this segment and cadence."""
    sent = store.sent_slugs(segment, cadence)
    since = (today - timedelta(days=max_age_days)).isoformat()
    fresh = [s for s in store.summaries(since=since, until=today.isoformat()) if s["slug"] not in sent]
    return fresh[:limit]


@contextlib.contextmanager
def run_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """One digest run at a time; the kernel releases the lock when its holder dies.

    With `wait`, queue behind the holder for up to that many seconds (a build
    must not be lost to a send-only run that happened to start first).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"{path}: another digest run holds the lock"
                                   + (f" (waited {wait:.0f} s)" if wait else "") + "; this one did nothing") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


@dataclass
class RunReport:
    created: list[dict[str, Any]] = field(default_factory=list)
    existing: list[dict[str, Any]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    messenger_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


class DigestRunner:
    def __init__(self, config: Any, store: Store, segments: dict[str, Segment], *,
                 renderer: Renderer | None = None, messenger_factory: Callable[[], Messenger] | None = None,
                 tokens: Tokens | None = None, on_progress: Callable[[int], None] | None = None,
                 on_issue: Callable[[int, int], None] | None = None,
                 on_drafts: Callable[[list[dict[str, Any]]], Any] | None = None):
        self.config, self.store, self.segments = config, store, segments
        self.renderer = renderer or Renderer.from_config(config)
        self.messenger_factory = messenger_factory or (lambda: messenger_from_config(config))
        self.tokens = tokens
        self.on_progress = on_progress
        self.on_issue = on_issue
        self.on_drafts = on_drafts

    @property
    def lock_path(self) -> Path:
        return Path(str(self.store.path) + ".lock")

    def build(self, cadence: str, now: datetime, report: RunReport, only: str | None = None) -> None:
        period = period_for(now, cadence, self.config.timezone)
        today = local_today(now, self.config.timezone)
        status = "draft" if self.config.approval_required else "approved"
        for name in self.segments:
            if only and name != only:
                continue
            existing = self.store.find_issue(name, cadence, period.key)
            if existing:
                report.existing.append(existing)
                continue
            chosen = select_summaries(self.store, name, cadence, today, self.config.max_age_days,
                                      self.config.max_summaries * 3)
            if not chosen:
                log.info("%s %s %s: no new summaries, no issue", name, cadence, period.key)
                report.empty.append(name)
                continue
            issue_id, created = self.store.create_issue(name, cadence, period.key, [s["id"] for s in chosen], status)
            entry = {"id": issue_id, "segment": name, "cadence": cadence, "period": period.key,
                     "summaries": len(chosen), "status": status}
            (report.created if created else report.existing).append(entry)

    def variant_renderer(self, issue: dict[str, Any], test: bool = False) -> Callable[..., Rendered | None]:
        """Renders lazily, once per distinct set of summaries a topic choice (less what a reader
        already received in another digest) yields."""
        summaries = self.store.issue_summaries(issue["id"])
        segment = self.segments[issue["segment"]]
        period_label = Period.from_key(issue["period"]).label
        by_topics: dict[tuple[str, frozenset[str]], Rendered | None] = {}
        by_content: dict[tuple[int, ...], Rendered] = {}

        def variant_for(topics: list[str], exclude: frozenset[str] = frozenset()) -> Rendered | None:
            key = (topic_key(topics), exclude)
            if key not in by_topics:
                chosen = [s for s in matching(summaries, topics) if s["slug"] not in exclude]
                ids = tuple(s["id"] for s in chosen)
                if not chosen:
                    log.info("issue %s: nothing left for topics %s: those subscribers get no email", issue["id"], key[0])
                    by_topics[key] = None
                elif ids in by_content:
                    by_topics[key] = by_content[ids]
                else:
                    variant = "all" if len(chosen) == len(summaries) else key[0]
                    rendered = self.renderer.render(issue_id=issue["id"], segment=segment, cadence=issue["cadence"],
                                                    period_label=period_label, summaries=chosen, variant=variant,
                                                    topics=[] if variant == "all" else topics, test=test)
                    by_content[ids] = by_topics[key] = rendered
            return by_topics[key]

        return variant_for

    def send(self, issue_ids: list[int] | None, report: RunReport, retry_unknown: bool = False,
             retry_failed: bool = False) -> None:
        self.config.require_sendable()
        if issue_ids is None:
            issues = self.store.issues_to_send(
                [status for status, wanted in (("unknown", retry_unknown), ("failed", retry_failed)) if wanted])
        else:
            issues = [self.store.get_issue(i) for i in issue_ids]
        if not issues:
            return
        tokens = self.tokens or Tokens(self.config.require_secret())
        messenger = self.messenger_factory()
        dispatcher = Dispatcher(self.store, messenger, tokens, self.config.site_url,
                                rate_limit=self.config.rate_limit, on_progress=self.on_progress,
                                on_start=self.on_issue)
        try:
            for issue in issues:
                resendable = (retry_unknown or retry_failed) and issue["status"] == "sent"
                if issue["status"] not in ("approved", "sending") and not resendable:
                    continue
                tally = dispatcher.send_issue(issue["id"], self.variant_renderer(issue), retry_unknown=retry_unknown,
                                              retry_failed=retry_failed)
                report.tally.add(tally)
        finally:
            report.messenger_seconds += dispatcher.send_seconds
            messenger.close()

    def run(self, cadence: str | None, now: datetime, *, send: bool = True, retry_unknown: bool = False,
            retry_failed: bool = False, segment: str | None = None, lock_wait: float | None = None) -> RunReport:
        """Build (when a cadence is given) and send. A build waits for the lock (an hour by default);
        a send-only run does not wait, since the holder sends what it would have sent."""
        report = RunReport()
        if segment is not None and segment not in self.segments:
            raise LookupError(f"segment: unknown {segment!r} (segments: {', '.join(self.segments)})")
        wait = (3600.0 if cadence else 0.0) if lock_wait is None else lock_wait
        with run_lock(self.lock_path, wait=wait):
            if cadence:
                self.build(cadence, now, report, only=segment)
            if send:
                self.send(None, report, retry_unknown=retry_unknown, retry_failed=retry_failed)
            drafts = [i for i in report.created if i["status"] == "draft"]
            if drafts and self.on_drafts:
                try:  # after sending: a failed notice must not hold back approved issues
                    self.on_drafts(drafts)
                except Exception as exc:  # noqa: BLE001 - reported, never fatal
                    report.warnings.append(f"editors' notice not sent: {exc}")
        return report

