"""The record stage: what a provider's events and bounce mail do to subscribers and deliveries.

Used by the SendGrid webhook and by `newsletter bounces process`; both reach
one rule (`apply_verdict`): a hard bounce (5.x.x) marks the subscriber
bounced, soft ones (4.x.x) are counted per issue and three issues in a row
mark it bounced, a delivery ends the run, a complaint marks it complained.
Each event or report is stored once; its effect is applied before it is
recorded, and every effect is idempotent, so a crash in between loses nothing
and a retry repeats nothing harmful. A stronger reason (complained > bounced >
unsubscribed) is never overwritten by a weaker one.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from .model import kept_event_fields, read_delivery_tag
from .sources.bounces import Report, parse_report, verp_deliveries
from .store import StoreError

log = logging.getLogger("newsletter.feedback")

#: event -> subscriber status it leads to
SUPPRESSING = {"bounce": "bounced", "dropped": "bounced", "spamreport": "complained",
               "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed"}
#: a stronger reason is never overwritten by a weaker one
RANK = {"pending": 0, "active": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}
DELIVERY_COLUMNS = {"delivered": "delivered_at", "open": "opened_at", "click": "clicked_at"}
HARD, SOFT, COMPLAINT, DELIVERED = "hard", "soft", "complaint", "delivered"
#: soft bounces on this many different issues in a row make an address bounced
SOFT_BOUNCE_LIMIT = 3
#: Who the audit log names for a suppression: the webhook's provider, or the bounce mail `bounces process` read.
SENDGRID_ACTOR = "provider:sendgrid"
MAIL_ACTOR = "provider:bounce-mail"
#: what a verdict does to a subscriber's status
VERDICT_STATUS = {HARD: "bounced", COMPLAINT: "complained"}


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


def status_verdict(status: str | None, action: str | None = None) -> str | None:
    """RFC 3463 classes: 5.x.x permanent (hard), 4.x.x transient (soft), 2.x.x (or an Action of
    delivered, relayed, expanded) delivered; without a code, a DSN's Action decides."""
    code = (status or "").strip()[:2]
    if code == "5.":
        return HARD
    if code == "4.":
        return SOFT
    if code == "2." or (action or "") in ("delivered", "relayed", "expanded"):
        return DELIVERED
    return {"failed": HARD, "delayed": SOFT}.get(action or "")


def sendgrid_verdict(event: dict[str, Any]) -> str | None:
    """SendGrid's bounce, blocked, deferred, dropped, spamreport and delivered events under the same rules."""
    kind = event.get("event")
    if kind == "bounce":
        if str(event.get("type", "")).lower() == "blocked":
            return SOFT  # the receiving server refused our mail for now (reputation, content), not the address
        return SOFT if status_verdict(str(event.get("status", ""))) == SOFT else HARD
    if kind == "deferred":
        return SOFT
    if kind == "dropped":
        # only "Bounced Address" drops mean the address is dead
        return HARD if "bounce" in str(event.get("reason", "")).lower() else None
    if kind == "spamreport":
        return COMPLAINT
    if kind == "delivered":
        return DELIVERED
    return None


def suppress(store: Any, subscriber: dict[str, Any], status: str, actor: str, cause: str) -> str:
    """Set a worse status and say so in the audit log, naming the provider (or the bounce mail) as the actor."""
    store.set_subscriber_status(subscriber["id"], status)
    store.record_audit(actor, "subscriber.suppress", f"subscriber:{subscriber['id']}",
                       {"status": [subscriber["status"], status], "cause": cause})
    return status


def apply_verdict(store: Any, subscriber: dict[str, Any], issue_id: int | None, verdict: str,
                  actor: str = SENDGRID_ACTOR) -> str | None:
    """The one rule both backends follow; returns the status it set (or "soft" for a counted soft bounce)."""
    if verdict == DELIVERED:
        store.reset_soft_bounces(subscriber["id"])
        return None
    if verdict == SOFT:
        if issue_id is None:
            return None  # a notice outside any issue: nothing to count it against
        if store.add_soft_bounce(subscriber["id"], issue_id) < SOFT_BOUNCE_LIMIT:
            return SOFT
        verdict = HARD
    status = VERDICT_STATUS.get(verdict)
    if status and RANK[status] > RANK.get(subscriber["status"], 0):
        return suppress(store, subscriber, status, actor, verdict)
    return None


def apply(store: Any, event: dict[str, Any], when: str | None) -> str | None:
    """The event's effect on subscribers and the delivery ledger; returns what it did."""
    verdict = sendgrid_verdict(event)
    issue_id, subscriber_id = _int(event.get("issue_id")), _int(event.get("subscriber_id"))
    if verdict in (HARD, SOFT, COMPLAINT):
        subscriber = find_subscriber(store, event)
        if subscriber is None:
            return None
        done = apply_verdict(store, subscriber, issue_id, verdict)
        if isinstance(event.get("sg_event_id"), str):  # counted per issue in `status`
            store.record_bounce_report("sendgrid", event["sg_event_id"], {
                "verdict": verdict, "status_code": str(event.get("status") or "") or None, "issue_id": issue_id,
                "subscriber_id": subscriber["id"]})
        return done
    status = suppresses(event)
    if status:
        subscriber = find_subscriber(store, event)
        if subscriber is not None and RANK[status] > RANK.get(subscriber["status"], 0):
            return suppress(store, subscriber, status, SENDGRID_ACTOR, str(event.get("event")))
        return None
    column = DELIVERY_COLUMNS.get(event.get("event"))
    email = _email(event)
    if column and issue_id is not None and subscriber_id is not None and email and when:
        # Only the delivery of the subscriber the event's address belongs to.
        if not store.mark_delivery_event(issue_id, subscriber_id, email, column, when):
            return None
        if verdict == DELIVERED:
            subscriber = find_subscriber(store, event)
            if subscriber is not None:
                apply_verdict(store, subscriber, issue_id, DELIVERED)
        return column
    return None


