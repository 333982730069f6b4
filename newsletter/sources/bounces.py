"""Bounce mail in: delivery status notifications (RFC 3464), the common free-text bounces and complaint reports
(RFC 5965 ARF), read from a Maildir folder or an IMAP mailbox. Only parsing and the mailbox: feedback.py
decides what a report does.

Parser choice: `flufl.bounce` (GNU Mailman's, maintained, 17 detectors for Exim, qmail, Yahoo, Microsoft,
Postfix's and others' free-text formats) tells permanent from temporary failures, but returns addresses only.
We match a report by what we put in the message (Message-ID, X-Newsletter-Delivery, a VERP Return-Path),
never by the address, and want RFC 3463 status codes; so the structured parts (the message/delivery-status
and message/feedback-report fields and the returned original) are read here with the standard library's
`email` parser, and flufl.bounce judges only the free-text bounces that have no such part.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import imaplib
import mailbox
import re
import ssl
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from typing import Iterator

from flufl.bounce import all_failures

from ..model import DELIVERY_TAG
from ..setting_values import Mailbox

#: Our Message-ID: <issue.delivery.12 hex digits@domain> (messengers/mime.py writes it).
OUR_MESSAGE_ID = re.compile(r"<(\d{1,18})\.(" + DELIVERY_TAG + r")\.[0-9a-f]{12}@", re.I)
DELIVERY_HEADER = re.compile(r"^X-Newsletter-Delivery:[ \t]*(" + DELIVERY_TAG + r")[ \t]*$", re.I | re.M)
ISSUE_HEADER = re.compile(r"^X-Newsletter-Issue:[ \t]*(\d{1,18})[ \t]*$", re.I | re.M)
QUOTED_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^>\s]{1,250}>)", re.I | re.M)
STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global",
                  "message/global-headers")
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
MAX_PARTS = 200  # a report has a handful; more is not one


class BounceMailboxError(Exception):
    """The bounce mailbox cannot be read; the message names it and the cause."""


@dataclass
class Recipient:
    action: str  # failed | delayed | delivered | relayed | expanded ("" when not said)
    status: str  # an RFC 3463 code, e.g. 5.1.1 ("" when none was found)
    address: str = ""


@dataclass
class Report:
    """What one bounce or complaint message says, as far as we can tell."""
    ref: str  # the report's own Message-ID, else a hash of its bytes: what makes it "seen once"
    kind: str  # dsn | arf | bounce (free text) | unknown
    recipients: list[Recipient] = field(default_factory=list)
    feedback_type: str = ""
    message_ids: set[tuple[int, str]] = field(default_factory=set)  # (issue, delivery tag) from our Message-ID
    deliveries: set[str] = field(default_factory=set)  # delivery tags (model.delivery_tag): X-Newsletter-Delivery
    issues: set[int] = field(default_factory=set)  # X-Newsletter-Issue
    envelope_to: list[str] = field(default_factory=list)  # where the report was delivered (VERP)
    problem: str = ""


def parse_report(raw: bytes) -> Report:
    """Never raises: a message that cannot be understood is a Report of kind `unknown` with the reason."""
    ref = _ref(raw)
    try:
        return _parse(email.message_from_bytes(raw, policy=email.policy.compat32), ref)
    except Exception as exc:  # outside text: any parser failure is an unreadable message, not a crash
        return Report(ref, "unknown", problem=f"could not be parsed ({type(exc).__name__})")


def _ref(raw: bytes) -> str:
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    found = re.search(rb"^Message-ID:[ \t]*(<[^>\s]{1,250}>)", head, re.I | re.M)
    if found:
        return found.group(1).decode("ascii", "replace")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _parse(msg: Message, ref: str) -> Report:
    parts = list(_walk(msg))
    report_type = (msg.get_param("report-type", "", header="content-type") or "") if msg.get_content_type() == \
        "multipart/report" else ""
    report = Report(ref, "unknown")
    report.envelope_to = [addr.lower() for _, addr in getaddresses([str(v) for h in ENVELOPE_HEADERS
                                                                     for v in msg.get_all(h, [])]) if addr]
    for part in parts:
        ctype = part.get_content_type()
        if ctype in ORIGINAL_TYPES:
            _read_original(report, _as_text(part))
        elif ctype.startswith("text/"):
            _read_original(report, _as_text(part), quoted=True)
    kind = str(report_type).lower()
    if kind == "delivery-status" or any(p.get_content_type() == "message/delivery-status" for p in parts):
        report.kind = "dsn"
        report.recipients = _dsn_recipients(parts)
    elif kind == "feedback-report" or any(p.get_content_type() == "message/feedback-report" for p in parts):
        report.kind = "arf"
        report.feedback_type = _feedback_type(parts)
    else:
        temporary, permanent = all_failures(msg)
        code = _first_code(report, parts)
        report.recipients = ([Recipient("failed", _code_in_class(code, "5"), a.decode("utf-8", "replace"))
                              for a in sorted(permanent)]
                             + [Recipient("delayed", _code_in_class(code, "4"), a.decode("utf-8", "replace"))
                                for a in sorted(temporary)])
        if report.recipients:
            report.kind = "bounce"
        else:
            report.problem = "not a bounce or complaint report that could be read"
    if report.kind == "dsn" and not report.recipients:
        report.kind, report.problem = "unknown", "a delivery status report without a recipient's status"
    return report


def _walk(msg: Message) -> Iterator[Message]:
    """Every part, but not inside a returned original (our own text/html parts are no report)."""
    count = 0
    stack = [msg]
    while stack and count < MAX_PARTS:
        part = stack.pop(0)
        count += 1
        yield part
        if part.get_content_type() in ORIGINAL_TYPES or part.get_content_type() in (
                "message/delivery-status", "message/feedback-report"):
            continue
        if part.is_multipart():
            stack.extend(p for p in part.get_payload() if isinstance(p, Message))


def _as_text(part: Message) -> str:
    """A part's content as text: a parsed sub-message is turned back into its text, a body decoded."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(p.as_string() if isinstance(p, Message) else str(p) for p in payload)
    data = part.get_payload(decode=True)
    if data is None:
        return str(payload)
    return data.decode(part.get_content_charset() or "utf-8", "replace")


