"""The one kind of email the web app sends itself: the sign-up confirmation.

A plain-text notice handed to the configured messenger (Maildir, SMTP or
SendGrid with tracking off, so the signed link reaches the reader unchanged).
"""

from __future__ import annotations

from typing import Any

from ..messengers import send_notice
from ..model import FatalSendError, Notice


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


def deliver(config: Any, to: str, subject: str, text: str) -> None:
    """Hand the confirmation to the configured messenger, or raise MailError."""
    try:
        outcome = send_notice(config, Notice(to=to, subject=subject, text=text, category="confirmation"))
    except FatalSendError as exc:
        raise MailError(str(exc)) from None
    if outcome.status != "sent":
        raise MailError(f"{config.backend}: {outcome.status}: {outcome.error}")
