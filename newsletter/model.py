"""The types every stage shares: statuses, placeholders, a rendered variant, what messengers take and give.

It imports nothing of ours, so any stage may import it without pulling in
another stage (a messenger needs `Rendered`, not Jinja, MJML and premailer).
"""

from __future__ import annotations

import hashlib
import hmac
import html as htmllib
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol, Sequence

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
SUPPRESSED = ("unsubscribed", "bounced", "complained")
ISSUE_STATUSES = ("draft", "approved", "sending", "sent", "cancelled")
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "unknown", "skipped", "deferred")
#: While any delivery is in one of these, its issue is not `sent` (it shows as "partly sent").
OPEN_DELIVERY = ("pending", "sending", "deferred", "unknown")

# -- personalisation -----------------------------------------------------------

#: Per-recipient placeholders, and the keys of a recipient's values. They sit inside absolute URLs so
#: premailer's base_url rewriting leaves them alone, and SendGrid substitutes them as is. The renderer
#: writes them only where its templates put them; content can never spell one (below).
UNSUB_TOKEN = "-nl-utok-"
PREFS_TOKEN = "-nl-ptok-"
GREETING_HTML = "-nl-hgreet-"
GREETING_TEXT = "-nl-tgreet-"
PLACEHOLDERS = (UNSUB_TOKEN, PREFS_TOKEN, GREETING_HTML, GREETING_TEXT)
#: Splits a text at its placeholders, keeping them: they are the odd pieces (fill_placeholders).
PLACEHOLDER_SPLIT = re.compile("(" + "|".join(re.escape(key) for key in PLACEHOLDERS) + ")")
#: Every placeholder starts "-nl-": a hyphen that would start "nl-" is what content must never leave.
_PLACEHOLDER_START = re.compile(r"-(?=nl-)")


def neutralise_html(html: str) -> str:
    """No placeholder left in finished HTML, and nothing a reader sees changed: each hyphen that would
    start one becomes `&#45;` (the same hyphen to a browser, in text and attributes alike)."""
    return _PLACEHOLDER_START.sub("&#45;", html)


def neutralise_text(text: str) -> str:
    """The same for finished text (or a header): a zero-width non-joiner after each such hyphen."""
    return _PLACEHOLDER_START.sub("-\u200c", text)


def greeting(name: str) -> tuple[str, str]:
    """(html, text) greeting for one recipient (it runs for each one: the usual case skips the patterns)."""
    name = " ".join(name.split())
    if not name:
        return "Hello,", "Hello,"
    text = "Hello " + name + ","
    if "-nl-" in text:  # exactly what the placeholder pattern matches; escaping never makes one
        return neutralise_html(htmllib.escape(text)), neutralise_text(text)
    return htmllib.escape(text), text


def recipient_values(unsubscribe_token: str, preferences_token: str, name: str) -> dict[str, str]:
    """What fills one copy's placeholders: the two link tokens and the greeting."""
    ghtml, gtext = greeting(name)
    return {UNSUB_TOKEN: unsubscribe_token, PREFS_TOKEN: preferences_token, GREETING_HTML: ghtml,
            GREETING_TEXT: gtext}


