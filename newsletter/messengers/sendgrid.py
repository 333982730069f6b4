"""SendGrid v3 mail/send through the official client.

One request carries one rendered body and up to 1000 personalizations, each
with its own substitutions (tokens, greeting), List-Unsubscribe headers and
custom_args that map webhook events back to the ledger. The payload is built by
a pure function so tests can assert on the dict.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
from typing import Any, Callable, Sequence

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from ..render import PLACEHOLDERS, Rendered
from .base import Envelope, FatalSendError, Outcome, Sender

MAX_PERSONALIZATIONS = 1000
MAX_BACKOFF = 60.0


def build_payload(rendered: Rendered, envelopes: Sequence[Envelope], sender: Sender, *,
                  asm_group_id: int = 0, sandbox: bool = False) -> dict[str, Any]:
    if not envelopes or len(envelopes) > MAX_PERSONALIZATIONS:
        raise ValueError(f"personalizations: need 1..{MAX_PERSONALIZATIONS}, got {len(envelopes)}")
    emails = [e.email for e in envelopes]
    if len(set(emails)) != len(emails):
        raise ValueError("personalizations: an address appears twice in one request")
    personalizations = []
    for env in envelopes:
        to = {"email": env.email}
        if env.name:
            to["name"] = env.name
        personalizations.append({
            "to": [to],
            "substitutions": {key: env.values[key] for key in PLACEHOLDERS},
            "custom_args": {"issue_id": str(rendered.issue_id), "subscriber_id": str(env.subscriber_id),
                            "delivery_id": str(env.delivery_id)},
            "headers": {"List-Unsubscribe": f"<{env.unsubscribe_url}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        })
    sender_obj = {"email": sender.email}
    if sender.name:
        sender_obj["name"] = sender.name
    payload: dict[str, Any] = {
        "personalizations": personalizations,
        "from": sender_obj,
        "subject": rendered.subject,
        "content": [{"type": "text/plain", "value": rendered.text},
                    {"type": "text/html", "value": rendered.html}],
        "categories": [rendered.segment, f"{rendered.cadence}-digest"],
        "custom_args": {"issue_id": str(rendered.issue_id), "variant": rendered.variant},
    }
    if sender.reply_to:
        payload["reply_to"] = {"email": sender.reply_to}
    if asm_group_id:
        payload["asm"] = {"group_id": asm_group_id}
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


def describe_error(exc: http_errors.HTTPError) -> str:
    """The provider's own reasons: SendGrid's `errors` list, or Prism's sl-violations header."""
    reasons = []
    headers = getattr(exc, "headers", None) or {}
    violations = headers.get("sl-violations") if hasattr(headers, "get") else None
    if violations:
        try:
            reasons += [f"{'/'.join(map(str, v.get('path', [])))}: {v.get('message')}" for v in json.loads(violations)]
        except (ValueError, AttributeError):
            reasons.append(violations)
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        reasons += [f"{e.get('field') or ''}: {e.get('message')}".lstrip(": ") for e in json.loads(body)["errors"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        if body.strip():
            reasons.append(body.strip()[:300])
    return f"sendgrid {exc.status_code}: " + ("; ".join(reasons) or "no reason given")


class SendGridMessenger:
    name = "sendgrid"
    batch_size = MAX_PERSONALIZATIONS

    def __init__(self, api_key: str, sender: Sender, *, host: str = "https://api.sendgrid.com",
                 timeout: float = 30.0, max_attempts: int = 5, backoff_base: float = 1.0,
                 asm_group_id: int = 0, sandbox: bool = False, sleep: Callable[[float], None] = time.sleep):
        if not api_key:
            raise FatalSendError("SENDGRID_API_KEY is not set: export it to send through SendGrid")
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout
        self.sender = sender
        self.max_attempts, self.backoff_base = max_attempts, backoff_base
        self.asm_group_id, self.sandbox, self.sleep = asm_group_id, sandbox, sleep
        self.requests = 0

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        outcomes = []
        for start in range(0, len(envelopes), MAX_PERSONALIZATIONS):
            chunk = envelopes[start:start + MAX_PERSONALIZATIONS]
            payload = build_payload(rendered, chunk, self.sender, asm_group_id=self.asm_group_id, sandbox=self.sandbox)
            outcomes.append(self.post(payload, [e.delivery_id for e in chunk]))
        return outcomes

    def post(self, payload: dict[str, Any], ids: list[int]) -> Outcome:
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            self.requests += 1
            try:
                response = self.client.client.mail.send.post(request_body=payload)
            except http_errors.HTTPError as exc:
                status = getattr(exc, "status_code", None) or 0
                if status in (401, 403):
                    raise FatalSendError(describe_error(exc) + " (check SENDGRID_API_KEY and its mail.send scope)") from None
                error = describe_error(exc)
                if status == 429 or status >= 500 or status == 0:
                    self.sleep(self._delay(attempt, exc))
                    continue
                return Outcome("failed", ids, error=error)
            except urllib.error.URLError as exc:
                # The connection was never made: SendGrid cannot have accepted anything.
                error = f"sendgrid: could not connect: {exc.reason}"
                self.sleep(self._delay(attempt, None))
                continue
            except OSError as exc:
                # Sent, then no answer (timeout, reset): SendGrid may have accepted it.
                return Outcome("unknown", ids, error=f"sendgrid: no answer after the request was sent "
                                                     f"({type(exc).__name__}: {exc})")
            message_id = response.headers.get("X-Message-Id") if response.headers else None
            return Outcome("sent", ids, provider_id=message_id or f"accepted-{response.status_code}")
        return Outcome("failed", ids, error=f"{error} (gave up after {self.max_attempts} attempts)")

    def _delay(self, attempt: int, exc: http_errors.HTTPError | None) -> float:
        headers = getattr(exc, "headers", None) or {}
        reset = headers.get("X-RateLimit-Reset") if hasattr(headers, "get") else None
        if reset:
            try:
                return min(MAX_BACKOFF, max(0.0, float(reset) - time.time()) + random.uniform(0, self.backoff_base))
            except ValueError:
                pass
        return min(MAX_BACKOFF, self.backoff_base * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    def close(self) -> None:
        pass
