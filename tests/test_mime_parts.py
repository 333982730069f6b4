"""A message built from parts encoded once per variant is byte for byte the message built whole.

`MimeTemplate` quoted-printable encodes each body's lines without a placeholder once per variant and
converts them to the SMTP wire form once; per recipient it encodes only the lines with one. These
tests hold that to the whole-message path (`_whole`: both bodies filled, then b2a_qp, then wire_bytes,
as every message was written before) over hostile bodies and values: dots and white space at line
ends, lines longer than 76 characters, `=`, NUL, CR anywhere, non-ASCII, placeholders side by side.
"""

from __future__ import annotations

import binascii
import re
import smtplib

from hypothesis import given, settings, strategies as st

from newsletter.messengers.mime import MimeTemplate, wire_bytes
from newsletter.messengers.smtp import _PLAIN_ADDRESS
from newsletter.model import PLACEHOLDERS, Envelope, Rendered, Sender, recipient_values

FRAGMENTS = ["a", "word", " ", "\t", ".", "..", "\n", "\n.", ".\n", " \n", "\t\n", "=", "=\n", "\x00", "é", "😀",
             "\u2028", "x" * 75, "y" * 160, "<a href=\"https://x.example/p/", "\">", "-nl-", "nl-"]
BODY = st.lists(st.sampled_from(FRAGMENTS + list(PLACEHOLDERS) * 3 + ["\r", "\r\n"]), max_size=60).map("".join)
BODY_NO_CR = st.lists(st.sampled_from(FRAGMENTS + list(PLACEHOLDERS) * 3), max_size=60).map("".join)
VALUE = st.one_of(st.text(max_size=30), st.lists(st.sampled_from(FRAGMENTS + ["\r"]), max_size=8).map("".join))
SENDER = Sender("digest@example.org", "MS Research Digest", site_url="https://digest.example.org")
VARIABLE = re.compile(rb"(Date|Message-ID): [^\r\n]*")


def normal(message: bytes) -> bytes:
    """The two headers that differ between two writings of one message (the time, a random id) blanked."""
    return VARIABLE.sub(rb"\1: -", message)


def rendered(text: str, html: str) -> Rendered:
    return Rendered(issue_id=7, segment="patients", cadence="weekly", variant="all", subject="Weekly digest",
                    preheader="", html=html, text=text, summary_ids=[1], full_cards=1)


def envelope(values: dict[str, str], name: str = "Reader") -> Envelope:
    return Envelope(11, 22, "reader@example.org", name, values, "https://digest.example.org/u/22.tok")


def check_same(template: MimeTemplate, env: Envelope) -> None:
    whole = template._whole(env)
    assert normal(template.message_bytes(env)) == normal(whole)
    wire = template.wire_message(env)
    assert normal(wire) == normal(wire_bytes(whole))
    assert wire.endswith(b"\r\n.\r\n") and b"\r\n.\r\n" not in wire[:-3]


@settings(max_examples=300)
@given(text=BODY, html=BODY, values=st.lists(VALUE, min_size=4, max_size=4))
def test_parts_make_the_same_bytes_as_the_whole_message(text, html, values):
    template = MimeTemplate(rendered(text, html), SENDER)
    check_same(template, envelope(dict(zip(PLACEHOLDERS, values))))


@settings(max_examples=200)
@given(text=BODY_NO_CR, html=BODY_NO_CR, names=st.lists(st.text(max_size=20), min_size=1, max_size=4))
def test_one_template_serves_every_recipient_with_the_bodies_encoded_once(text, html, names):
    """The usual case (no CR): the bodies are split once and reused; each recipient's own lines differ."""
    template = MimeTemplate(rendered(text, html), SENDER)
    for i, name in enumerate(names):
        env = envelope(recipient_values(f"{i}.utok", f"{i}.ptok", name), name)
        check_same(template, env)
        assert template.bodies is not None
        filled_html, filled_text = template.rendered.personalise(env.values)
        qp_text, qp_html = binascii.b2a_qp(filled_text.encode(), istext=True), binascii.b2a_qp(
            filled_html.encode(), istext=True)
        assert qp_text in template.message_bytes(env) and qp_html in template.message_bytes(env)


def test_a_body_replaced_after_the_first_message_is_split_again():
    template = MimeTemplate(rendered("-nl-tgreet-\nold\n", "<p>-nl-hgreet-</p>\n"), SENDER)
    env = envelope(recipient_values("u", "p", "Ann"))
    assert b"old" in template.message_bytes(env)
    template.rendered.text = "-nl-tgreet-\nnew\n"
    assert b"new" in template.message_bytes(env) and b"old" not in template.wire_message(env)
    check_same(template, env)


@settings(max_examples=500)
@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
def test_a_plain_address_is_what_smtplib_would_have_quoted(address):
    """The smtp messenger writes MAIL FROM and RCPT TO itself for these (skipping smtplib's parser)."""
    assert smtplib.quoteaddr(address) == f"<{address}>"
