"""SendGrid Event Webhook: signed events in, handed to `newsletter.feedback` (suppressions, delivery timestamps).

The ECDSA signature covers the timestamp header plus the raw body, so the body
is verified exactly as received, never re-serialised. Anything wrong with the
signature (missing, malformed, not matching, no key configured) is a 403.
SendGrid retries for 24 hours; `record_events` stores each event once.
"""

from __future__ import annotations

import binascii
import json
import logging
from typing import Any

from flask import Blueprint, abort, jsonify, request

from ..feedback import record_events
from .security import csrf_exempt
from .state import get_ctx, web_state

log = logging.getLogger("newsletter.web.webhooks")
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PROVIDER = "sendgrid"


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
    counts = record_events(get_ctx().store, PROVIDER, events)
    return jsonify(counts)
