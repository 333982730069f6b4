"""The embedded default: each message written into a local Maildir (readable by mutt or Thunderbird)."""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Sequence

from ..mime import build_message
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
                key = self.box.add(build_message(rendered, env, self.sender))
            except OSError as exc:
                outcomes.append(Outcome("failed", [env.delivery_id], error=f"maildir: {exc}"))
            else:
                outcomes.append(Outcome("sent", [env.delivery_id], provider_id=key))
        return outcomes

    def close(self) -> None:
        self.box.close()
