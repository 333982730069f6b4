"""The one protocol every messenger implements; the dispatcher sees nothing else.

A messenger takes one rendered variant and a batch of envelopes and says, per
envelope, whether the provider accepted it (sent), refused it (failed) or
whether the answer was lost after the message went out (unknown). It never
touches the database; the dispatcher records what it reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from ..render import Rendered


@dataclass(slots=True)
class Envelope:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    values: dict[str, str]  # placeholder -> this recipient's value
    unsubscribe_url: str


@dataclass
class Outcome:
    status: str  # sent | failed | unknown
    delivery_ids: list[int]
    provider_id: str | None = None
    error: str | None = None


@dataclass
class Sender:
    email: str
    name: str = ""
    reply_to: str = ""
    site_url: str = ""


@dataclass
class Notice:
    """A one-off message outside any issue (sign-up confirmation, editors' notice).

    Plain text, no List-Unsubscribe (the reader is not on a list for it), no
    tracking, and never a delivery in the ledger.
    """
    to: str
    subject: str
    text: str
    category: str = "notice"


class FatalSendError(Exception):
    """Stop the whole run (bad credentials, forbidden): nothing of the batch was accepted.

    The dispatcher puts the whole batch back to pending when it sees this, so a
    messenger raises it only while nothing of the current batch has gone out.
    Once part of a batch went out, it returns the outcomes it has (the rest
    failed, with the reason) and raises at the start of its next `send`.
    """


def stop_mid_batch(exc: FatalSendError, outcomes: list[Outcome], not_attempted: Iterable[int]) -> Outcome:
    """The rule for a fatal error (refused credentials) in the middle of a batch.

    If nothing of the batch was handed over, re-raise: the dispatcher puts the
    batch back to pending. Otherwise what went out must be recorded, so the rest
    is reported failed and the caller raises `exc` at its next batch.
    """
    if all(o.status == "failed" for o in outcomes):
        raise exc
    return Outcome("failed", list(not_attempted), error=f"{exc} (not attempted: the run stopped)")


class Messenger(Protocol):
    name: str
    batch_size: int

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]: ...

    def send_notice(self, notice: Notice) -> Outcome: ...

    def close(self) -> None: ...
