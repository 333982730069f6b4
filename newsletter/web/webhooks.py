"""SendGrid Event Webhook: signed events in, handed to `newsletter.feedback` (suppressions, delivery timestamps).

The ECDSA signature covers the timestamp header plus the raw body, so the body
is verified exactly as received, never re-serialised. Anything wrong with the
signature (missing, malformed, not matching, no key configured) or a
timestamp further than `webhook_tolerance_seconds` from now (a replayed
request) is a 403. A body too large is a 413, one that is not JSON, not a
list or nested too deeply as a whole is a 400; within a good list, each event
that cannot be used is stored as rejected and skipped, never failing the rest.
SendGrid retries for 24 hours; `record_events` stores each event once.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
import sys
import time
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
#: SendGrid posts batches of at most about 768 KB; anything far larger is not from it.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: The list, its events and their fields need 3 or 4 levels; Python's parser recurses once per level.
MAX_BODY_DEPTH = 64
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """How deeply a JSON text nests, counted before parsing it.

    Written here because the json module has no depth limit (it recurses until
    RecursionError); strings are cut out first, so brackets inside them do not count."""
    depth = deepest = 0
    for byte in _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _digits(text: str) -> int | str:
    """A JSON integer; one too long for Python's int (a hostile "id") stays as its digits."""
    return int(text) if len(text.lstrip("-")) <= sys.get_int_max_str_digits() else text


def verified_body() -> bytes:
    state = web_state()
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    if state.webhook_verifier is None:
        log.error("sendgrid webhook rejected: %s", state.webhook_key_error)
        abort(403, description="Event webhook verification is not configured.")
    if not signature or not timestamp:
        abort(403, description="Missing signature.")
    tolerance = state.config.webhook_tolerance_seconds
    if not (timestamp.isascii() and timestamp.isdecimal() and len(timestamp) <= 12
            and abs(time.time() - int(timestamp)) <= tolerance):
        abort(403, description=f"Timestamp more than {tolerance} seconds from now (or malformed).")
    request.max_content_length = MAX_BODY_BYTES  # a larger body is a 413 before it is read
    raw = request.get_data(cache=True)
    try:
        ok = state.webhook_verifier.verify_signature(raw.decode("utf-8"), signature, timestamp)
    except (UnicodeDecodeError, binascii.Error, ValueError, TypeError) as exc:
        log.warning("sendgrid webhook: malformed signature or body (%s)", type(exc).__name__)
        ok = False
    if not ok:
        abort(403, description="Bad signature.")
    return raw


@bp.post("/sendgrid")
@csrf_exempt  # authenticated by its signature
def sendgrid() -> Any:
    raw = verified_body()
    if json_depth(raw) > MAX_BODY_DEPTH:
        abort(400, description=f"The body nests deeper than {MAX_BODY_DEPTH} levels.")
    try:
        events = json.loads(raw, parse_int=_digits)
    except (ValueError, RecursionError):
        abort(400, description="The body is not JSON.")
    if not isinstance(events, list):
        abort(400, description="Expected a JSON list of events.")
    counts = record_events(get_ctx().store, PROVIDER, events)
    return jsonify(counts)
