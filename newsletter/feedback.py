"""The record stage: what a provider's events do to subscribers and deliveries.

Used by the SendGrid webhook (and by bounce mail later). Each event is stored
once; its effect is applied before it is recorded, and every effect is
idempotent, so a crash in between loses nothing and a retry repeats nothing
harmful. A stronger reason (complained > bounced > unsubscribed) is never
overwritten by a weaker one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

#: event -> subscriber status it leads to
SUPPRESSING = {"bounce": "bounced", "dropped": "bounced", "spamreport": "complained",
               "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed"}
#: a stronger reason is never overwritten by a weaker one
RANK = {"pending": 0, "active": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}
DELIVERY_COLUMNS = {"delivered": "delivered_at", "open": "opened_at", "click": "clicked_at"}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _when(event: dict[str, Any]) -> str | None:
    stamp = event.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(stamp, timezone.utc).replace(microsecond=0).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def suppresses(event: dict[str, Any]) -> str | None:
    """The status this event puts its subscriber in, if any."""
    kind = event.get("event")
    if kind == "bounce" and str(event.get("type", "")).lower() == "blocked":
        return None  # a block is the receiving server refusing for now, not a dead address
    if kind == "dropped" and "bounce" not in str(event.get("reason", "")).lower():
        return None  # only "Bounced Address" drops mean the address is dead
    return SUPPRESSING.get(kind)


def find_subscriber(store: Any, event: dict[str, Any]) -> dict[str, Any] | None:
    """By the subscriber_id in custom_args when it matches the event's address, else by address."""
    email = str(event.get("email") or "").strip().lower()
    subscriber_id = _int(event.get("subscriber_id"))
    if subscriber_id is not None:
        found = store.get_subscriber(id=subscriber_id)
        if found is not None and (not email or found["email"] == email):
            return found
    return store.get_subscriber(email) if email else None


def apply(store: Any, event: dict[str, Any], when: str | None) -> str | None:
    """The event's effect on subscribers and the delivery ledger; returns what it did."""
    status = suppresses(event)
    if status:
        subscriber = find_subscriber(store, event)
        if subscriber is not None and RANK[status] > RANK.get(subscriber["status"], 0):
            store.set_subscriber_status(subscriber["id"], status)
            return status
        return None
    column = DELIVERY_COLUMNS.get(event.get("event"))
    issue_id, subscriber_id = _int(event.get("issue_id")), _int(event.get("subscriber_id"))
    if column and issue_id is not None and subscriber_id is not None and when:
        store.mark_delivery_event(issue_id, subscriber_id, column, when)
        return column
    return None


def record_events(store: Any, provider: str, events: list[dict[str, Any]]) -> dict[str, int]:
    """Apply and store each event (SendGrid's event shape) once; returns what happened to how many."""
    counts = {"received": len(events), "stored": 0, "replayed": 0, "ignored": 0, "applied": 0}
    for event in events:
        event_id = event.get("sg_event_id")
        kind = event.get("event")
        if not isinstance(event_id, str) or not event_id or not isinstance(kind, str):
            counts["ignored"] += 1
            continue
        if store.has_event(provider, event_id):
            counts["replayed"] += 1
            continue
        when = _when(event)
        if apply(store, event, when):
            counts["applied"] += 1
        address = event.get("email") if isinstance(event.get("email"), str) else None
        record = {"event_id": event_id, "type": kind, "email": address,
                  "issue_id": _int(event.get("issue_id")), "subscriber_id": _int(event.get("subscriber_id")),
                  "occurred_at": when, "payload": event}
        if store.record_event(provider, record):
            counts["stored"] += 1
        else:
            counts["replayed"] += 1  # a concurrent retry stored it first; its effect is idempotent
    return counts