def _read_original(report: Report, text: str, quoted: bool = False) -> None:
    """Our Message-ID and headers, in a returned original (or quoted in a free-text bounce)."""
    ids = QUOTED_MESSAGE_ID.findall(text)
    for message_id in ids:
        ours = OUR_MESSAGE_ID.match(message_id)
        if ours:
            report.message_ids.add((int(ours.group(1)), ours.group(2).lower()))
    report.deliveries.update(d.lower() for d in DELIVERY_HEADER.findall(text))
    report.issues.update(int(i) for i in ISSUE_HEADER.findall(text))
    if quoted and not ids:  # some MTAs quote the original's headers indented or reflowed
        for ours in OUR_MESSAGE_ID.finditer(text):
            report.message_ids.add((int(ours.group(1)), ours.group(2).lower()))


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = _as_text(part).replace("\r\n", "\n")
    return [HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\n\s*\n", text) if block.strip()]


def _dsn_recipients(parts: list[Message]) -> list[Recipient]:
    found = []
    for part in parts:
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _blocks(part):
            if not (block.get("Final-Recipient") or block.get("Original-Recipient") or block.get("Action")):
                continue  # the per-message fields (Reporting-MTA, Arrival-Date)
            code = STATUS_CODE.search(str(block.get("Status", "")))
            if code is None:
                code = STATUS_CODE.search(str(block.get("Diagnostic-Code", "")))
            address = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            found.append(Recipient(str(block.get("Action", "")).strip().lower(), code.group(0) if code else "",
                                   address.partition(";")[2].strip().lower()))
    return found


def _feedback_type(parts: list[Message]) -> str:
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            for block in _blocks(part):
                if block.get("Feedback-Type"):
                    return str(block["Feedback-Type"]).strip().lower()
    return "abuse"  # RFC 5965 makes the field mandatory; a report without one is still a complaint


def _first_code(report: Report, parts: list[Message]) -> str:
    for part in parts:
        if part.get_content_type().startswith("text/") and part.get_content_type() not in ORIGINAL_TYPES:
            code = STATUS_CODE.search(_as_text(part))
            if code:
                return code.group(0)
    return ""


def _code_in_class(code: str, wanted: str) -> str:
    """The code the text gave when it agrees with flufl.bounce's judgement, else the class's generic code."""
    return code if code.startswith(wanted + ".") else f"{wanted}.0.0"


def verp_deliveries(addresses: list[str], bounce_address: str) -> set[str]:
    """Delivery tags from VERP addresses `local+<delivery tag>@domain` built on `bounce_address`."""
    local, _, domain = bounce_address.lower().rpartition("@")
    if not local or not domain:
        return set()
    pattern = re.compile(re.escape(local) + r"\+(" + DELIVERY_TAG + ")@" + re.escape(domain) + "$")
    return {m.group(1) for a in addresses if (m := pattern.match(a.strip().lower()))}


# -- the mailboxes ------------------------------------------------------------------------------

class MaildirBounces:
    """A Maildir folder; handled messages move to its Maildir++ subfolders (`.processed`, `.unreadable`)."""

    def __init__(self, path: str):
        self.name = f"maildir:{path}"
        try:
            self.box = mailbox.Maildir(path, factory=None, create=False)
            self.box.keys()
        except mailbox.NoSuchMailboxError:
            raise BounceMailboxError(f"{path}: bounce_mailbox: cannot read this Maildir (no such folder)") from None
        except OSError as exc:
            raise BounceMailboxError(f"{path}: bounce_mailbox: cannot read this Maildir ({exc.strerror})") from None

    def items(self) -> Iterator[tuple[str, bytes]]:
        for key in sorted(self.box.keys()):
            yield key, self.box.get_bytes(key)

    def move(self, key: str, folder: str) -> None:
        """Copy into the folder first, then remove: a crash in between leaves a copy, never nothing."""
        target = self.box.get_folder(folder) if folder in self.box.list_folders() else self.box.add_folder(folder)
        target.add(self.box.get_message(key))
        self.box.remove(key)

    def close(self) -> None:
        self.box.close()


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapBounces:
    """An IMAP mailbox over TLS; handled messages move to its child folders `processed` and `unreadable`."""

    def __init__(self, where: Mailbox, password: str | None, cafile: str = "", timeout: float = 30.0):
        self.name = f"{where.kind}://{where.host}:{where.port}/{where.path}"
        if not password:
            raise BounceMailboxError(f"{self.name}: NEWSLETTER_BOUNCE_PASSWORD is not set")
        self.mailbox = where.path
        self.conn: imaplib.IMAP4 | None = None
        try:
            context = ssl.create_default_context(cafile=cafile or None)
            if where.kind == "imaps":
                self.conn = imaplib.IMAP4_SSL(where.host, where.port, ssl_context=context, timeout=timeout)
            else:
                self.conn = imaplib.IMAP4(where.host, where.port, timeout=timeout)
                self.conn.starttls(ssl_context=context)
            self.conn.login(where.user, password)
            self._ok(self.conn.select(_quote(self.mailbox)), "select")
            self.delimiter = self._delimiter()
            self.can_move = "MOVE" in self.conn.capabilities
        except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            if self.conn is not None:
                self.conn.shutdown()
            raise BounceMailboxError(f"{self.name}: {_imap_reason(exc)}") from None
        self.created: set[str] = set()

    def _ok(self, answer: tuple[str, list], what: str) -> list:
        typ, data = answer
        if typ != "OK":
            raise imaplib.IMAP4.error(f"{what} refused: {_text(data)}")
        return data

    def _delimiter(self) -> str:
        data = self._ok(self.conn.list('""', _quote(self.mailbox)), "list")
        found = re.match(rb'\([^)]*\) "(.)"', data[0] or b"") if data else None
        return found.group(1).decode() if found else "/"

    def items(self) -> Iterator[tuple[str, bytes]]:
        try:
            uids = self._ok(self.conn.uid("SEARCH", None, "ALL"), "search")[0].split()
            for uid in uids:
                data = self._ok(self.conn.uid("FETCH", uid, "(BODY.PEEK[])"), "fetch")
                raw = next((item[1] for item in data if isinstance(item, tuple)), None)
                if raw is not None:
                    yield uid.decode(), raw
        except (imaplib.IMAP4.error, OSError) as exc:
            raise BounceMailboxError(f"{self.name}: {_imap_reason(exc)}") from None

    def move(self, key: str, folder: str) -> None:
        target = _quote(f"{self.mailbox}{self.delimiter}{folder}")
        try:
            if folder not in self.created:
                self.conn.create(target)  # "already exists" is fine
                self.created.add(folder)
            if self.can_move:
                self._ok(self.conn.uid("MOVE", key, target), "move")
            else:  # copy, then mark and expunge: never removed before the copy exists
                self._ok(self.conn.uid("COPY", key, target), "copy")
                self._ok(self.conn.uid("STORE", key, "+FLAGS", r"(\Deleted)"), "store")
                self._ok(self.conn.expunge(), "expunge")
        except (imaplib.IMAP4.error, OSError) as exc:
            raise BounceMailboxError(f"{self.name}: {_imap_reason(exc)}") from None

    def close(self) -> None:
        try:
            self.conn.close()
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass  # nothing is left to lose: every move was already confirmed


def _text(data: list) -> str:
    return " ".join(d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data or [])


def _imap_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted ({exc.verify_message}); set bounce_ca_file for a private CA"
    if isinstance(exc, imaplib.IMAP4.error):
        return f"IMAP: {exc}"
    return f"cannot connect: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)


def open_mailbox(where: Mailbox, password: str | None, cafile: str = "",
                 timeout: float = 30.0) -> MaildirBounces | ImapBounces:
    if where.kind == "maildir":
        return MaildirBounces(where.path)
    return ImapBounces(where, password, cafile, timeout)
