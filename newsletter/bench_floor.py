"""The benchmark's floor: the least work any correct writer of the SendGrid request bodies must do,
timed beside the messenger's own encoder on the same recipients, so `bench` can say how far above it we are.
"""

from __future__ import annotations

import itertools
import time
from typing import Sequence

from .messengers.sendgrid import NO_TRACKING, _common_json, _json_text, encode_payload, split_requests
from .model import Envelope, Outcome, Recipients, Rendered, Sender


def floor_body(rendered: Rendered, envelopes: Sequence[Envelope], sender: Sender) -> str:
    """Not a valid body: what every valid one costs at least. Each recipient's own strings (address, name,
    the four values, the unsubscribe link) made JSON text the cheapest way known (a column at a time,
    checked in one C pass for anything JSON escapes, quoted by the C encoder only where something is:
    `_json_text`), its two ids written, all copied once into one string, with the shared part (encoded
    once per variant, as the messenger does) after them. No fixed text between them, no key, no check of
    the request: whatever a writer adds to this is its own cost."""
    batch = Recipients.of(envelopes)
    columns = [batch.emails, batch.names, batch.unsubscribe_urls, *batch.values]
    own = [_json_text(column) for column in columns] + [list(map(str, ids))
                                                       for ids in (batch.subscriber_ids, batch.delivery_ids)]
    return "".join(itertools.chain.from_iterable(own)) + _common_json(rendered, sender, 0, False, NO_TRACKING)


class FloorMessenger:
    """Writes each SendGrid request body twice, sending nothing: with encode_payload (what the sendgrid
    messenger posts) and at the floor (floor_body); times each alone."""
    name = "json"
    batch_size = 1000

    def __init__(self, sender: Sender):
        self.sender = sender
        self.encode_seconds = 0.0
        self.floor_seconds = 0.0
        self.requests = 0

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        for chunk in split_requests(envelopes):
            started = time.perf_counter()
            encode_payload(rendered, chunk, self.sender)
            encoded = time.perf_counter()
            floor_body(rendered, chunk, self.sender)
            self.floor_seconds += time.perf_counter() - encoded
            self.encode_seconds += encoded - started
            self.requests += 1
        return [Outcome("sent", list(Recipients.of(envelopes).delivery_ids), provider_id="json")]

    def close(self) -> None:
        pass
