"""Send one issue through a messenger, recording every step in the delivery ledger.

The order of writes is the safety argument:
1. plan: a pending row per (issue, subscriber), once (unique);
2. before a batch goes out its rows become `sending` with a batch id, committed,
   but only for subscribers still active at that moment (the others: skipped);
3. the messenger's answer turns them `sent`, `failed`, `unknown` or `deferred`.
A run that dies between 2 and 3 leaves rows in `sending`; the next run marks
them `unknown` and does not send them again unless the operator asks.

Deferred rows (a transient failure before the message was handed over) go back
to pending once their growing delay is over, for `retry_deferred_days`; a few
transient failures in a row trip the breaker: the run stops and the rest of the
issue waits as deferred instead of hammering a relay that is down.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from .model import (Envelope, FatalSendError, Messenger, Recipients, Rendered, VariantFor, recipient_values,
                    retry_delay)
from .store import NO_LONGER_ACTIVE, Ledger
from .tokens import Tokens


#: Transient failures in a row that stop the run (the circuit breaker).
BREAKER_AFTER = 3
#: Why the real backends skip a reader (unless the site says its list predates consent records)
NO_CONSENT = "no consent record: smtp and sendgrid send only to people whose consent is recorded " \
             "(set legacy_consent = yes if this list predates consent records)"


@dataclass
class Tally:
    """What a run did, in recipients: the line it ends with, and whether it exits non-zero."""
    errors: Counter = field(default_factory=Counter)  # distinct reason -> recipients (failed, unknown)
    deferrals: Counter = field(default_factory=Counter)  # the same for deferred ones
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    deferred: int = 0
    skipped: int = 0
    interrupted: int = 0
    stopped: str = ""  # the breaker's line, when it stopped the run
    tripped: str = ""  # the breaker's last reason, from the pass that tripped it (the issue is concluded after)
    halted: bool = False  # a pass that stopped before its next claim because it was asked to (another worker)

    def add(self, other: "Tally") -> None:
        for name in ("sent", "failed", "unknown", "deferred", "skipped", "interrupted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.deferrals.update(other.deferrals)
        self.stopped = self.stopped or other.stopped
        self.tripped = self.tripped or other.tripped
        self.halted = self.halted or other.halted

    @property
    def needs_attention(self) -> bool:
        """Anything failed or of unknown outcome, or the breaker stopped the run: it exits non-zero.
        A deferral alone does not: a later run retries it."""
        return bool(self.failed or self.unknown or self.interrupted or self.stopped)

    def line(self) -> str:
        return (f"sent {self.sent}, failed {self.failed}, unknown {self.unknown}, deferred {self.deferred}, "
                f"skipped {self.skipped}"
                + (f" ({self.interrupted} left unknown by an interrupted run)" if self.interrupted else ""))


#: Backends that hand mail to someone else: they need each reader's consent on record
REAL_BACKENDS = ("smtp", "sendgrid")


def processor_of(messenger: Any) -> str:
    """Who a messenger hands messages to, as the ledger notes it per issue (the data download reads it)."""
    return getattr(messenger, "processor", "") or getattr(messenger, "name", "")


def requires_consent(config: Any) -> bool:
    return config.backend in REAL_BACKENDS and not config.legacy_consent


class _Tripped(Exception):
    """The breaker: BREAKER_AFTER transient failures in a row; carries the last reason."""


class _Halted(Exception):
    """`should_stop` said so: no further batch is claimed (what is buffered stays pending)."""


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
                 on_start: Callable[[int, int], None] | None = None, limiter: RateLimiter | None = None,
                 retry_deferred_days: float = 3.0, require_consent: bool = False,
                 should_stop: Callable[[], bool] | None = None):
        self.store, self.messenger, self.tokens = store, messenger, tokens
        self.processor = processor_of(messenger)  # noted per issue with its first claim (the data download)
        self.noted: set[int] = set()  # issues whose processor this dispatcher has noted
        self.should_stop = should_stop or (lambda: False)  # checked before each page and each claim
        self.require_consent = require_consent  # the real backends send only to people with a consent record
        self.retry_for = retry_deferred_days * 86400
        self.transient_in_a_row = 0
        self.returned = 0  # deliveries a messenger gave back untried in this pass
        self.site_url = site_url.rstrip("/")
        self.unsubscribe_base = self.site_url + "/u/"
        self.limiter = limiter or RateLimiter(rate_limit)
        self.send_seconds = 0.0  # time inside the messenger (the benchmark reports it)
        self.on_progress = on_progress or (lambda n: None)
        self.on_start = on_start  # the progress bar's; the count it gets is a scan of the issue, made only for it

    def envelope(self, row: dict[str, Any]) -> Envelope:
        return self.make_envelope(row["delivery_id"], row["subscriber_id"], row["email"], row["name"] or "")

    def make_envelope(self, delivery_id: int, sid: int, email: str, name: str) -> Envelope:
        """One recipient's two signatures and greeting (a welcome; a digest's batches are Recipients.signed)."""
        utok, ptok = self.tokens.link_tokens(sid)
        return Envelope(delivery_id, sid, email, name, recipient_values(utok, ptok, name), self.unsubscribe_base + utok)

    def send_issue(self, issue_id: int, variant_for: VariantFor, *, retry_unknown: bool = False,
                   retry_failed: bool = False, failed_matching: str = "") -> Tally:
        """The whole issue in this process: prepare, send every pending delivery, conclude."""
        tally = self.prepare_issue(issue_id, retry_unknown=retry_unknown, retry_failed=retry_failed,
                                   failed_matching=failed_matching)
        self.send_range(issue_id, variant_for, tally)
        self.conclude_issue(issue_id, tally)
        return tally

    def prepare_issue(self, issue_id: int, *, retry_unknown: bool = False, retry_failed: bool = False,
                      failed_matching: str = "") -> Tally:
        """Before any batch, once per issue and run: what a dead run left in `sending` becomes unknown,
        deferrals whose time has come are pending again (or failed when too old), and the plan is written."""
        tally = Tally()
        resolved = self.store.resolve_interrupted(issue_id, retry_unknown=retry_unknown, retry_failed=retry_failed,
                                                  failed_matching=failed_matching)
        tally.interrupted = resolved["interrupted"]
        released = self.store.release_deferred(issue_id, self.retry_for)
        if released["expired"]:
            tally.failed += released["expired"]
            tally.errors[f"still deferred after {self.retry_for / 86400:g} days: failed (see `issues show`)"] += \
                released["expired"]
        self.store.plan_deliveries(issue_id)
        if self.on_start:
            self.on_start(issue_id, self.store.delivery_counts(issue_id).get("pending", 0))
        return tally

    def send_range(self, issue_id: int, variant_for: VariantFor, tally: Tally,
                   id_range: tuple[int, int] | None = None) -> None:
        """Claim, send and record the issue's pending deliveries (only ids in `id_range`, first and last
        included, when given: a worker's share), pass after pass until none is given back untried.
        The breaker leaves its reason in `tally.tripped`; `should_stop` ends it before the next claim."""
        try:
            while True:
                self.returned = 0
                self._pass(issue_id, variant_for, tally, id_range)
                if not self.returned:  # what a messenger gave back untried is tried again (each pass defers some)
                    break
        except _Tripped as exc:
            tally.tripped = str(exc)
        except _Halted:
            tally.halted = True

    def conclude_issue(self, issue_id: int, tally: Tally) -> None:
        """After every pass (of every worker): a tripped breaker defers what is still pending; the issue is
        sent once nothing of it is open."""
        if tally.tripped:
            waiting = self.store.defer_pending(issue_id, tally.tripped, retry_delay(1))
            tally.deferred += waiting
            total = self.store.delivery_counts(issue_id).get("deferred", 0)
            tally.stopped = f"relay unreachable: {tally.tripped}; {total:,} deferred, will retry"
        self.store.finish_issue_if_done(issue_id)

    def _pass(self, issue_id: int, variant_for: VariantFor, tally: Tally,
              id_range: tuple[int, int] | None = None) -> None:
        """One pass over the issue's pending deliveries, in batches grouped by variant."""
        buffers: dict[int, tuple[Rendered, list[tuple]]] = {}  # the page rows themselves: no object per recipient
        variants: dict[str, Rendered | None] = {}  # raw topics JSON -> variant: no JSON decode per row
        received = self.store.already_received(issue_id)  # only readers who changed audience: few
        size = self.messenger.batch_size
        for rows in self.store.pending_batches(issue_id, size, id_range, with_consent=self.require_consent):
            if self.should_stop():
                raise _Halted()
            skipped_inactive, skipped_topics, skipped_consent = [], [], []
            for row in rows:
                delivery_id, sid, _, _, raw_topics, status, consented = row
                if status != "active":  # unsubscribed, bounced or removed since planning
                    skipped_inactive.append(delivery_id)
                    continue
                if self.require_consent and not consented:
                    skipped_consent.append(delivery_id)
                    continue
                raw_topics = raw_topics or "[]"
                if sid in received:
                    rendered = variant_for(json.loads(raw_topics), received[sid])
                else:
                    if raw_topics not in variants:
                        variants[raw_topics] = variant_for(json.loads(raw_topics))
                    rendered = variants[raw_topics]
                if rendered is None:
                    skipped_topics.append(delivery_id)
                    continue
                key = id(rendered)
                buffer = buffers.setdefault(key, (rendered, []))[1]
                buffer.append(row)
                if len(buffer) >= size:
                    self._flush(*buffers.pop(key), tally)
            self.store.mark_deliveries(skipped_inactive, "skipped", error=NO_LONGER_ACTIVE, expect="pending")
            self.store.mark_deliveries(skipped_topics, "skipped", expect="pending",
                                       error="no summaries left: none match the topics, or all came in another digest")
            self.store.mark_deliveries(skipped_consent, "skipped", error=NO_CONSENT, expect="pending")
            skipped = len(skipped_inactive) + len(skipped_topics) + len(skipped_consent)
            tally.skipped += skipped
            self.on_progress(skipped)
        for rendered, buffered in buffers.values():
            self._flush(rendered, buffered, tally)

    def _flush(self, rendered: Rendered, rows: list[tuple], tally: Tally) -> None:
        """Claim the rows (delivery id, subscriber id, email, name, ...), sign what was claimed, send, record."""
        if self.should_stop():
            raise _Halted()
        self.limiter.wait(len(rows))
        ids = [row[0] for row in rows]
        issue_id = rendered.issue_id  # once per issue is enough: the note is INSERT OR IGNORE
        claimed = self.store.claim_for_sending(ids, uuid.uuid4().hex[:12],
                                               "" if issue_id in self.noted else self.processor)
        self.noted.add(issue_id)
        if len(claimed) < len(rows):
            tally.skipped += len(rows) - len(claimed)
            rows = [row for row in rows if row[0] in claimed]
            if not rows:
                return
        envelopes = Recipients.signed(rows, self.tokens.link_tokens, self.unsubscribe_base)
        ids = envelopes.delivery_ids  # what was claimed
        try:
            started = time.perf_counter()
            outcomes = self.messenger.send(rendered, envelopes)
            self.send_seconds += time.perf_counter() - started
        except FatalSendError:
            # Nothing of this batch was accepted: it goes back to pending for a later run.
            self.store.mark_deliveries(ids, "pending", error=None, expect="sending")
            raise
        last_transient, returned = "", 0
        for outcome in outcomes:
            count = len(outcome.delivery_ids)
            if outcome.status == "pending":  # not attempted: back in the queue
                self.store.mark_deliveries(outcome.delivery_ids, "pending", error=None, expect="sending")
                returned += count
                continue
            if outcome.status == "deferred":
                self.store.defer_deliveries(outcome.delivery_ids, outcome.error, retry_delay)
                self.transient_in_a_row += 1
                last_transient = outcome.error or "transient failure"
                tally.deferrals[last_transient] += count
            else:
                self.store.mark_deliveries(outcome.delivery_ids, outcome.status, provider_id=outcome.provider_id,
                                           error=outcome.error, expect="sending")
                self.transient_in_a_row = 0  # the relay answered
                if outcome.error:
                    tally.errors[outcome.error] += count
            setattr(tally, outcome.status, getattr(tally, outcome.status) + count)
        self.returned += returned
        self.on_progress(len(envelopes) - returned)
        if self.transient_in_a_row >= BREAKER_AFTER:
            raise _Tripped(last_transient)
