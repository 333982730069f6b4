"""The digest job: select -> build issues -> render variants -> dispatch, under one lock, with one
rule for which issues may be sent.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .dispatch import Dispatcher, Tally, requires_consent
from .messengers import messenger_from_config
from .model import Messenger, VariantFor
from .render import Renderer, issue_variants
from .segments import Segment
from .select import local_today, period_for, select_summaries
from .store import Store, due, may_send, reading_hold
from .tokens import Tokens
from .workers import WorkerFailed, WorkerPool, WorkerStats

log = logging.getLogger("newsletter.digest")


class LockBusy(Exception):
    pass


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
    held: list[str] = field(default_factory=list)  # approved issues kept back (enforce_reading_grade): a failure
    failure: str = ""  # a worker died or failed: the run's one line (it exits non-zero)
    worker_stats: list[WorkerStats] = field(default_factory=list)  # each worker process's own figures


class DigestRunner:
    def __init__(self, config: Any, store: Store, segments: dict[str, Segment], *,
                 renderer: Renderer | None = None, messenger_factory: Callable[[], Messenger] | None = None,
                 tokens: Tokens | None = None, on_progress: Callable[[int], None] | None = None,
                 on_issue: Callable[[int, int], None] | None = None,
                 on_drafts: Callable[[list[dict[str, Any]]], Any] | None = None, actor: str | None = None,
                 workers: int = 1):
        """With `workers` > 1 each issue's pending deliveries are split by id range over that many worker
        processes (workers.py); they render with the config's templates and build their messenger from the
        config, or call `messenger_factory`, which must then be picklable (a module-level function or a
        functools.partial of one)."""
        if workers < 1:
            raise ValueError(f"workers: {workers}: at least 1")
        self.config, self.store, self.segments = config, store, segments
        self.workers = workers
        self.renderer = renderer or Renderer.from_config(config)
        self.worker_messenger = messenger_factory
        self.messenger_factory = messenger_factory or (lambda: messenger_from_config(config))
        self.tokens = tokens
        self.on_progress = on_progress
        self.on_issue = on_issue
        self.on_drafts = on_drafts
        self.actor = actor  # who the audit log names for each issue sent (None: not recorded)

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

    def variant_renderer(self, issue: dict[str, Any], test: bool = False) -> VariantFor:
        return issue_variants(self.renderer, issue, self.store.issue_summaries(issue["id"]),
                              self.segments[issue["segment"]], test)

    def sendable_issue(self, issue_id: int, retrying: bool = False) -> dict[str, Any]:
        """The issue, if it may be sent now; LookupError says why not."""
        issue = self.store.get_issue(issue_id)
        if issue is None:
            raise LookupError(f"issue {issue_id}: no such issue")
        if not may_send(issue, retrying):
            raise LookupError(f"issue {issue_id}: is {issue['status']}; approve it first")
        if held := self.reading_hold(issue):
            raise LookupError(held)
        if not due(issue, datetime.now(timezone.utc)):
            raise LookupError(f"issue {issue_id}: scheduled for {issue['send_at']}; to send it now, first "
                              f"`newsletter issues schedule {issue_id} --clear`")
        return issue

    def reading_hold(self, issue: dict[str, Any]) -> str | None:
        if not self.config.enforce_reading_grade:
            return None
        return reading_hold(issue, self.store.issue_summaries(issue["id"]), self.config.max_reading_grade)

    def send_one(self, issue_id: int, retry_unknown: bool = False, retry_failed: bool = False,
                 failed_matching: str = "") -> RunReport:
        """`issues send N`: one issue now, under the run lock; refused unless it may be sent."""
        report = RunReport()
        self.sendable_issue(issue_id, retry_unknown or retry_failed)
        with run_lock(self.lock_path):
            self.send([issue_id], report, retry_unknown=retry_unknown, retry_failed=retry_failed,
                      failed_matching=failed_matching)
        return report

    def send(self, issue_ids: list[int] | None, report: RunReport, retry_unknown: bool = False,
             retry_failed: bool = False, failed_matching: str = "", now: datetime | None = None) -> None:
        self.config.require_sendable()
        retrying = retry_unknown or retry_failed
        if issue_ids is None:
            issues = self.store.issues_to_send(
                [status for status, wanted in (("unknown", retry_unknown), ("failed", retry_failed)) if wanted])
            moment = now or datetime.now(timezone.utc)  # an approved issue whose send time is later waits
            issues = [issue for issue in issues if due(issue, moment, self.config.timezone)]
        else:
            issues = [self.sendable_issue(i, retrying) for i in issue_ids]
        issues = [issue for issue in issues if may_send(issue, retrying)]
        held = {issue["id"]: why for issue in issues if (why := self.reading_hold(issue))}
        report.held += held.values()
        issues = [issue for issue in issues if issue["id"] not in held]
        if not issues:
            return
        tokens = self.tokens or Tokens(self.config.require_secret())
        pool: WorkerPool | None = None
        messenger = None if self.workers > 1 else self.messenger_factory()  # workers have their own
        dispatcher = Dispatcher(self.store, messenger, tokens, self.config.site_url,  # type: ignore[arg-type]
                                rate_limit=self.config.rate_limit, on_progress=self.on_progress,
                                on_start=self.on_issue, retry_deferred_days=self.config.retry_deferred_days,
                                require_consent=requires_consent(self.config))
        try:
            for issue in issues:
                if self.workers > 1 and pool is None and issue["status"] == "approved":
                    pool = self._pool()  # about to be planned: the workers start while the plan is written
                tally = dispatcher.prepare_issue(issue["id"], retry_unknown=retry_unknown, retry_failed=retry_failed,
                                                 failed_matching=failed_matching)
                if self.workers > 1:
                    ranges = self.store.pending_ranges(issue["id"], self.workers)
                    if ranges and pool is None:
                        pool = self._pool()
                    try:
                        if ranges:
                            pool.run_issue(issue["id"], ranges, tally)  # type: ignore[union-attr]
                    except WorkerFailed as exc:
                        if tally.tripped:  # another worker met the relay down: what is pending waits, deferred
                            dispatcher.conclude_issue(issue["id"], tally)
                        report.tally.add(tally)
                        report.failure = str(exc)
                        break
                else:
                    dispatcher.send_range(issue["id"], self.variant_renderer(issue), tally)
                dispatcher.conclude_issue(issue["id"], tally)
                report.tally.add(tally)
                if self.actor:
                    counts = {k: getattr(tally, k) for k in ("sent", "failed", "unknown", "deferred", "skipped")}
                    self.store.record_audit(self.actor, "issue.send", f"issue:{issue['id']}",
                                            {k: n for k, n in counts.items() if n})
                if tally.stopped:  # the breaker: the other issues go through the same relay
                    break
        finally:
            if pool is not None:
                pool.close()
                report.worker_stats += pool.stats
                report.messenger_seconds += sum(s.messenger_s for s in pool.stats)
            if messenger is not None:
                report.messenger_seconds += dispatcher.send_seconds
                messenger.close()

    def _pool(self) -> WorkerPool:
        return WorkerPool(self.config, self.workers, self.worker_messenger, self.on_progress)

    def run(self, cadence: str | None, now: datetime, *, send: bool = True, retry_unknown: bool = False,
            retry_failed: bool = False, failed_matching: str = "", segment: str | None = None,
            lock_wait: float | None = None) -> RunReport:
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
                self.send(None, report, retry_unknown=retry_unknown, retry_failed=retry_failed,
                          failed_matching=failed_matching, now=now)
            drafts = [i for i in report.created if i["status"] == "draft"]
            if drafts and self.on_drafts:
                try:  # after sending: a failed notice must not hold back approved issues
                    self.on_drafts(drafts)
                except Exception as exc:  # noqa: BLE001 - reported, never fatal
                    report.warnings.append(f"editors' notice not sent: {exc}")
        return report

