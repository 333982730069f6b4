"""A batch as columns (model.Recipients) gives every messenger what an Envelope per recipient gave.

The dispatcher signs a batch a column at a time; these check, over any names (hostile ones included),
that each position is exactly the Envelope Dispatcher.make_envelope makes for that recipient, and that the
SendGrid body written from the columns is the body written from those Envelopes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from newsletter.dispatch import Dispatcher
from newsletter.messengers.counting import CountingMessenger
from newsletter.messengers.sendgrid import build_payload, encode_payload, split_requests
from newsletter.model import PLACEHOLDERS, Recipients, Rendered, Sender
from newsletter.tokens import Tokens

TOKENS = Tokens("recipients-test-secret")
DISPATCHER = Dispatcher(None, CountingMessenger(), TOKENS, "https://digest.example.org/")  # type: ignore[arg-type]
SENDER = Sender("digest@example.org", "Digest", site_url="https://digest.example.org")
RENDERED = Rendered(issue_id=4, segment="patients", cadence="weekly", variant="v", subject="S", preheader="P",
                    html="<p>-nl-hgreet-</p>", text="-nl-tgreet- -nl-utok- -nl-ptok-", summary_ids=[1], full_cards=1)

names = st.one_of(st.none(), st.text(), st.sampled_from(["", "  ", "Ann", "-nl-utok-", "A\r\nB", "Zoë <x>", "\u202e"]))
rows = st.lists(st.tuples(st.integers(1, 10**9), st.integers(1, 10**9), st.emails(), names, st.text(max_size=3)),
                max_size=30, unique_by=lambda row: row[2].lower())


@given(rows)
def test_each_position_is_the_envelope_make_envelope_makes(batch_rows):
    batch = Recipients.signed(batch_rows, TOKENS.link_tokens, DISPATCHER.unsubscribe_base)
    expected = [DISPATCHER.make_envelope(d, s, e, n or "") for d, s, e, n, _ in batch_rows]
    assert len(batch) == len(expected)
    assert list(batch) == expected
    assert [batch[i] for i in range(len(batch))] == expected
    positions = [i for i in (2, 0) if i < len(expected)]
    assert list(batch[1::2]) == expected[1::2] and list(batch.at(positions)) == [expected[i] for i in positions]
    assert list(Recipients.of(expected)) == expected  # and back: columns from Envelopes


@given(rows.filter(bool))
def test_the_body_from_columns_is_the_body_from_envelopes(batch_rows):
    batch = Recipients.signed(batch_rows, TOKENS.link_tokens, DISPATCHER.unsubscribe_base)
    envelopes = list(batch)
    body = encode_payload(RENDERED, batch, SENDER)
    assert body == encode_payload(RENDERED, envelopes, SENDER)
    assert json.loads(body) == build_payload(RENDERED, envelopes, SENDER)
    assert [list(chunk) for chunk in split_requests(batch)] == [envelopes]


def test_one_address_twice_in_another_case_goes_in_two_requests():
    batch = Recipients.signed([(1, 11, "Ann@example.org", "Ann"), (2, 12, "b@example.org", None),
                               (3, 13, "ann@EXAMPLE.org", "Ann again")], TOKENS.link_tokens, "https://x/u/")
    chunks = split_requests(batch)
    assert [chunk.delivery_ids for chunk in chunks] == [[1, 2], [3]]
    assert [list(chunk) for chunk in chunks] == [[batch[0], batch[1]], [batch[2]]]


def test_columns_that_do_not_line_up_are_refused():
    good = Recipients.signed([(1, 11, "a@example.org", "A")], TOKENS.link_tokens, "https://x/u/")
    with pytest.raises(ValueError, match="value columns"):
        Recipients(good.delivery_ids, good.subscriber_ids, good.emails, good.names, good.values[:3],
                   good.unsubscribe_urls)
    with pytest.raises(ValueError, match="value columns"):
        Recipients(good.delivery_ids, good.subscriber_ids, good.emails, [], good.values, good.unsubscribe_urls)


def test_an_empty_batch_has_every_column_and_nothing_in_them():
    batch = Recipients.signed([], TOKENS.link_tokens, "https://x/u/")
    assert len(batch) == 0 and list(batch) == [] and len(batch.values) == len(PLACEHOLDERS)
