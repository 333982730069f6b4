"""Message headers whatever the text: through the real Maildir messenger and a real SMTP server (aiosmtpd).

Every message parses under `email.policy.strict` with no defect; the decoded
Subject, From and To equal what went in after `header_text` (control
characters and line breaks to spaces, runs of spaces to one, ends trimmed);
no text can add a header; display text never needs SMTPUTF8.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import re
from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from hypothesis import given, strategies as st

from newsletter.messengers.maildir import MaildirMessenger
from newsletter.messengers.mime import POLICY, address_header, header_text, notice_bytes
from newsletter.messengers.smtp import SmtpMessenger
from newsletter.model import Envelope, Notice, Rendered, Sender, recipient_values
from newsletter.sources.subscribers import SubscriberError, normalise_email
from tests.conftest import SAMPLE_NOW, load_samples, read_maildir

STRICT = email.policy.strict
#: Pieces real text brings: accents, typographic marks, the "…" of a shortened subject, long unbroken words,
#: emoji, right-to-left text, combining marks, things a decoder or parser could take for syntax, and line breaks.
PIECES = ["é", "’", "–", "…", "«\u00a0", "ß", "x" * 90, "é" * 70, "😀", "👩\u200d⚕️", "مرحبا", "עברית", "\u202e",
          "e\u0301", "\u0308", "=?", "?=", "=?utf-8?q?Hi?=", "=?utf-8?b?SGk=?=", "\r\n", "\n", "\r", "\t", "\x00",
          "\x85", "\u2028", "\nBcc: evil@example.org", '"', "\\", "<", ">", ",", ";", ":", "(", ")", "@", ".", " ",
          "  ", "Weekly digest", "MS"]
TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(st.characters(exclude_categories=("Cs",)), max_size=12)),
                max_size=12).map("".join)
LOCAL = st.one_of(st.from_regex(r"\A[a-z0-9]([a-z0-9+_-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,8})?\Z"),
                  st.sampled_from(["zoë", "jürgen", "用户", "δοκιμή", "o'brien", "a+tag"]))
DOMAIN = st.sampled_from(["example.org", "mail.example.com", "exämple.org", "例え.jp"])
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
#: Headers a message carries, each once; anything else would be an injected header.
DIGEST_HEADERS = {"subject", "from", "reply-to", "list-id", "list-unsubscribe-post", "x-newsletter-issue",
                  "mime-version", "to", "date", "message-id", "list-unsubscribe", "x-newsletter-delivery",
                  "content-type"}


def valid(address: str) -> str:
    try:
        return normalise_email(address)
    except SubscriberError:
        return ""


def rendered(subject: str) -> Rendered:
    return Rendered(issue_id=7, segment="patients", cadence="weekly", variant="all", subject=subject, preheader="",
                    html="<p>Hello -nl-hgreet-</p>", text="-nl-tgreet-\nBody", summary_ids=[1], full_cards=1)


def envelope(address: str, name: str, delivery_id: int = 1) -> Envelope:
    return Envelope(delivery_id, 3, address, name, recipient_values("u-token", "p-token", name),
                    "https://digest.example.org/u/u-token")


def check_message(raw: bytes, expected_headers: set[str]) -> email.message.EmailMessage:
    """Parses under the strict policy, no header has a defect, no line is too long, nothing was injected.

    A message whose head is not ASCII is an internationalised one (RFC 6532, sent over SMTPUTF8): it is read
    as UTF-8 text, and the one defect Python's parser reports for any non-ASCII local part is allowed."""
    head = raw.split(b"\n\n", 1)[0].replace(b"\r\n", b"\n")
    assert all(len(line) <= 998 for line in head.split(b"\n"))
    if head.isascii():
        msg = email.message_from_bytes(raw, policy=STRICT)
    else:
        msg = email.message_from_string(raw.decode("utf-8"), policy=STRICT.clone(utf8=True))
    names = [name.lower() for name in msg.keys()]
    assert sorted(names) == sorted(expected_headers), names
    for name in msg.keys():
        defects = [d for d in msg[name].defects if not isinstance(d, email.errors.NonASCIILocalPartDefect)]
        assert defects == [], (name, defects)
    addresses = [a.addr_spec for field in ("From", "To", "Reply-To") if msg[field] for a in msg[field].addresses]
    # Only a non-ASCII address may put raw UTF-8 in a header; display text is always RFC 2047.
    assert head.isascii() == all(a.isascii() for a in addresses)
    return msg


