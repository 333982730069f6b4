"""Confirmations handed over after the web app has answered, and the queue of those the transport did not take.

Sending after the answer keeps the answer the same, in content and in time, whatever the state of the address:
a confirmation held back (an address that bounced or complained, or is over its limit) and one that went, or
that met a relay that was down, look alike from outside. What the transport did not take waits in the
database for `newsletter notices send` (cron), so nothing asked for is lost.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from .messengers import send_notice
from .model import FatalSendError, Notice
from .store import NOT_BY_LINK

log = logging.getLogger("newsletter.notices")


def try_send(config: Any, notice: Notice) -> tuple[str, str]:
    """(status, error) of one attempt: sent, unknown (it may have gone out: never sent again), or retry."""
    try:
        outcome = send_notice(config, notice)
    except FatalSendError as exc:
        return "retry", str(exc)
    except Exception as exc:  # noqa: BLE001 - after the answer nobody else would see it; logged and queued
        return "retry", f"{type(exc).__name__}: {exc}"
    if outcome.status in ("sent", "unknown"):
        return outcome.status, outcome.error or ""
    return "retry", f"{config.backend}: {outcome.status}: {outcome.error}"


def deliver(config: Any, notice: Notice, open_store: Callable[[], Any]) -> str:
    """Send now; what the transport did not take is queued (in a store `open_store` gives: this runs after the
    request, outside its connection). Returns the attempt's status."""
    status, error = try_send(config, notice)
    if status == "unknown":
        log.error("%s to a reader: the answer was lost, so it may have gone: not sent again (%s)",
                  notice.category, error)
    elif status == "retry":
        log.error("%s not sent, queued for `newsletter notices send`: %s", notice.category, error)
        store = open_store()
        try:
            store.queue_notice(notice.to, notice.subject, notice.text, notice.category, error)
        finally:
            store.close()
    return status


def send_queued(config: Any, store: Any, now: datetime | None = None) -> dict[str, int]:
    """Try each queued notice whose time has come; drop those queued longer than retry_deferred_days."""
    now = now or datetime.now(timezone.utc)
    now = now.astimezone(timezone.utc).replace(microsecond=0)
    cutoff = (now - timedelta(days=config.retry_deferred_days)).isoformat()
    counts = {"sent": 0, "unknown": 0, "waiting": 0, "dropped": 0}
    for row in store.expire_notices(cutoff):
        log.error("%s to a reader dropped after %d attempts since %s: %s", row["category"], row["attempts"],
                  row["created_at"], row["error"])
        counts["dropped"] += 1
    for row in store.queued_notices(due_by=now.isoformat()):
        if not store.claim_notice(row["id"], row["next_attempt_at"]):
            continue  # another run has it
        reader = store.get_subscriber(row["recipient"])
        if reader is not None and reader["status"] in NOT_BY_LINK:  # bounced or complained since: never to them
            store.notice_sent(row["id"])
            counts["dropped"] += 1
            continue
        notice = Notice(to=row["recipient"], subject=row["subject"], text=row["text"], category=row["category"])
        status, error = try_send(config, notice)
        if status == "retry":
            store.notice_failed_again(row["id"], error)
        else:
            store.notice_sent(row["id"])  # an unknown one too: it may have gone out
            counts[status] += 1
    counts["waiting"] = len(store.queued_notices())
    return counts
