"""SendGrid v3 mail/send: the official package's headers and error model, over one keep-alive connection.

One request carries one rendered body and up to 1000 personalizations, each
with its own substitutions (tokens, greeting), List-Unsubscribe headers and
custom_args that map webhook events back to the ledger. The payload is built by
a pure function so tests can assert on the dict.

SendGrid learns no reader's segment or topics: categories and custom_args carry
only an opaque list code (keyed, per segment and cadence), the issue and the
delivery ids; tracking is set explicitly on every request (off unless asked).
"""

from __future__ import annotations

import http.client
import json
from json.encoder import encode_basestring_ascii as _q  # C-accelerated
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from ..model import (PLACEHOLDERS, Envelope, FatalSendError, Notice, Outcome, Recipients, Rendered, Sender,
                     list_code, stop_mid_batch)
from .keepalive import KeepAlive, NotSent
from .mime import header_text

MAX_PERSONALIZATIONS = 1000
MAX_BACKOFF = 60.0
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
MAIL_SEND = "/v3/mail/send"


def _check(emails: list[str]) -> None:
    """A request holds 1..1000 addresses, no two alike (SendGrid compares addresses without case)."""
    if not emails or len(emails) > MAX_PERSONALIZATIONS:
        raise ValueError(f"personalizations: need 1..{MAX_PERSONALIZATIONS}, got {len(emails)}")
    if len(set(map(str.lower, emails))) != len(emails):
        raise ValueError("personalizations: an address appears twice in one request")


@dataclass(frozen=True)
class Privacy:
    """What a site lets SendGrid learn: the key of its list codes, and whether opens and clicks are tracked."""
    list_key: bytes = b""
    track_opens: bool = False
    track_clicks: bool = False

    def tracking_settings(self) -> dict[str, Any]:
        """Always explicit, so the account's defaults never apply (click tracking would tell SendGrid which
        study a named reader opened); subscription tracking is ours (List-Unsubscribe), never SendGrid's."""
        return {"click_tracking": {"enable": self.track_clicks, "enable_text": self.track_clicks},
                "open_tracking": {"enable": self.track_opens},
                "subscription_tracking": {"enable": False}}


NO_TRACKING = Privacy()


def _common(rendered: Rendered, sender: Sender, asm_group_id: int, sandbox: bool,
            privacy: Privacy = NO_TRACKING) -> dict[str, Any]:
    """Everything of a request but its personalizations: the same for all its recipients."""
    sender_obj = {"email": sender.email}
    if sender.name:
        sender_obj["name"] = sender.name
    code = list_code(privacy.list_key, rendered.segment, rendered.cadence)
    payload: dict[str, Any] = {
        "from": sender_obj,
        "subject": header_text(rendered.subject),
        "content": [{"type": "text/plain", "value": rendered.text},
                    {"type": "text/html", "value": rendered.html}],
        "categories": [code],
        "custom_args": {"issue_id": str(rendered.issue_id), "list": code},
        "tracking_settings": privacy.tracking_settings(),
    }
    if sender.reply_to:
        payload["reply_to"] = {"email": sender.reply_to}
    if asm_group_id:
        payload["asm"] = {"group_id": asm_group_id}
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