def check_mailbox(msg: email.message.EmailMessage, field: str, name: str, address: str) -> None:
    [mailbox] = msg[field].addresses
    assert mailbox.addr_spec == address
    assert decoded_display_name(msg, field) == header_text(name)


def decoded_display_name(msg: email.message.EmailMessage, field: str) -> str:
    """The display name as a mail client decodes it.

    Python 3.11's parser keeps the white space between two adjacent encoded words of a display name, against
    RFC 2047 (6.2: it is ignored, as mail clients do), so an encoded display name is decoded with the standard
    library's RFC 2047 decoder (`email.header`) instead; a plain one (atoms, quoted string) by the parser."""
    [value] = [v.replace("\r\n", "").replace("\n", "") for k, v in msg.raw_items() if k.lower() == field.lower()]
    phrase = value.rpartition("<")[0].strip() if value.endswith(">") else ""
    if "=?" in phrase:
        return str(make_header(decode_header(phrase)))
    return msg[field].addresses[0].display_name


def check_digest(raw: bytes, subject: str, sender: Sender, name: str, address: str) -> None:
    msg = check_message(raw, DIGEST_HEADERS if sender.reply_to else DIGEST_HEADERS - {"reply-to"})
    assert msg["Subject"] == header_text(subject)
    check_mailbox(msg, "From", sender.name, sender.email)
    check_mailbox(msg, "To", name, address)
    assert msg["List-Id"].endswith("<weekly.digest.example.org>")
    if "patients" not in sender.name:  # a segment would tell the receiving provider a diagnosis
        assert "patients" not in msg["List-Id"]
    text, html = (part.get_content() for part in msg.iter_parts())
    assert "Body" in text and "Hello" in html


def test_header_text_folds_controls_and_line_breaks_to_one_line():
    assert header_text("  Café\r\nBcc: x@y\t\tend \u2028 ") == "Café Bcc: x@y end"
    assert header_text("a\u00a0b =?utf-8?q?x?=") == "a\u00a0b =?utf-8?q?x?="  # other spaces and `=?` kept
    assert header_text("\ud800x") == "\ufffdx"


@pytest.mark.parametrize("subject", ["Sclérose en plaques", "L’étude", "2–3 summaries", "A shortened title…",
                                     "Ação", "¿Qué?"])
def test_a_short_subject_with_one_non_ascii_character_is_encoded(subject, tmp_path):
    """Today's failure: a Subject of 78 characters or fewer with an accent failed the whole issue."""
    messenger = MaildirMessenger(tmp_path / "outbox", Sender("digest@example.org", "MS Research Digest",
                                                              site_url="https://digest.example.org"))
    [outcome] = messenger.send(rendered(subject), [envelope("reader@example.org", "Reader")])
    assert outcome.status == "sent", outcome.error
    [msg] = read_maildir(tmp_path / "outbox")
    assert msg["Subject"] == subject
    check_message(messenger.box.get_bytes(outcome.provider_id), DIGEST_HEADERS - {"reply-to"})


@given(subject=TEXT, sender_name=TEXT, name=TEXT, address=ADDRESS, sender_address=ADDRESS,
       reply_to=st.one_of(st.just(""), ADDRESS))
def test_any_text_makes_a_valid_message_in_the_maildir(tmp_path_factory, subject, sender_name, name, address,
                                                       sender_address, reply_to):
    address, sender_address, reply_to = valid(address), valid(sender_address), reply_to and valid(reply_to)
    if not address or not sender_address:
        return
    sender = Sender(sender_address, sender_name, reply_to, "https://digest.example.org")
    outbox = tmp_path_factory.mktemp("site") / "outbox"
    messenger = MaildirMessenger(outbox, sender)
    [outcome] = messenger.send(rendered(subject), [envelope(address, name)])
    assert outcome.status == "sent", outcome.error
    check_digest(messenger.box.get_bytes(outcome.provider_id), subject, sender, name, address)
    # A one-off notice (its Subject names the site) is written the same way.
    notice = messenger.send_notice(Notice(address, f"Confirm your subscription to {sender_name}", "Hello"))
    assert notice.status == "sent", notice.error
    msg = check_message(messenger.box.get_bytes(notice.provider_id),
                        {"subject", "from", "to", "date", "message-id", "auto-submitted", "mime-version",
                         "content-type", "content-transfer-encoding"} | ({"reply-to"} if reply_to else set()))
    assert msg["Subject"] == header_text(f"Confirm your subscription to {sender_name}")
    check_mailbox(msg, "From", sender_name, sender_address)
    assert msg["To"].addresses[0].addr_spec == address and msg.get_content() == "Hello"
    messenger.close()


