"""One recipient's RFC 5322 message: shared by the smtp and maildir messengers so both carry the same content."""

from __future__ import annotations

import secrets
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, localtime
from urllib.parse import urlsplit

from .messengers.base import Envelope, Sender
from .render import Rendered


def build_message(rendered: Rendered, envelope: Envelope, sender: Sender) -> EmailMessage:
    html, text = rendered.personalise(envelope.values)
    domain = sender.email.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = Address(sender.name, addr_spec=sender.email) if sender.name else sender.email
    msg["To"] = Address(envelope.name, addr_spec=envelope.email) if envelope.name else envelope.email
    if sender.reply_to:
        msg["Reply-To"] = sender.reply_to
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = f"<{rendered.issue_id}.{envelope.delivery_id}.{secrets.token_hex(6)}@{domain}>"
    msg["List-Unsubscribe"] = f"<{envelope.unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    host = urlsplit(sender.site_url).hostname or domain
    msg["List-Id"] = f"{rendered.segment} {rendered.cadence} digest <{rendered.segment}.{rendered.cadence}.{host}>"
    msg["X-Newsletter-Issue"] = str(rendered.issue_id)
    msg["X-Newsletter-Delivery"] = str(envelope.delivery_id)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg
