"""The embedded default: each message written into a local Maildir (readable by mutt or Thunderbird)."""

from __future__ import annotations

import email.errors
import mailbox
from pathlib import Path
from typing import Sequence

from ..mime import message_bytes
from ..render import Rendered
from .base import Envelope, Outcome, Sender


class MaildirMessenger:
    name = "maildir"
    batch_size = 200

    def __init__(self, outbox: str | Path, sender: Sender):
        self.outbox = Path(outbox)
        self.sender = sender
        self.box = mailbox.Maildir(str(self.outbox), create=True)

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        outcomes = []
        for env in envelopes:
            try:
                msg = message_bytes(rendered, env, self.sender)
            except (ValueError, email.errors.MessageError) as exc:  # e.g. a non-ASCII local part
                outcomes.append(Outcome("failed", [env.delivery_id], error=f"maildir: cannot build the message: {exc}"))
                continue
            try:
                key = self.box.add(msg)
            except OSError as exc:
                outcomes.append(Outcome("failed", [env.delivery_id], error=f"maildir: {exc}"))
            else:
                outcomes.append(Outcome("sent", [env.delivery_id], provider_id=key))
        return outcomes

    def close(self) -> None:
        self.box.close()
