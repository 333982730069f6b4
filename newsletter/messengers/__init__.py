"""Messengers: the only code that touches the network or the outbox."""

from __future__ import annotations

from typing import Any

from .base import Envelope, FatalSendError, Messenger, Outcome, Sender


def sender_from_config(config: Any) -> Sender:
    return Sender(email=config.sender_email, name=config.sender_name, reply_to=config.reply_to,
                  site_url=config.site_url)


def messenger_from_config(config: Any) -> Messenger:
    sender = sender_from_config(config)
    if config.backend == "maildir":
        from .maildir import MaildirMessenger
        return MaildirMessenger(config.outbox, sender)
    if config.backend == "smtp":
        from .smtp import SmtpMessenger
        return SmtpMessenger(config.smtp_host, config.smtp_port, sender, security=config.smtp_security,
                             username=config.smtp_username, password=config.smtp_password,
                             timeout=config.smtp_timeout, batch_size=config.smtp_batch_size)
    if config.backend == "sendgrid":
        from .sendgrid import SendGridMessenger
        return SendGridMessenger(config.sendgrid_api_key or "", sender, host=config.sendgrid_host, timeout=config.sendgrid_timeout,
                                 max_attempts=config.sendgrid_max_attempts, asm_group_id=config.sendgrid_asm_group_id,
                                 sandbox=config.sendgrid_sandbox)
    raise ValueError(f"backend: unknown {config.backend!r}")


__all__ = ["Envelope", "FatalSendError", "Messenger", "Outcome", "Sender", "messenger_from_config",
           "sender_from_config"]