def record_events(store: Any, provider: str, events: list[Any]) -> dict[str, int]:
    """Apply and store each event (SendGrid's event shape) once; returns what happened to how many.

    An event that cannot be used (see `rejection`) is stored as rejected and counted as ignored: it never
    stops the rest of the batch."""
    counts = {"received": len(events), "stored": 0, "replayed": 0, "ignored": 0, "applied": 0}
    for event in events:
        reason = rejection(event)
        if reason is not None:
            store.record_rejected_event(provider, reason, kept_event_fields(event))
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
                  "occurred_at": when, "payload": kept_event_fields(event)}  # no IP, no user agent
        if store.record_event(provider, record):
            counts["stored"] += 1
        else:
            counts["replayed"] += 1  # a concurrent retry stored it first; its effect is idempotent
    return counts


# -- bounce mail ------------------------------------------------------------------------------------

MAIL = "mail"
#: where a handled message goes, by what became of it
UNREADABLE = ("unreadable", "unmatched")


def report_verdict(report: Report) -> tuple[str | None, str]:
    """(verdict, status code) of a parsed report: a complaint for ARF, else its worst recipient."""
    if report.kind == "arf":
        return (None, "") if report.feedback_type == "not-spam" else (COMPLAINT, "")
    order = {HARD: 0, SOFT: 1, DELIVERED: 2}
    judged = sorted(((v, r.status) for r in report.recipients if (v := status_verdict(r.status, r.action))),
                    key=lambda pair: order[pair[0]])
    return judged[0] if judged else (None, "")


def match_delivery(store: Any, report: Report, bounce_address: str,
                   tag_key: bytes = b"") -> tuple[dict[str, Any] | None, str]:
    """The delivery a report is about, from what we put in the message; never from an address alone. With a
    tag key (from NEWSLETTER_SECRET) only a signed delivery tag counts, so nobody can name a delivery by guessing."""
    tags = set(report.deliveries) | {d for _, d in report.message_ids}
    if bounce_address:
        tags |= verp_deliveries(report.envelope_to, bounce_address)
    if not tags:
        return None, "names no delivery of ours"
    ids = {i for tag in tags if (i := read_delivery_tag(tag_key, tag)) is not None}
    if not ids and tag_key:  # mail sent before tags were signed: its bare ids, for a while (store.unsigned_ids)
        upto = store.unsigned_ids()
        ids = {int(tag) for tag in tags if tag.isascii() and tag.isdigit() and 0 < int(tag) <= upto}
    if not ids:
        return None, "its delivery tag does not verify"
    if len(ids) > 1:
        return None, "names several deliveries"
    delivery = store.delivery(ids.pop())
    if delivery is None:
        return None, "names a delivery we do not have"
    issues = {i for i, _ in report.message_ids} | set(report.issues)
    if issues and issues != {delivery["issue_id"]}:
        return None, "its issue does not match the delivery's"
    return delivery, ""


def process_report(store: Any, raw: bytes, bounce_address: str = "", tag_key: bytes = b"") -> str:
    """Handle one bounce or complaint message once; returns what became of it (a verdict, or why not)."""
    report = parse_report(raw)
    seen = store.bounce_report_verdict(MAIL, report.ref)
    if seen is not None:
        return seen
    record: dict[str, Any] = {"verdict": "unreadable"}
    if report.kind == "unknown":
        log.info("bounce mail %s: unreadable: %s", report.ref, report.problem)
    else:
        delivery, why = match_delivery(store, report, bounce_address, tag_key)
        record["verdict"] = "unmatched"
        if delivery is None:
            log.info("bounce mail %s: a %s report, unmatched: %s", report.ref, report.kind, why)
        else:
            verdict, code = report_verdict(report)
            record = {"verdict": verdict or "ignored", "status_code": code or None, "issue_id": delivery["issue_id"],
                      "delivery_id": delivery["id"]}
            subscriber = store.get_subscriber(id=delivery["subscriber_id"])
            if subscriber is not None:
                record["subscriber_id"] = subscriber["id"]
                if verdict:
                    apply_verdict(store, subscriber, delivery["issue_id"], verdict, MAIL_ACTOR)
    store.record_bounce_report(MAIL, report.ref, record)
    return record["verdict"]


def process_mailbox(store: Any, box: Any, bounce_address: str = "", tag_key: bytes = b"") -> Counter:
    """Every message in the bounce mailbox, each handled once and then moved: understood ones to
    `processed`, the rest to `unreadable` for a person to read. Nothing is deleted."""
    counts: Counter = Counter()
    for key, raw in box.items():
        try:
            outcome = process_report(store, raw, bounce_address, tag_key)
        except StoreError:
            raise  # the database, not this message: stop, and leave the message where it is
        except Exception as exc:  # noqa: BLE001 - one message we cannot handle must not stop every later run
            log.error("bounce mail %s: not handled (%s: %s); moved to unreadable", key, type(exc).__name__, exc)
            outcome = "unreadable"
        box.move(key, "unreadable" if outcome in UNREADABLE else "processed")
        counts[outcome] += 1
    return counts
