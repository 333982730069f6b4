"""Send one issue through a messenger, recording every step in the delivery ledger.

The order of writes is the safety argument:
1. plan: a pending row per (issue, subscriber), once (unique);
2. before a batch goes out its rows become `sending` with a batch id, committed,
   but only for subscribers still active at that moment (the others: skipped);
3. the messenger's answer turns them `sent`, `failed` or `unknown`.
A run that dies between 2 and 3 leaves rows in `sending`; the next run marks
them `unknown` and does not send them again unless the operator asks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from .model import Envelope, FatalSendError, Messenger, Rendered, VariantFor, recipient_values
from .store import Ledger
from .tokens import Tokens


@dataclass
class Tally:
    """What a run did, in recipients: the line it ends with, and whether it exits non-zero."""
    errors: Counter = field(default_factory=Counter)  # distinct reason -> recipients
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    interrupted: int = 0

    def add(self, other: "Tally") -> None:
        for name in ("sent", "failed", "unknown", "skipped", "interrupted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)

    @property
    def needs_attention(self) -> bool:
        """Anything failed or of unknown outcome: the run exits non-zero."""
        return bool(self.failed or self.unknown or self.interrupted)

    def line(self) -> str:
        return (f"sent {self.sent}, failed {self.failed}, unknown {self.unknown}, skipped {self.skipped}"
                + (f" ({self.interrupted} left unknown by an interrupted run)" if self.interrupted else ""))


class RateLimiter:
    """At most `rate` messages per second, across batches."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.next_at = 0.0

    def wait(self, count: int) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        if self.next_at > now:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + count / self.rate


class Dispatcher:
    def __init__(self, store: Ledger, messenger: Messenger, tokens: Tokens, site_url: str, *,
                 rate_limit: float = 0.0, on_progress: Callable[[int], None] | None = None,
                 on_start: Callable[[int, int], None] | None = None, limiter: RateLimiter | None = None):
        self.store, self.messenger, self.tokens = store, messenger, tokens
        self.site_url = site_url.rstrip("/")
        self.limiter = limiter or RateLimiter(rate_limit)
        self.send_seconds = 0.0  # time inside the messenger (the benchmark reports it)
        self.on_progress = on_progress or (lambda n: None)
        self.on_start = on_start or (lambda issue_id, pending: None)

    def envelope(self, row: dict[str, Any]) -> Envelope:
        """Per-recipient work: two signatures and a greeting, nothing heavier."""
        sid = row["subscriber_id"]
        utok = self.tokens.sign("unsubscribe", sid)
        return Envelope(delivery_id=row["delivery_id"], subscriber_id=sid, email=row["email"], name=row["name"] or "",
                        values=recipient_values(utok, self.tokens.sign("preferences", sid), row["name"] or ""),
                        unsubscribe_url=f"{self.site_url}/u/{utok}")

    def send_issue(self, issue_id: int, variant_for: VariantFor, *, retry_unknown: bool = False,
                   retry_failed: bool = False) -> Tally:
        tally = Tally()
        resolved = self.store.resolve_interrupted(issue_id, retry_unknown=retry_unknown, retry_failed=retry_failed)
        tally.interrupted = resolved["interrupted"]
        self.store.plan_deliveries(issue_id)
        self.on_start(issue_id, self.store.delivery_counts(issue_id).get("pending", 0))
        buffers: dict[int, tuple[Rendered, list[Envelope]]] = {}
        variants: dict[str, Rendered | None] = {}  # raw topics JSON -> variant: no JSON decode per row
        received = self.store.already_received(issue_id)  # only readers who changed audience: few
        size = self.messenger.batch_size
        for rows in self.store.pending_batches(issue_id, size):
            skipped_inactive, skipped_topics = [], []
            for row in rows:
                if row["status"] != "active":  # unsubscribed, bounced or removed since planning
                    skipped_inactive.append(row["delivery_id"])
                    continue
                raw_topics = row["topics"] or "[]"
                if row["subscriber_id"] in received:
                    rendered = variant_for(json.loads(raw_topics), received[row["subscriber_id"]])
                else:
                    if raw_topics not in variants:
                        variants[raw_topics] = variant_for(json.loads(raw_topics))
                    rendered = variants[raw_topics]
                if rendered is None:
                    skipped_topics.append(row["delivery_id"])
                    continue
                key = id(rendered)
                buffers.setdefault(key, (rendered, []))[1].append(self.envelope(row))
                if len(buffers[key][1]) >= size:
                    self._flush(*buffers.pop(key), tally)
            self.store.mark_deliveries(skipped_inactive, "skipped", error="subscriber no longer active", expect="pending")
            self.store.mark_deliveries(skipped_topics, "skipped", expect="pending",
                                       error="no summaries left: none match the topics, or all came in another digest")
            tally.skipped += len(skipped_inactive) + len(skipped_topics)
            self.on_progress(len(skipped_inactive) + len(skipped_topics))
        for rendered, envelopes in buffers.values():
            self._flush(rendered, envelopes, tally)
        self.store.finish_issue_if_done(issue_id)
        return tally

    def _flush(self, rendered: Rendered, envelopes: list[Envelope], tally: Tally) -> None:
        self.limiter.wait(len(envelopes))
        claimed = self.store.claim_for_sending([e.delivery_id for e in envelopes], uuid.uuid4().hex[:12])
        if len(claimed) < len(envelopes):
            tally.skipped += len(envelopes) - len(claimed)
            envelopes = [e for e in envelopes if e.delivery_id in claimed]
            if not envelopes:
                return
        ids = [e.delivery_id for e in envelopes]
        try:
            started = time.perf_counter()
            outcomes = self.messenger.send(rendered, envelopes)
            self.send_seconds += time.perf_counter() - started
        except FatalSendError:
            # Nothing of this batch was accepted: it goes back to pending for a later run.
            self.store.mark_deliveries(ids, "pending", error=None, expect="sending")
            raise
        for outcome in outcomes:
            self.store.mark_deliveries(outcome.delivery_ids, outcome.status, provider_id=outcome.provider_id,
                                       error=outcome.error, expect="sending")
            setattr(tally, outcome.status, getattr(tally, outcome.status) + len(outcome.delivery_ids))
            if outcome.error:
                tally.errors[outcome.error] += len(outcome.delivery_ids)
        self.on_progress(len(envelopes))

