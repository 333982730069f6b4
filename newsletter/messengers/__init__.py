"""Messengers: the only code that touches the network or the outbox.

Each takes one rendered variant and a batch of envelopes (any sequence of
them; from the dispatcher a model.Recipients, columns whose items are
Envelopes) and says, per envelope, whether the provider accepted it (sent), refused it for good (failed),
could not take it for now (deferred: a transient failure before the message was
handed over), or whether the answer was lost after it went out (unknown). None
touches the database; the dispatcher records what they report. They import
only the shared types of `newsletter.model`.
"""

from __future__ import annotations

from typing import Any

from ..model import Messenger, Notice, Outcome, Sender, delivery_tag_key, derive_key


def sender_from_config(config: Any) -> Sender:
    return Sender(email=config.sender_email, name=config.sender_name, reply_to=config.reply_to,
                  site_url=config.site_url, bounce_address=config.bounce_address,
                  tag_key=delivery_tag_key(config.secret))


def messenger_from_config(config: Any) -> Messenger:
    sender = sender_from_config(config)
    if config.backend == "maildir":
        from .maildir import MaildirMessenger
        return MaildirMessenger(config.outbox, sender)
    if config.backend == "smtp":
        from .smtp import SmtpMessenger, SmtpPool
        options = dict(security=config.smtp_security, username=config.smtp_username, password=config.smtp_password,
                       timeout=config.smtp_timeout, batch_size=config.smtp_batch_size, ca_file=config.smtp_ca_file)
        if config.smtp_connections > 1:
            return SmtpPool(config.smtp_connections, config.smtp_host, config.smtp_port, sender, **options)
        return SmtpMessenger(config.smtp_host, config.smtp_port, sender, **options)
    if config.backend == "sendgrid":
        from .sendgrid import Privacy, SendGridMessenger
        privacy = Privacy(derive_key(config.require_secret(), "list codes"), track_opens=config.track_opens,
                          track_clicks=config.track_clicks)
        return SendGridMessenger(config.sendgrid_api_key or "", sender, host=config.sendgrid_host, timeout=config.sendgrid_timeout,
                                 max_attempts=config.sendgrid_max_attempts, asm_group_id=config.sendgrid_asm_group_id,
                                 sandbox=config.sendgrid_sandbox, privacy=privacy)
    raise ValueError(f"backend: unknown {config.backend!r}")


def erase_from_outbox(config: Any, address: str) -> int:
    """Remove the messages to an erased reader from the Maildir outbox, if the site has one; how many went."""
    from pathlib import Path
    if not Path(config.outbox).is_dir():
        return 0
    from .maildir import MaildirMessenger
    messenger = MaildirMessenger(config.outbox, sender_from_config(config))
    try:
        return messenger.remove_messages_to(address)
    finally:
        messenger.close()


def send_notice(config: Any, notice: Notice, messenger: Messenger | None = None) -> Outcome:
    """Send one notice through the configured backend and close it."""
    messenger = messenger or messenger_from_config(config)
    try:
        return messenger.send_notice(notice)
    finally:
        messenger.close()