def build_payload(rendered: Rendered, envelopes: Sequence[Envelope], sender: Sender, *,
                  asm_group_id: int = 0, sandbox: bool = False, privacy: Privacy = NO_TRACKING) -> dict[str, Any]:
    """The v3 mail/send body as a dict: the reference that tests assert on."""
    envelopes = list(envelopes)
    _check([env.email for env in envelopes])
    issue_id = str(rendered.issue_id)
    personalizations = []
    for env in envelopes:
        to = {"email": env.email, "name": env.name} if env.name else {"email": env.email}
        personalizations.append({
            "to": [to],
            "substitutions": {key: env.values[key] for key in PLACEHOLDERS},
            "custom_args": {"issue_id": issue_id, "subscriber_id": str(env.subscriber_id),
                            "delivery_id": str(env.delivery_id)},
            "headers": {"List-Unsubscribe": f"<{env.unsubscribe_url}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        })
    return {"personalizations": personalizations, **_common(rendered, sender, asm_group_id, sandbox, privacy)}


#: Bytes JSON writes escaped (controls, DEL, the quote and the backslash), each mapped to another byte by
#: _MARKED and every other byte to itself: translating ASCII text changes it only if it holds one of them.
_ESCAPED = bytes(range(32)) + b'"\\\x7f'
_MARKED = bytes(b ^ 1 if b in _ESCAPED else b for b in range(256))


def _json_text(strings: list[str]) -> list[str]:
    """Each string as json.dumps writes it between its quotes (ensure_ascii).

    Checked for the whole column at once, in C: when it is ASCII and holds nothing JSON escapes (the usual
    case for addresses, tokens, links and most names), every string already is its JSON text; otherwise
    each one is quoted by the C encoder."""
    joined = "".join(strings)
    if joined.isascii():
        raw = joined.encode("ascii")
        if raw.translate(_MARKED) == raw:
            return strings
    return [_q(text)[1:-1] for text in strings]


#: The fixed text of a personalization, around the recipient's own strings, in build_payload's key order:
#: to (email, name if any), substitutions (PLACEHOLDERS order), custom_args, headers.
_TO = '{"to":[{"email":"'
_WITH_NAME = '","name":"'
_SUBSTITUTIONS = ['"}],"substitutions":{' + _q(PLACEHOLDERS[0]) + ':"'] + [f'",{_q(key)}:"' for key in PLACEHOLDERS[1:]]
_ARGS = '"},"custom_args":{"issue_id":%s,"subscriber_id":"'
_DELIVERY_ARG = '","delivery_id":"'
_HEADERS = '"},"headers":{"List-Unsubscribe":"<'
_END = '>","List-Unsubscribe-Post":"List-Unsubscribe=One-Click"}}'


def encode_payload(rendered: Rendered, envelopes: Sequence[Envelope], sender: Sender, *,
                   asm_group_id: int = 0, sandbox: bool = False, privacy: Privacy = NO_TRACKING) -> str:
    """Byte for byte json.dumps(build_payload(...), separators=(",", ":")), written directly (_body), once the
    request is known to be valid (_check)."""
    batch = Recipients.of(envelopes)
    _check(batch.emails)
    return _body(rendered.issue_id, batch, _common_json(rendered, sender, asm_group_id, sandbox, privacy))


def _body(issue_id: int, batch: Recipients, common: str) -> str:
    """The request body from a checked batch and the shared part (`common`: whatever `_common` returns, with the
    whole HTML, encoded once per variant).

    The recipients' strings are taken a column at a time (all the addresses, all the names...: Recipients,
    which the dispatcher makes as columns), each column made JSON text as a whole where it can be
    (_json_text), and dealt into one list of pieces, the fixed text between them already in place, by slice
    assignment; one join writes the body. All of it in C: no per-recipient dict, `%`, tuple or Python call.
    This is the hot path of a million-recipient send."""
    s1, s2, s3, s4 = _SUBSTITUTIONS
    row = ["," + _TO, "", "", s1, "", s2, "", s3, "", s4, "", _ARGS % _q(str(issue_id)), "",
           _DELIVERY_ARG, "", _HEADERS, "", _END]
    width = len(row)
    pieces = row * len(batch)
    pieces[0] = '{"personalizations":[' + _TO
    pieces[1::width] = _json_text(batch.emails)
    pieces[2::width] = [_WITH_NAME + name if name else "" for name in _json_text(batch.names)]
    for slot, column in zip((4, 6, 8, 10), batch.values):
        pieces[slot::width] = _json_text(column)
    pieces[12::width] = map(str, batch.subscriber_ids)
    pieces[14::width] = map(str, batch.delivery_ids)
    pieces[16::width] = _json_text(batch.unsubscribe_urls)
    pieces += ("],", common)
    return "".join(pieces)


_common_cache: dict[tuple, tuple[Rendered, str]] = {}


def _common_json(rendered: Rendered, sender: Sender, asm_group_id: int, sandbox: bool, privacy: Privacy) -> str:
    """The shared part (with the whole HTML) encoded once per variant, not once per request."""
    key = (id(rendered), id(sender), asm_group_id, sandbox, privacy)
    hit = _common_cache.get(key)
    if hit is None or hit[0] is not rendered:
        if len(_common_cache) >= 64:
            _common_cache.clear()
        hit = _common_cache[key] = (rendered, json.dumps(_common(rendered, sender, asm_group_id, sandbox, privacy),
                                                         separators=(",", ":"))[1:])
    return hit[1]


def notice_payload(notice: Notice, sender: Sender, *, sandbox: bool = False) -> dict[str, Any]:
    """A one-off plain-text message; tracking always off so its signed link reaches the reader unchanged."""
    sender_obj = {"email": sender.email} | ({"name": sender.name} if sender.name else {})
    payload: dict[str, Any] = {
        "personalizations": [{"to": [{"email": notice.to}]}],
        "from": sender_obj,
        "subject": header_text(notice.subject),
        "content": [{"type": "text/plain", "value": notice.text}],
        "categories": [notice.category],
        "tracking_settings": NO_TRACKING.tracking_settings(),
    }
    if sender.reply_to:
        payload["reply_to"] = {"email": sender.reply_to}
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


def split_requests(envelopes: Sequence[Envelope]) -> list[Recipients]:
    """Requests of at most 1000 personalizations in which no address appears twice (case aside)."""
    batch = Recipients.of(envelopes)
    if 0 < len(batch) <= MAX_PERSONALIZATIONS and len(set(map(str.lower, batch.emails))) == len(batch):
        return [batch]  # the usual batch, checked in C: one request as it is
    chunks: list[tuple[list[int], set[str]]] = []
    for position, email in enumerate(batch.emails):
        key = email.lower()
        for chunk, seen in chunks:
            if len(chunk) < MAX_PERSONALIZATIONS and key not in seen:
                break
        else:
            chunk, seen = [], set()
            chunks.append((chunk, seen))
        chunk.append(position)
        seen.add(key)
    return [batch.at(chunk) for chunk, _ in chunks]


def describe_error(exc: http_errors.HTTPError) -> str:
    """The provider's own reasons: SendGrid's `errors` list, or Prism's sl-violations header."""
    reasons = []
    headers = getattr(exc, "headers", None) or {}
    violations = headers.get("sl-violations") if hasattr(headers, "get") else None
    if violations:
        try:
            for v in json.loads(violations):
                # Prism names the place as `location` (["request", "body", "from"]); older builds as `path`.
                where = [str(p) for p in (v.get("location") or v.get("path") or [])]
                where = where[2:] if where[:2] == ["request", "body"] else where
                reasons.append(f"{'.'.join(where) or 'request'}: {v.get('message')}")
        except (ValueError, AttributeError, TypeError):
            reasons.append(violations)
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    if violations:
        body = ""  # a mock's body is only the contract's example, not a reason
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
                 asm_group_id: int = 0, sandbox: bool = False, privacy: Privacy = NO_TRACKING,
                 sleep: Callable[[float], None] = time.sleep):
        if not api_key:
            raise FatalSendError("SENDGRID_API_KEY is not set: export it to send through SendGrid")
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout
        self.transport = KeepAlive(host, timeout)
        self.sender = sender
        self.max_attempts, self.backoff_base = max_attempts, backoff_base
        self.asm_group_id, self.sandbox, self.privacy, self.sleep = asm_group_id, sandbox, privacy, sleep
        self.requests = 0
        self.fatal: FatalSendError | None = None

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if self.fatal is not None:
            raise self.fatal
        outcomes: list[Outcome] = []
        chunks = split_requests(envelopes)
        for index, chunk in enumerate(chunks):
            payload = encode_payload(rendered, chunk, self.sender, asm_group_id=self.asm_group_id,
                                     sandbox=self.sandbox, privacy=self.privacy)
            try:
                outcome = self.post(payload, chunk.delivery_ids)
            except FatalSendError as exc:
                outcomes.append(stop_mid_batch(exc, outcomes, (i for c in chunks[index:] for i in c.delivery_ids)))
                self.fatal = exc
                break
            outcomes.append(outcome)
            if outcome.status == "deferred" and index + 1 < len(chunks):
                # SendGrid could not take a request after every retry: the rest goes back untried.
                outcomes.append(Outcome("pending", [i for c in chunks[index + 1:] for i in c.delivery_ids],
                                        error=outcome.error))
                break
        return outcomes

    def post(self, payload: dict[str, Any] | str, ids: list[int]) -> Outcome:
        """One request, retried on 429, 5xx and refused connections; never after the request went out unanswered.

        When those retries run out the request is deferred (transient: a later run tries again); a 4xx
        other than 429 is failed; no answer after the request went out is unknown."""
        body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        # The official client's headers (Authorization, User-Agent), read per request so a change to them holds.
        headers = {**self.client.client.request_headers, **JSON_HEADERS}
        error, delay = "", 0.0
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self.sleep(delay)
            self.requests += 1
            try:
                response = self.transport.post(MAIL_SEND, body, headers)
            except NotSent as exc:
                # The request never went out whole: SendGrid cannot have accepted anything.
                error = f"sendgrid: could not connect: {exc}"
                delay = self._delay(attempt, None)
                continue
            except (OSError, http.client.HTTPException) as exc:
                # Sent, then no answer or a garbled one (timeout, reset): SendGrid may have accepted it.
                return Outcome("unknown", ids, error=f"sendgrid: no answer after the request was sent "
                                                     f"({type(exc).__name__}: {exc})")
            if response.status >= 300:
                exc = http_errors.HTTPError(response.status, response.reason, response.body, response.headers)
                status = response.status
                if status in (401, 403):
                    raise FatalSendError(describe_error(exc) + " (check SENDGRID_API_KEY and its mail.send scope)")
                error = describe_error(exc)
                if status == 429 or status >= 500:
                    delay = self._delay(attempt, exc)
                    continue
                return Outcome("failed", ids, error=error)
            message_id = response.headers.get("X-Message-Id")
            return Outcome("sent", ids, provider_id=message_id or f"accepted-{response.status}")
        return Outcome("deferred", ids, error=f"{error} (deferred after {self.max_attempts} attempts)")

    def _delay(self, attempt: int, exc: http_errors.HTTPError | None) -> float:
        headers = getattr(exc, "headers", None) or {}
        reset = headers.get("X-RateLimit-Reset") if hasattr(headers, "get") else None
        if reset:
            try:
                return min(MAX_BACKOFF, max(0.0, float(reset) - time.time()) + random.uniform(0, self.backoff_base))
            except ValueError:
                pass
        return min(MAX_BACKOFF, self.backoff_base * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))

    def send_notice(self, notice: Notice) -> Outcome:
        return self.post(notice_payload(notice, self.sender, sandbox=self.sandbox), [])

    def close(self) -> None:
        self.transport.close()
