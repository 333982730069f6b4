"""One recipient's RFC 5322 message, shared by the smtp and maildir messengers so both carry the same content.

The constant part of a message (Subject, From, List-Id...) is folded and
encoded once per rendered variant; per recipient only the tokens are filled,
the To and Message-ID written, and the two bodies quoted-printable encoded in
C (binascii). Building each message through `email.message.EmailMessage`
costs about 5 ms for a digest; this costs a fraction of that.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import secrets
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, localtime
from urllib.parse import urlsplit

from ..model import Envelope, Notice, Rendered, Sender

POLICY = email.policy.SMTP.clone(linesep="\n")
_CACHE_LIMIT = 64


class MimeTemplate:
    """The parts of a variant's message that are the same for every recipient."""

    def __init__(self, rendered: Rendered, sender: Sender):
        self.rendered = rendered
        self.domain = sender.email.rpartition("@")[2] or "localhost"
        host = urlsplit(sender.site_url).hostname or self.domain
        headers = [("Subject", rendered.subject),
                   ("From", formataddr((sender.name, sender.email)) if sender.name else sender.email)]
        if sender.reply_to:
            headers.append(("Reply-To", sender.reply_to))
        headers += [("List-Id", f"{rendered.segment} {rendered.cadence} digest "
                                f"<{rendered.segment}.{rendered.cadence}.{host}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                    ("X-Newsletter-Issue", str(rendered.issue_id)),
                    ("MIME-Version", "1.0")]
        self.head = "".join(POLICY.fold(name, value) for name, value in headers).encode("ascii")
        self.boundary = b = "=_nl_" + secrets.token_hex(12)
        part = 'Content-Type: text/{}; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n\n'
        self.content_type = f'Content-Type: multipart/alternative; boundary="{b}"\n\n'
        self.text_head = f"--{b}\n{part.format('plain')}".encode()
        self.html_head = f"\n--{b}\n{part.format('html')}".encode()
        self.tail = f"\n--{b}--\n".encode()

    def message_bytes(self, envelope: Envelope) -> bytes:
        html, text = self.rendered.personalise(envelope.values)
        to = _address(envelope.name, envelope.email)
        head = (f"To: {to}\n"
                f"Date: {format_datetime(localtime())}\n"
                f"Message-ID: <{self.rendered.issue_id}.{envelope.delivery_id}.{secrets.token_hex(6)}@{self.domain}>\n"
                f"List-Unsubscribe: <{envelope.unsubscribe_url}>\n"
                f"X-Newsletter-Delivery: {envelope.delivery_id}\n{self.content_type}").encode("utf-8")
        return b"".join((self.head, head, self.text_head, _qp(text), self.html_head, _qp(html), self.tail))


def _address(name: str, address: str) -> str:
    """Display name encoded (RFC 2047), the address as is (SMTPUTF8 carries a non-ASCII one)."""
    if not name:
        return address
    shown = formataddr((name, "x@x"), charset="utf-8")
    return shown[: -len("<x@x>")] + f"<{address}>"


def _qp(body: str) -> bytes:
    return binascii.b2a_qp(body.encode("utf-8"), istext=True)


_templates: dict[int, tuple[Rendered, Sender, MimeTemplate]] = {}


def template_for(rendered: Rendered, sender: Sender) -> MimeTemplate:
    """One MimeTemplate per rendered variant (and sender), reused for all its recipients."""
    key = id(rendered)
    hit = _templates.get(key)
    if hit is None or hit[0] is not rendered or hit[1] is not sender:
        if len(_templates) >= _CACHE_LIMIT:
            _templates.clear()
        hit = _templates[key] = (rendered, sender, MimeTemplate(rendered, sender))
    return hit[2]


def message_bytes(rendered: Rendered, envelope: Envelope, sender: Sender) -> bytes:
    return template_for(rendered, sender).message_bytes(envelope)


def notice_bytes(notice: Notice, sender: Sender) -> bytes:
    """A plain-text one-off message; rare, so built with the standard library's EmailMessage."""
    domain = sender.email.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = notice.subject
    msg["From"] = formataddr((sender.name, sender.email)) if sender.name else sender.email
    msg["To"] = notice.to
    if sender.reply_to:
        msg["Reply-To"] = sender.reply_to
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = f"<{notice.category}.{secrets.token_hex(8)}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(notice.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=POLICY)
