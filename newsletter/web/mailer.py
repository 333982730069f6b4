"""The one kind of email the web app sends itself: the sign-up confirmation.

A plain-text notice (templates/public/confirmation.txt) handed to the configured
messenger (Maildir, SMTP or SendGrid with tracking off, so the signed link
reaches the reader unchanged).
"""

from __future__ import annotations

from typing import Any

from ..messengers import send_notice
from ..model import FatalSendError, Notice


class MailError(Exception):
    """The confirmation could not be handed to the transport."""


def hand_over(config: Any, notice: Notice, withhold: bool = False) -> None:
    """Hand the confirmation to the configured messenger, or raise MailError.

    A withheld one (an address that bounced or complained, or is over its limit) was composed all the same,
    so the request did the same work up to the transport.
    """
    if withhold:
        return
    try:
        outcome = send_notice(config, notice)
    except FatalSendError as exc:
        raise MailError(str(exc)) from None
    if outcome.status != "sent":
        raise MailError(f"{config.backend}: {outcome.status}: {outcome.error}")
