"""A messenger that does no I/O: counts what it is given. The benchmark's floor."""

from __future__ import annotations

from typing import Sequence

from ..model import Envelope, Notice, Outcome, Recipients, Rendered


class CountingMessenger:
    name = "counting"

    def __init__(self, batch_size: int = 1000):
        self.batch_size = batch_size
        self.recipients = 0
        self.requests = 0
        self.notices: list[Notice] = []

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        self.requests += 1
        self.recipients += len(envelopes)
        return [Outcome("sent", list(Recipients.of(envelopes).delivery_ids), provider_id=f"count-{self.requests}")]

    def send_notice(self, notice: Notice) -> Outcome:
        self.notices.append(notice)
        return Outcome("sent", [], provider_id=f"notice-{len(self.notices)}")

    def close(self) -> None:
        pass