@dataclass
class Rendered:
    """One rendered variant of an issue, with placeholders left for each recipient."""
    issue_id: int
    segment: str
    cadence: str
    variant: str
    subject: str
    preheader: str
    html: str
    text: str
    summary_ids: list[int]
    full_cards: int
    _split: dict[str, tuple[str, list[str]]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def personalise(self, values: Mapping[str, str]) -> tuple[str, str]:
        """Fill this recipient's tokens and greeting: string substitution only, no template work.

        Each part is split at its placeholders once (and again only if the part is replaced), so a
        recipient costs one join per part instead of a scan per placeholder."""
        return fill_placeholders(self._pieces("html"), values), fill_placeholders(self._pieces("text"), values)

    def _pieces(self, part: str) -> list[str]:
        content = getattr(self, part)
        cached = self._split.get(part)
        if cached is None or cached[0] is not content:
            cached = self._split[part] = (content, PLACEHOLDER_SPLIT.split(content))
        return cached[1]


#: Given a subscriber's topics (and slugs they already received elsewhere), their variant (None: nothing left).
VariantFor = Callable[..., "Rendered | None"]


def fill_placeholders(pieces: list[str], values: Mapping[str, str]) -> str:
    """Odd positions of a placeholder split are the placeholders themselves."""
    return "".join(values[piece] if i % 2 else piece for i, piece in enumerate(pieces))


# -- what messengers take and give -----------------------------------------------

FIRST_RETRY = 300.0  # seconds; the ten-minute cron line picks a first deferral up at its next run
LONGEST_RETRY = 4 * 3600.0


def retry_delay(attempts: int) -> float:
    """Seconds before something deferred `attempts` times (a delivery, a queued confirmation) is tried again:
    5 min, 10, 20... at most 4 h."""
    return min(LONGEST_RETRY, FIRST_RETRY * 2 ** max(0, attempts - 1))


@dataclass(slots=True)
class Envelope:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    values: dict[str, str]  # placeholder -> this recipient's value
    unsubscribe_url: str


class Recipients(Sequence):
    """One batch's recipients as columns: delivery and subscriber ids, addresses, names, each placeholder's
    values (PLACEHOLDERS order) and the unsubscribe links.

    Held as columns because the dispatcher makes a thousand at a time and a million a run: a few list
    builds per batch instead of an Envelope and a values dict per recipient, which were most of what the
    whole run's floor (bench_run_floor) does without. The SendGrid writer takes the columns as they are; a
    messenger that writes one message each (SMTP, Maildir) indexes or iterates and gets Envelopes, made
    on demand."""

    __slots__ = ("delivery_ids", "subscriber_ids", "emails", "names", "values", "unsubscribe_urls")

    def __init__(self, delivery_ids: list[int], subscriber_ids: list[int], emails: list[str], names: list[str],
                 values: list[list[str]], unsubscribe_urls: list[str]):
        count = len(delivery_ids)
        if len(values) != len(PLACEHOLDERS) or any(len(column) != count for column in
                                                   (subscriber_ids, emails, names, unsubscribe_urls, *values)):
            raise ValueError(f"recipients: {len(PLACEHOLDERS)} value columns and every column {count} long")
        self.delivery_ids, self.subscriber_ids, self.emails, self.names = delivery_ids, subscriber_ids, emails, names
        self.values, self.unsubscribe_urls = values, unsubscribe_urls

    @classmethod
    def signed(cls, rows: Sequence[Sequence], link_tokens: Callable[[int], tuple[str, str]],
               unsubscribe_base: str) -> "Recipients":
        """From rows that start (delivery id, subscriber id, email, name or None): the two link tokens and
        the greeting made a column at a time; what Dispatcher.make_envelope makes for each (tests compare)."""
        if not rows:
            return cls([], [], [], [], [[] for _ in PLACEHOLDERS], [])
        ids, sids, emails, names = (list(column) for column in list(zip(*rows))[:4])
        names = [name or "" for name in names]
        utoks, ptoks = (list(column) for column in zip(*map(link_tokens, sids)))
        greetings = list(map(greeting, names))
        return cls(ids, sids, emails, names, [utoks, ptoks, [g[0] for g in greetings], [g[1] for g in greetings]],
                   [unsubscribe_base + utok for utok in utoks])

    @classmethod
    def of(cls, envelopes: Sequence[Envelope]) -> "Recipients":
        """Columns for any sequence of Envelopes (itself when it already is one)."""
        if isinstance(envelopes, Recipients):
            return envelopes
        envelopes = list(envelopes)
        return cls([e.delivery_id for e in envelopes], [e.subscriber_id for e in envelopes],
                   [e.email for e in envelopes], [e.name for e in envelopes],
                   [[e.values[key] for e in envelopes] for key in PLACEHOLDERS],
                   [e.unsubscribe_url for e in envelopes])

    def at(self, positions: Sequence[int]) -> "Recipients":
        """The recipients at those positions, in that order."""
        def pick(column: list) -> list:
            return [column[i] for i in positions]
        return Recipients(pick(self.delivery_ids), pick(self.subscriber_ids), pick(self.emails), pick(self.names),
                          [pick(column) for column in self.values], pick(self.unsubscribe_urls))

    def __len__(self) -> int:
        return len(self.delivery_ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.at(range(len(self))[index])
        return Envelope(self.delivery_ids[index], self.subscriber_ids[index], self.emails[index], self.names[index],
                        {key: column[index] for key, column in zip(PLACEHOLDERS, self.values)},
                        self.unsubscribe_urls[index])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass
class Outcome:
    #: sent; failed (refused for good); unknown (no answer after the message went out); deferred (a
    #: transient failure before it was handed over: a later run retries it); pending (not attempted).
    status: str
    delivery_ids: list[int]
    provider_id: str | None = None
    error: str | None = None


#: The fields of a provider event we use (verdicts, reports, the ledger); everything else (the reader's IP and
#: user agent, the URL they clicked, SendGrid's own bookkeeping) is dropped before an event is stored.
EVENT_FIELDS = ("event", "sg_event_id", "sg_message_id", "timestamp", "type", "reason", "status", "classification",
                "bounce_classification", "issue_id", "subscriber_id", "delivery_id")


def kept_event_fields(event: object) -> object:
    """An event (or a list of them) with only EVENT_FIELDS; anything that is not an object is kept as it is."""
    if isinstance(event, dict):
        return {key: value for key, value in event.items() if key in EVENT_FIELDS}
    if isinstance(event, list):
        return [kept_event_fields(item) for item in event]
    return event


# -- keyed codes ---------------------------------------------------------------

def derive_key(secret: str, purpose: str) -> bytes:
    """A key of its own for each use of NEWSLETTER_SECRET (list codes, the suppression list), so one
    value never tells anything about another."""
    return hmac.new(secret.encode(), f"newsletter {purpose}".encode(), hashlib.sha256).digest()


def list_code(key: bytes, segment: str, cadence: str) -> str:
    """The opaque name of a (segment, cadence) list that third parties see: nobody without the key can tell
    which segment it is, so the code reveals no diagnosis."""
    return "l" + hmac.new(key, f"{segment}\x00{cadence}".encode(), hashlib.sha256).hexdigest()[:15]


TAG_MAC_LENGTH = 12  # hex digits: 48 bits, lowercase, since a VERP local part may come back in any case
#: What a delivery tag looks like inside a returned message: the id, then (when signed) its MAC.
#: ASCII digits only: `\d` would take other scripts' digits too, which no tag of ours holds.
DELIVERY_TAG = r"[0-9]{1,18}(?:-[0-9a-fA-F]{%d})?" % TAG_MAC_LENGTH


def delivery_tag_key(secret: str | None) -> bytes:
    """The key that signs delivery tags (none without NEWSLETTER_SECRET: tags are then the bare ids)."""
    return derive_key(secret, "delivery tags") if secret else b""


def delivery_tag(key: bytes, delivery_id: int) -> str:
    """A delivery as we name it in a message (Message-ID, X-Newsletter-Delivery, the VERP address): its id and a
    MAC of it, so a forged bounce or complaint cannot mark a reader by guessing the next delivery number."""
    if not key:
        return str(delivery_id)
    mac = hmac.new(key, str(delivery_id).encode(), hashlib.sha256).hexdigest()[:TAG_MAC_LENGTH]
    return f"{delivery_id}-{mac}"


def read_delivery_tag(key: bytes, tag: str) -> int | None:
    """The delivery id a tag names, or None when it does not verify (with a key, an unsigned id never does)."""
    number, _, _mac = tag.lower().partition("-")
    if not (tag.isascii() and number.isdigit()):
        return None
    return int(number) if hmac.compare_digest(delivery_tag(key, int(number)), tag.lower()) else None


@dataclass
class Sender:
    email: str
    name: str = ""
    reply_to: str = ""
    site_url: str = ""
    bounce_address: str = ""  # VERP base: a delivery goes out with MAIL FROM local+<delivery tag>@domain
    tag_key: bytes = b""  # signs the delivery tags in our messages (delivery_tag_key, delivery_tag)

    def tag(self, delivery_id: int) -> str:
        return delivery_tag(self.tag_key, delivery_id)

    def envelope_from(self, delivery_id: int | None = None) -> str:
        """The SMTP envelope sender (MAIL FROM): with a bounce_address, a delivery's VERP address, which
        sources/bounces.py `verp_deliveries` reads back from a bounce; otherwise the From address."""
        local, at, domain = self.bounce_address.rpartition("@")
        if not (local and at and domain):
            return self.email
        return f"{local}+{self.tag(delivery_id)}@{domain}" if delivery_id else self.bounce_address


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


class Messenger(Protocol):
    """The one protocol every messenger implements; the dispatcher sees nothing else."""
    name: str
    batch_size: int

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """`envelopes`: any Sequence[Envelope]; from the dispatcher a Recipients (columns; Envelopes when
        indexed or iterated), from a welcome or a test send a list."""

    def send_notice(self, notice: Notice) -> Outcome: ...

    def close(self) -> None: ...


def stop_mid_batch(exc: FatalSendError, outcomes: list[Outcome], not_attempted: Iterable[int]) -> Outcome:
    """The rule for a fatal error (refused credentials) in the middle of a batch.

    If nothing of the batch was handed over, re-raise: the dispatcher puts the
    batch back to pending. Otherwise what went out must be recorded, so the rest
    is reported failed and the caller raises `exc` at its next batch.
    """
    if all(o.status == "failed" for o in outcomes):
        raise exc
    return Outcome("failed", list(not_attempted), error=f"{exc} (not attempted: the run stopped)")
