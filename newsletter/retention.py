"""What the site keeps, and for how long: `newsletter purge` applies the retention settings, and `erase` removes a
reader from the database and from the outbox alike.

Each purge step removes only what is past its period, so running purge twice removes nothing the second
time. Add a step by appending to PURGE_STEPS: (name, function(config, store, now, dry_run)); a step that
touches anything outside the database (the outbox) must leave it alone when dry_run is true: its database
writes are rolled back then, nothing else is.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from . import messengers


def _cutoff(now: datetime, days: int) -> str:
    return (now - timedelta(days=days)).astimezone(timezone.utc).replace(microsecond=0).isoformat()


def purge_events(config: Any, store: Any, now: datetime, dry_run: bool = False) -> int:
    return store.purge_events(_cutoff(now, config.retention_events_days))


def purge_unconfirmed(config: Any, store: Any, now: datetime, dry_run: bool = False) -> int:
    """Sign-ups never confirmed: erased (their outbox copies too), without a suppression, so they may sign up again."""
    addresses = store.unconfirmed_signups(_cutoff(now, config.retention_pending_days))
    for address in addresses:  # a dry run leaves the outbox files alone: no rollback would bring them back
        erase(config, store, address, reason="never confirmed", suppress=False, outbox=not dry_run)
    return len(addresses)


def unlink_erased(config: Any, store: Any, now: datetime, dry_run: bool = False) -> int:
    return store.unlink_erased_deliveries(_cutoff(now, config.retention_erased_days))


def compact_ledger(config: Any, store: Any, now: datetime, dry_run: bool = False) -> int:
    """Delivery rows of digests sent more than ledger_retention_days ago become counts (store/compaction.py)."""
    if not config.ledger_retention_days:
        return 0
    return store.compact_deliveries(_cutoff(now, config.ledger_retention_days))


def expire_queued_notices(config: Any, store: Any, now: datetime, dry_run: bool = False) -> int:
    """Confirmations the relay never took, past their retry period (notices send drops them too)."""
    return len(store.expire_notices(_cutoff(now, config.retry_deferred_days)))


PurgeStep = Callable[[Any, Any, datetime, bool], int]
#: (what it removes, as `purge` prints it; the step). Steps run in this order.
PURGE_STEPS: list[tuple[str, PurgeStep]] = [
    ("provider events past retention_events_days", purge_events),
    ("sign-ups never confirmed within retention_pending_days", purge_unconfirmed),
    ("erased readers' delivery rows unlinked after retention_erased_days", unlink_erased),
    ("confirmations queued longer than retry_deferred_days", expire_queued_notices),
    ("delivery rows compacted to counts after ledger_retention_days", compact_ledger),
]


def purge(config: Any, store: Any, now: datetime | None = None, dry_run: bool = False) -> list[tuple[str, int]]:
    """Run every purge step; returns (step, how many rows) in order. With dry_run, every step runs inside one
    transaction that is rolled back (store.rehearsal) and touches nothing outside the database: the counts
    are what a purge at `now` would remove, found by doing it, and nothing is removed."""
    now = now or datetime.now(timezone.utc)
    if not dry_run:
        return [(name, step(config, store, now, False)) for name, step in PURGE_STEPS]
    with store.rehearsal():
        return [(name, step(config, store, now, True)) for name, step in PURGE_STEPS]


def erase(config: Any, store: Any, address: str, reason: str = "removed", *, suppress: bool = True,
          actor: str | None = None, subscriber_id: int | None = None, outbox: bool = True) -> dict[str, int] | None:
    """Erase a reader everywhere we keep them: the database (store.remove_subscriber, or editor_erase when an
    editor does it) and, unless `outbox` is false, the messages to them in a Maildir outbox. None when there
    was no such reader."""
    if actor is not None and subscriber_id is not None:
        store.editor_erase(subscriber_id, actor)
    elif not store.remove_subscriber(address, reason=reason, suppress=suppress):
        return None
    return {"outbox_messages": messengers.erase_from_outbox(config, address) if outbox else 0}
