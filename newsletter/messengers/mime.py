"""One recipient's RFC 5322 message, shared by the smtp and maildir messengers so both carry the same content.

Every header is written by the standard library's header machinery: display
text (Subject, display names, the List-Id phrase) as it is when it is plain
ASCII, else as RFC 2047 encoded words (`email.header.Header`); addresses
through `email.headerregistry.Address`, raw UTF-8 only when an address is not
ASCII (the smtp messenger then needs SMTPUTF8 from the relay). Text is first
normalised by `header_text`, so no value can break a line or inject a header.

The constant part of a message (Subject, From, List-Id...) is built once per
rendered variant; per recipient only the tokens are filled, the To and
Message-ID written, and the two bodies quoted-printable encoded in C
(binascii). Building each message through `email.message.EmailMessage`
costs about 5 ms for a digest; this costs a fraction of that.
"""

from __future__ import annotations

import binascii
import email.policy
import re
import secrets
from email.header import Header
from email.headerregistry import Address
from email.utils import format_datetime, localtime
from urllib.parse import urlsplit

from ..model import Envelope, Notice, Rendered, Sender

POLICY = email.policy.SMTP.clone(linesep="\n")
MAX_LINE = POLICY.max_line_length  # 78: RFC 5322's advised length; encoded words keep within it
_LONGEST_WORD = 60  # a plain word longer than this could not be folded onto a line of its own
_CACHE_LIMIT = 64
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # Unicode Cc, Zl and Zp
_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(" {2,}")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ATOMS = re.compile(rf"({_ATEXT}( {_ATEXT})*)?")  # a display name headerregistry writes unquoted
_DOT_ATOM = re.compile(rf"{_ATEXT}(\.{_ATEXT})*@{_ATEXT}(\.{_ATEXT})*")
_PART = 'Content-Type: text/{}; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n'


def header_text(text: str) -> str:
    """The normal form of any display text put in a header (and what a reader's client shows back).

    Control characters (Unicode Cc: CR, LF, tab, NUL, DEL, C1) and line or
    paragraph separators become spaces, runs of spaces become one, and spaces
    at both ends go; a lone surrogate becomes U+FFFD. Everything else (other
    spaces, right-to-left text, combining marks, emoji, `=?`) is kept as is.
    """
    if text.isascii() and text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # already in normal form: the usual case, checked without a regular expression
    text = _LINE_BREAKING.sub(" ", _SURROGATES.sub("\ufffd", text))
    return _SPACES.sub(" ", text).strip(" ")


def _plain(text: str) -> bool:
    """Text a header may carry as it is: printable ASCII in short words, nothing a decoder would take
    for an encoded word."""
    return (text.isascii() and text.isprintable() and "=?" not in text
            and all(len(word) <= _LONGEST_WORD for word in text.split(" ")))


def _folded(name: str, text: str, charset: str = "utf-8") -> str:
    """`text` for a header called `name`: as it is (us-ascii) or as RFC 2047 encoded words (utf-8), folded at
    spaces. (email.policy's folder may fold right after the colon, which a parser reads back as a space.)"""
    return Header(text, charset, header_name=name).encode(splitchars=" ", linesep="\n")


def text_header(name: str, text: str) -> str:
    """An unstructured header (Subject) holding exactly `header_text(text)`."""
    text = header_text(text)
    return f"{name}: {_folded(name, text, 'us-ascii' if _plain(text) else 'utf-8')}\n"


def _with_phrase(name: str, display: str, bracketed: str) -> str:
    """`name: phrase <bracketed>`, the phrase quoted by headerregistry when plain, else encoded words."""
    display = header_text(display)
    if not display:
        return f"{name}: <{bracketed}>\n"
    if _plain(display):
        # headerregistry's own quoting of a display name (a quoted string when it holds specials)
        phrase = str(Address(display_name=display, username="x", domain="x"))[: -len(" <x@x>")]
        if len(name) + 2 + len(phrase) > MAX_LINE:
            phrase = _folded(name, display)
    else:
        phrase = _folded(name, display)
    last = len(name) + 2 + len(phrase) if "\n" not in phrase else len(phrase.rpartition("\n")[2])
    fold = " " if last + len(bracketed) + 3 <= MAX_LINE else "\n "
    return f"{name}: {phrase}{fold}<{bracketed}>\n"


