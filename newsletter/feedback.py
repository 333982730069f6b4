"""The record stage: what a provider's events do to subscribers and deliveries.

Used by the SendGrid webhook (and by bounce mail later). Each event is stored
once; its effect is applied before it is recorded, and every effect is
idempotent, so a crash in between loses nothing and a retry repeats nothing
harmful. A stronger reason (complained > bounced > unsubscribed) is never
overwritten by a weaker one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

#: event -> subscriber status it leads to
SUPPRESSING = {"bounce": "bounced", "dropped": "bounced", "spamreport": "complained",
               "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed"}
#: a stronger reason is never overwritten by a weaker one
RANK = {"pending": 0, "active": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}
DELIVERY_COLUMNS = {"delivered": "delivered_at", "open": "opened_at", "click": "clicked_at"}


#: Bounds of a usable event: ids and kinds as SendGrid writes them, a flat object of modest size.
MAX_ID_LENGTH = 256
MAX_KIND_LENGTH = 64
MAX_EVENT_DEPTH = 8  # the event object is depth 1; SendGrid's own fields (pool, category) reach 2
MAX_EVENT_CHARS = 64 * 1024
_SQLITE_INT_MAX = 2**63 - 1


def _int(value: Any) -> int | None:
    """A positive id as custom_args carry it (a decimal string, or a number), within SQLite's range."""
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 19:
        value = int(value)
    elif isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _SQLITE_INT_MAX:
        return None
    return value


def _text(value: Any, longest: int) -> str | None:
    """A non-empty string of at most `longest` characters that SQLite can store (no lone surrogate)."""
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _email(event: dict[str, Any]) -> str | None:
    found = _text(event.get("email"), 320)
    return (found.strip().lower() or None) if found else None


def _depth(value: Any, limit: int) -> int:
    """How deeply `value` nests (a scalar is 0), counting no further than `limit` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def rejection(event: Any) -> str | None:
    """Why an event cannot be used (it is then stored as rejected and skipped), or None."""
    if not isinstance(event, dict):
        return f"not an object but {type(event).__name__}"
    if _text(event.get("sg_event_id"), MAX_ID_LENGTH) is None:
        return f"sg_event_id: not a string of 1 to {MAX_ID_LENGTH} characters"
    if _text(event.get("event"), MAX_KIND_LENGTH) is None:
        return f"event: not a string of 1 to {MAX_KIND_LENGTH} characters"
    if _depth(event, MAX_EVENT_DEPTH) > MAX_EVENT_DEPTH:
        return f"nested deeper than {MAX_EVENT_DEPTH} levels"
    if len(json.dumps(event)) > MAX_EVENT_CHARS:
        return f"larger than {MAX_EVENT_CHARS} characters"
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
    """The subscriber whose address the event names (custom_args alone never decide: they may be stale or
    belong to someone else); the subscriber_id in custom_args only picks among equal addresses."""
    email = _email(event)
    if email is None:
        return None
    subscriber_id = _int(event.get("subscriber_id"))
    if subscriber_id is not None:
        found = store.get_subscriber(id=subscriber_id)
        if found is not None and found["email"] == email:
            return found
    return store.get_subscriber(email)


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
    issue_id, subscriber_id, email = _int(event.get("issue_id")), _int(event.get("subscriber_id")), _email(event)
    if column and issue_id is not None and subscriber_id is not None and email and when:
        # Only the delivery of the subscriber the event's address belongs to.
        return column if store.mark_delivery_event(issue_id, subscriber_id, email, column, when) else None
    return None


def record_events(store: Any, provider: str, events: list[Any]) -> dict[str, int]:
    """Apply and store each event (SendGrid's event shape) once; returns what happened to how many.

    An event that cannot be used (see `rejection`) is stored as rejected and counted as ignored: it never
    stops the rest of the batch."""
    counts = {"received": len(events), "stored": 0, "replayed": 0, "ignored": 0, "applied": 0}
    for event in events:
        reason = rejection(event)
        if reason is not None:
            store.record_rejected_event(provider, reason, event)
            counts["ignored"] += 1
            continue
        event_id, kind = event["sg_event_id"], event["event"]
        if store.has_event(provider, event_id):
            counts["replayed"] += 1
            continue
        when = _when(event)
        if apply(store, event, when):
            counts["applied"] += 1
        record = {"event_id": event_id, "type": kind, "email": _email(event),
                  "issue_id": _int(event.get("issue_id")), "subscriber_id": _int(event.get("subscriber_id")),
                  "occurred_at": when, "payload": event}
        if store.record_event(provider, record):
            counts["stored"] += 1
        else:
            counts["replayed"] += 1  # a concurrent retry stored it first; its effect is idempotent
    return counts
