"""SendGrid Event Webhook: signed events in, suppressions and delivery timestamps out.

The ECDSA signature covers the timestamp header plus the raw body, so the body
is verified exactly as received, never re-serialised. Anything wrong with the
signature (missing, malformed, not matching, no key configured) is a 403.
Events are stored once (SendGrid retries for 24 hours); the effect of an event
is applied before it is recorded, and every effect is idempotent, so a crash in
between loses nothing and a retry repeats nothing harmful.
"""

from __future__ import annotations

import binascii
import json
import logging
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, abort, jsonify, request

from .app import get_ctx, web_state
from .security import csrf_exempt

log = logging.getLogger("newsletter.web.webhooks")
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PROVIDER = "sendgrid"
#: event -> subscriber status it leads to
SUPPRESSING = {"bounce": "bounced", "dropped": "bounced", "spamreport": "complained",
               "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed"}
#: a stronger reason is never overwritten by a weaker one
RANK = {"pending": 0, "active": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}
DELIVERY_COLUMNS = {"delivered": "delivered_at", "open": "opened_at", "click": "clicked_at"}


def verified_body() -> str:
    state = web_state()
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    if state.webhook_verifier is None:
        log.error("sendgrid webhook rejected: %s", state.webhook_key_error)
        abort(403, description="Event webhook verification is not configured.")
    if not signature or not timestamp:
        abort(403, description="Missing signature.")
    try:
        body = request.get_data(cache=True).decode("utf-8")
        ok = state.webhook_verifier.verify_signature(body, signature, timestamp)
    except (UnicodeDecodeError, binascii.Error, ValueError, TypeError) as exc:
        log.warning("sendgrid webhook: malformed signature or body (%s)", type(exc).__name__)
        ok = False
    if not ok:
        abort(403, description="Bad signature.")
    return body


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


@bp.post("/sendgrid")
@csrf_exempt  # authenticated by its signature
def sendgrid() -> Any:
    body = verified_body()
    try:
        events = json.loads(body)
    except ValueError:
        abort(400, description="The body is not JSON.")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        abort(400, description="Expected a JSON list of events.")
    store = get_ctx().store
    counts = {"received": len(events), "stored": 0, "replayed": 0, "ignored": 0, "applied": 0}
    for event in events:
        event_id = event.get("sg_event_id")
        kind = event.get("event")
        if not isinstance(event_id, str) or not event_id or not isinstance(kind, str):
            counts["ignored"] += 1
            continue
        if store.has_event(PROVIDER, event_id):
            counts["replayed"] += 1
            continue
        when = _when(event)
        if apply(store, event, when):
            counts["applied"] += 1
        address = event.get("email") if isinstance(event.get("email"), str) else None
        record = {"event_id": event_id, "type": kind, "email": address,
                  "issue_id": _int(event.get("issue_id")), "subscriber_id": _int(event.get("subscriber_id")),
                  "occurred_at": when, "payload": event}
        if store.record_event(PROVIDER, record):
            counts["stored"] += 1
        else:
            counts["replayed"] += 1  # a concurrent retry stored it first; its effect is idempotent
    return jsonify(counts)