@pytest.mark.parametrize("utf8", [False, True], ids=["ascii relay", "SMTPUTF8 relay"])
def test_any_text_goes_through_smtp(request, utf8):
    """Through aiosmtpd: display text needs nothing of the relay; a non-ASCII address goes only over SMTPUTF8."""
    server = request.getfixturevalue("smtp_server" if utf8 else "smtp_server_ascii")

    @given(subject=TEXT, sender_name=TEXT, name=TEXT, address=ADDRESS)
    def send(subject, sender_name, name, address):
        address = valid(address)
        if not address:
            return
        sender = Sender("digest@example.org", sender_name, "", "https://digest.example.org")
        messenger = SmtpMessenger(server.host, server.port, sender, security="none", sleep=lambda s: None)
        before = server.count()
        try:
            [outcome] = messenger.send(rendered(subject), [envelope(address, name)])
        finally:
            messenger.close()
        if not address.isascii() and not utf8:
            assert outcome.status == "failed" and "SMTPUTF8" in outcome.error
            assert server.count() == before
            return
        assert outcome.status == "sent", outcome.error
        msg = server.messages[-1]
        assert msg.rcpt_tos == [address]
        check_digest(msg.raw, subject, sender, name, address)

    send()


def test_a_french_issue_is_sent_whole_through_the_digest(make_site, tmp_path):
    """The whole run with accented titles and names: every message sent, the subject decoded intact."""
    ctx = make_site(sender_name="Digest « SEP » – Montréal")
    load_samples(ctx)
    ctx.store.upsert_subscribers([{"email": "zoe@example.org", "name": "Zoë\nLefèvre", "segment": "patients",
                                   "cadence": "weekly", "topics": [], "status": "active"}])
    with ctx.store.transaction() as conn:
        conn.execute("UPDATE summaries SET title = 'Sclérose en plaques : l’activité – résultats' || id")
    from newsletter.digest import DigestRunner
    report = DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW)
    assert report.tally.failed == 0 and report.tally.sent > 0
    messages = read_maildir(ctx.config.outbox)
    assert len(messages) == report.tally.sent
    assert all(re.search("Sclérose en plaques : l’activité – résultats\\d+", m["Subject"]) for m in messages)
    assert all(m["From"].addresses[0].display_name == "Digest « SEP » – Montréal" for m in messages)
    [zoe] = [m for m in messages if m["To"].addresses[0].addr_spec == "zoe@example.org"]
    assert zoe["To"].addresses[0].display_name == "Zoë Lefèvre"


def test_notice_bytes_encode_a_non_ascii_subject():
    raw = notice_bytes(Notice("a@example.org", "Confirmez votre inscription à « Été »", "Bonjour"),
                       Sender("digest@example.org", "Été"))
    assert raw.split(b"\n\n")[0].isascii()
    msg = email.message_from_bytes(raw, policy=STRICT)
    assert msg["Subject"] == "Confirmez votre inscription à « Été »" and msg.get_content() == "Bonjour"


ATEXT = st.text(st.sampled_from("abcXYZ019!#$%&'*+/=?^_`{|}~-"), min_size=1, max_size=8)


@given(words=st.lists(ATEXT, max_size=4), local=st.lists(ATEXT, min_size=1, max_size=2),
       domain=st.lists(ATEXT, min_size=1, max_size=3))
def test_the_per_recipient_shortcut_writes_what_headerregistry_writes(words, local, domain):
    """address_header skips building an Address for atoms and a dot-atom address; the bytes are the same."""
    name, local_part, domain_part = " ".join(words), ".".join(local), ".".join(domain)
    expected = POLICY.header_factory("To", [Address(display_name=name, username=local_part, domain=domain_part)])
    written = address_header("To", name, f"{local_part}@{domain_part}")
    if "=?" not in name:  # an encoded-word look-alike is always encoded instead
        assert written == expected.fold(policy=POLICY)
    msg = email.message_from_string(written + "\n", policy=STRICT)
    assert msg["To"].addresses[0].addr_spec == f"{local_part}@{domain_part}"
    assert decoded_display_name(msg, "To") == name