def address_header(name: str, display: str, address: str) -> str:
    """A one-mailbox header (From, To, Reply-To): the display name as `_with_phrase` writes it."""
    display = header_text(display)
    if (_DOT_ATOM.fullmatch(address) and _ATOMS.fullmatch(display) and "=?" not in display
            and len(name) + len(display) + len(address) < 75):
        # What headerregistry writes for atoms and a dot-atom address (tests check it is the same), without
        # building an Address: this runs once per recipient.
        return f"{name}: {display} <{address}>\n" if display else f"{name}: {address}\n"
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or _LINE_BREAKING.search(address) or " " in address:
        raise ValueError(f"{name}: not an address: {address!r}")
    spec = Address(username=local, domain=domain).addr_spec
    return _with_phrase(name, display, spec) if display else f"{name}: {spec}\n"


def _ascii_host(host: str) -> str:
    """A host name for Message-ID and List-Id (IDNA when it is not ASCII)."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def _common_headers(subject: str, sender: Sender) -> list[str]:
    headers = [text_header("Subject", subject), address_header("From", sender.name, sender.email)]
    if sender.reply_to:
        headers.append(address_header("Reply-To", "", sender.reply_to))
    return headers


def _message_id(tag: str, domain: str) -> str:
    return f"Message-ID: <{tag}.{secrets.token_hex(6)}@{domain}>\n"


class MimeTemplate:
    """The parts of a variant's message that are the same for every recipient."""

    def __init__(self, rendered: Rendered, sender: Sender):
        self.rendered, self.sender = rendered, sender
        self.domain = _ascii_host(sender.email.rpartition("@")[2] or "localhost")
        host = _ascii_host(urlsplit(sender.site_url).hostname or self.domain)
        # The List-Id names the cadence only: a segment would tell every receiving provider a diagnosis.
        cadence = rendered.cadence
        headers = _common_headers(rendered.subject, sender) + [
            _with_phrase("List-Id", f"{sender.name} {cadence}", f"{cadence}.{host}"),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n",
            f"X-Newsletter-Issue: {rendered.issue_id}\n", "MIME-Version: 1.0\n"]
        self.head = "".join(headers).encode("utf-8")
        self.boundary = b = "=_nl_" + secrets.token_hex(12)
        self.content_type = f'Content-Type: multipart/alternative; boundary="{b}"\n\n'
        self.text_head = f"--{b}\n{_PART.format('plain')}\n".encode()
        self.html_head = f"\n--{b}\n{_PART.format('html')}\n".encode()
        self.tail = f"\n--{b}--\n".encode()

    def message_bytes(self, envelope: Envelope) -> bytes:
        html, text = self.rendered.personalise(envelope.values)
        tag = self.sender.tag(envelope.delivery_id)  # signed: bounces are matched by it (sources/bounces.py)
        head = (address_header("To", envelope.name, envelope.email)
                + f"Date: {format_datetime(localtime())}\n"
                + _message_id(f"{self.rendered.issue_id}.{tag}", self.domain)
                + f"List-Unsubscribe: <{envelope.unsubscribe_url}>\n"
                f"X-Newsletter-Delivery: {tag}\n{self.content_type}").encode("utf-8")
        return b"".join((self.head, head, self.text_head, _qp(text), self.html_head, _qp(html), self.tail))


def _qp(body: str) -> bytes:
    return binascii.b2a_qp(body.encode("utf-8"), istext=True)


_templates: dict[int, tuple[Rendered, Sender, MimeTemplate]] = {}


def template_for(rendered: Rendered, sender: Sender) -> MimeTemplate:
    """One MimeTemplate per rendered variant (and sender), reused for all its recipients."""
    key = id(rendered)
    hit = _templates.get(key)
    if hit is None or hit[0] is not rendered or hit[1] is not sender:
        if len(_templates) >= _CACHE_LIMIT:
            _templates.clear()
        hit = _templates[key] = (rendered, sender, MimeTemplate(rendered, sender))
    return hit[2]


def message_bytes(rendered: Rendered, envelope: Envelope, sender: Sender) -> bytes:
    return template_for(rendered, sender).message_bytes(envelope)


def notice_bytes(notice: Notice, sender: Sender) -> bytes:
    """A plain-text one-off message, its headers written as a digest's are."""
    domain = _ascii_host(sender.email.rpartition("@")[2] or "localhost")
    head = "".join(_common_headers(notice.subject, sender)) + address_header("To", "", notice.to) + (
        f"Date: {format_datetime(localtime())}\n" + _message_id(notice.category, domain)
        + f"Auto-Submitted: auto-generated\nMIME-Version: 1.0\n{_PART.format('plain')}\n")
    return head.encode("utf-8") + _qp(notice.text)
