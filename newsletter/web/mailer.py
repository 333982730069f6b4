"""The one kind of email the web app sends itself: the sign-up confirmation.

A plain-text message delivered through the configured backend's transport:
the Maildir outbox, SMTP, or SendGrid (with click tracking off, so the signed
link reaches the reader unchanged).
"""

from __future__ import annotations

import mailbox
import secrets
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, localtime
from typing import Any


class MailError(Exception):
    """The confirmation could not be handed to the transport."""


def confirmation_text(site_name: str, *, confirm_url: str | None, preferences_url: str | None,
                      postal_address: str = "") -> str:
    """The body: a link to confirm (new, pending or unsubscribed) or, for an active subscriber, to preferences."""
    lines = ["Hello,", ""]
    if confirm_url:
        lines += [f"Someone, probably you, asked for {site_name} to be sent to this address.",
                  "", "To confirm, open this link (it works for 7 days):", "", confirm_url, "",
                  "If you did not ask for this, ignore this email: you will get nothing more from us."]
    else:
        lines += [f"Someone, probably you, asked for {site_name} to be sent to this address.",
                  "", "This address already receives it. Nothing was changed.", "",
                  "To change what you receive, or to stop, open your preferences:", "", preferences_url or "", "",
                  "If you did not ask for this, you can ignore this email."]
    lines += ["", "--", site_name]
    if postal_address:
        lines.append(postal_address)
    return "\n".join(lines) + "\n"


def build_message(config: Any, to: str, subject: str, text: str) -> EmailMessage:
    domain = config.sender_email.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = Address(config.sender_name, addr_spec=config.sender_email) if config.sender_name \
        else config.sender_email
    msg["To"] = to
    if config.reply_to:
        msg["Reply-To"] = config.reply_to
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = f"<confirm.{secrets.token_hex(8)}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    return msg


def deliver(config: Any, msg: EmailMessage) -> None:
    """Hand one message to the configured backend's transport, or raise MailError."""
    backend = config.backend
    if backend == "maildir":
        _maildir(config, msg)
    elif backend == "smtp":
        _smtp(config, msg)
    elif backend == "sendgrid":
        _sendgrid(config, msg)
    else:
        raise MailError(f"backend: unknown {backend!r}")


def _maildir(config: Any, msg: EmailMessage) -> None:
    try:
        box = mailbox.Maildir(str(config.outbox), create=True)
        try:
            box.add(msg)
        finally:
            box.close()
    except OSError as exc:
        raise MailError(f"maildir {config.outbox}: {exc}") from None


def _smtp(config: Any, msg: EmailMessage) -> None:
    context = ssl.create_default_context()
    try:
        if config.smtp_security == "ssl":
            conn = smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, timeout=config.smtp_timeout, context=context)
        else:
            conn = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.smtp_timeout)
        try:
            if config.smtp_security == "starttls":
                conn.starttls(context=context)
            if config.smtp_username:
                conn.login(config.smtp_username, config.smtp_password or "")
            conn.send_message(msg, from_addr=config.sender_email)
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"smtp {config.smtp_host}:{config.smtp_port}: {exc or type(exc).__name__}") from None


def sendgrid_payload(config: Any, msg: EmailMessage) -> dict[str, Any]:
    sender: dict[str, str] = {"email": config.sender_email}
    if config.sender_name:
        sender["name"] = config.sender_name
    payload: dict[str, Any] = {
        "personalizations": [{"to": [{"email": str(msg["To"])}]}],
        "from": sender,
        "subject": str(msg["Subject"]),
        "content": [{"type": "text/plain", "value": msg.get_content()}],
        "categories": ["confirmation"],
        "tracking_settings": {"click_tracking": {"enable": False, "enable_text": False},
                              "open_tracking": {"enable": False}},
    }
    if config.reply_to:
        payload["reply_to"] = {"email": config.reply_to}
    if config.sendgrid_sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


def _sendgrid(config: Any, msg: EmailMessage) -> None:
    from python_http_client import exceptions as http_errors
    from sendgrid import SendGridAPIClient

    if not config.sendgrid_api_key:
        raise MailError("SENDGRID_API_KEY is not set")
    client = SendGridAPIClient(api_key=config.sendgrid_api_key, host=config.sendgrid_host)
    client.client.timeout = config.sendgrid_timeout
    try:
        client.client.mail.send.post(request_body=sendgrid_payload(config, msg))
    except http_errors.HTTPError as exc:
        raise MailError(f"sendgrid {getattr(exc, 'status_code', '?')}: the confirmation was refused") from None
    except OSError as exc:
        raise MailError(f"sendgrid: {type(exc).__name__}: {exc}") from None
