"""The embedded default: each message written into a local Maildir (readable by mutt or Thunderbird)."""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import mailbox
from pathlib import Path
from typing import Sequence

from ..model import Envelope, FatalSendError, Notice, Outcome, Rendered, Sender
from .mime import message_bytes, notice_bytes


class MaildirMessenger:
    name = "maildir"
    batch_size = 200

    def __init__(self, outbox: str | Path, sender: Sender):
        self.outbox = Path(outbox)
        self.sender = sender
        try:
            # Made here, each folder with exist_ok, not by mailbox.Maildir(create=True): that checks for the
            # outbox, then makes it and its three folders, so of two worker processes opening a new outbox at
            # once the second failed on "File exists" (or found it without its folders yet). Its parent must
            # exist: a wrong path is refused, never created.
            self.outbox.mkdir(mode=0o700, exist_ok=True)
            for folder in ("tmp", "new", "cur"):
                (self.outbox / folder).mkdir(mode=0o700, exist_ok=True)
            self.box = mailbox.Maildir(str(self.outbox), create=False)
        except OSError as exc:
            raise FatalSendError(f"maildir: cannot open the outbox {self.outbox}: {exc.strerror or exc}") from None

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        outcomes = []
        for env in envelopes:
            try:
                msg = message_bytes(rendered, env, self.sender)
            except ValueError as exc:  # e.g. an address that cannot be written in a header
                outcomes.append(Outcome("failed", [env.delivery_id], error=f"maildir: cannot build the message: {exc}"))
                continue
            try:
                key = self.box.add(msg)
            except OSError as exc:
                outcomes.append(Outcome("failed", [env.delivery_id], error=f"maildir: {exc}"))
            else:
                outcomes.append(Outcome("sent", [env.delivery_id], provider_id=key))
        return outcomes

    def send_notice(self, notice: Notice) -> Outcome:
        try:
            return Outcome("sent", [], provider_id=self.box.add(notice_bytes(notice, self.sender)))
        except (OSError, ValueError) as exc:
            return Outcome("failed", [], error=f"maildir: {exc}")

    def remove_messages_to(self, address: str) -> int:
        """Delete every message addressed to `address` (an erased reader); returns how many went."""
        wanted = address.strip().lower()
        parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
        gone = 0
        for key in list(self.box.keys()):
            try:
                headers = parser.parsebytes(self.box.get_bytes(key))
            except (KeyError, OSError):
                continue  # removed meanwhile
            recipients = [a.lower() for _, a in email.utils.getaddresses(headers.get_all("To", []))]
            if wanted in recipients:
                self.box.discard(key)
                gone += 1
        return gone

    def close(self) -> None:
        self.box.close()
