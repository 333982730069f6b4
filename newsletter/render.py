"""Render a digest once per (issue, segment, variant): Jinja2 -> MJML -> mjml-python -> premailer.

The result holds a few placeholders (tokens and greeting) that each
recipient's copy fills by plain string substitution, so the cost per recipient
never includes MJML or CSS work. Nothing here opens a socket.

Guarantees checked on every render, whatever a site's template overrides say:
- the disclaimer (disclaimer.txt, never empty), the postal address and the preferences and
  unsubscribe links end both the HTML and the text part (RenderError otherwise);
- the HTML, with room for each recipient's values, fits max_html_bytes: past max_summaries, or
  when the size needs it, summaries fall back to teaser links; still too big is a RenderError;
- summary Markdown reaches the HTML only through the nh3 allow-list, and the text part without
  raw HTML; plain fields (title, teaser, journal) are escaped.
"""

from __future__ import annotations

import html as htmllib
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import lxml.html
import markdown
import mjml
import nh3
import premailer
from markupsafe import Markup

from .segments import Segment

#: Per-recipient placeholders. They sit inside absolute URLs so premailer's
#: base_url rewriting leaves them alone, and SendGrid substitutes them as is.
UNSUB_TOKEN = "-nl-utok-"
PREFS_TOKEN = "-nl-ptok-"
GREETING_HTML = "-nl-hgreet-"
GREETING_TEXT = "-nl-tgreet-"
PLACEHOLDERS = (UNSUB_TOKEN, PREFS_TOKEN, GREETING_HTML, GREETING_TEXT)
_PLACEHOLDER_RE = re.compile("(" + "|".join(re.escape(key) for key in PLACEHOLDERS) + ")")

SECTION_LABELS = {
    "findings": "What was found",
    "patients": "What it could mean for people living with MS",
    "caregivers": "For caregivers and family",
    "clinicians": "For healthcare providers",
    "limitations": "Limitations",
}
#: When a segment reads its own paragraph (the patients segment reading "patients"), it is addressed as "you".
OWN_SECTION_LABELS = {
    "patients": "What it could mean for you",
    "caregivers": "What it could mean for you and the person you support",
    "clinicians": "For your practice",
}
NO_LIMITATIONS = "The source did not state its limitations; read the original study before drawing conclusions."
ALLOWED_TAGS = {"p", "br", "em", "strong", "b", "i", "ul", "ol", "li", "a", "code", "blockquote"}
# Invisible characters after the preheader keep body text out of the inbox preview;
# kept short because long hidden filler scores with spam filters.
PREHEADER_FILLER = "\u034f\u200c\u00a0" * 40
PREHEADER_MAX = 140
SUBJECT_MAX = 90
#: Bytes reserved in the size budget for each placeholder occurrence in the HTML: the recipient's
#: token or greeting replaces it, so the copy actually sent is a little larger than the render.
RECIPIENT_ALLOWANCE = 200
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_STRONG = re.compile(r"(\*\*|__)(\S(?:.*?\S)?)\1")


class RenderError(Exception):
    pass


def bundled_templates_dir() -> Path:
    return Path(str(resources.files("newsletter._templates")))


def _defuse(text: str) -> str:
    """Content must never contain a placeholder that substitution would fill."""
    return text.replace("-nl-", "-n\u200cl-")


def _defuse_url(url: str) -> str:
    """The same for a URL, kept equivalent: %2D is the percent-encoded hyphen."""
    return url.replace("-nl-", "%2Dnl-")


def _shorten(text: str, limit: int) -> str:
    """Cut at a word boundary, with an ellipsis, when longer than `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-") + "\u2026"


def markdown_to_safe_html(text: str) -> Markup:
    """Markdown in, allow-listed HTML out: raw HTML or script in a summary never survives."""
    rendered = markdown.markdown(_defuse(text), output_format="html")
    cleaned = nh3.clean(rendered, tags=ALLOWED_TAGS, attributes={"a": {"href"}},
                        url_schemes={"http", "https", "mailto"})
    return Markup(cleaned)


def plain_text(text: str) -> str:
    """A plain-text field (title, teaser, journal): kept literally, escaped by the HTML templates."""
    return _defuse(text).strip()


def markdown_to_text(text: str) -> str:
    """Markdown in, readable plain text out: raw HTML and script dropped as in the HTML part,
    links written as "text (url)", lines of a paragraph joined, list items kept one per line."""
    stripped = htmllib.unescape(nh3.clean(_defuse(text), tags=set()))
    stripped = _MD_LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})",
                            stripped)
    stripped = _STRONG.sub(r"\2", stripped)
    blocks = []
    for block in re.split(r"\n\s*\n", stripped.strip()):
        lines = [" ".join(line.split()) for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if any(_LIST_ITEM.match(line) for line in lines):
            items: list[str] = []
            for line in lines:
                if _LIST_ITEM.match(line) or not items:
                    items.append(_LIST_ITEM.sub("- ", line) if line[:1] in "-*+" else line)
                else:
                    items[-1] += " " + line
            blocks.append("\n".join(items))
        else:
            blocks.append(" ".join(lines))
    return "\n\n".join(blocks)


def date_label(iso: str) -> str:
    d = date.fromisoformat(iso[:10])
    return f"{d.day} {d:%B %Y}"


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
        return _fill(self._pieces("html"), values), _fill(self._pieces("text"), values)

    def _pieces(self, part: str) -> list[str]:
        content = getattr(self, part)
        cached = self._split.get(part)
        if cached is None or cached[0] is not content:
            cached = self._split[part] = (content, _PLACEHOLDER_RE.split(content))
        return cached[1]


def _fill(pieces: list[str], values: Mapping[str, str]) -> str:
    """Odd positions of a placeholder split are the placeholders themselves."""
    return "".join(values[piece] if i % 2 else piece for i, piece in enumerate(pieces))


@dataclass
class RenderStats:
    counts: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)


class Renderer:
    def __init__(self, *, site_name: str, site_url: str, postal_address: str, lang: str = "en",
                 max_summaries: int = 10, max_html_bytes: int = 90_000, templates_dir: str | Path | None = None):
        self.site_name = site_name
        self.site_url = site_url.rstrip("/")
        self.postal_address = postal_address
        self.lang = lang
        self.max_summaries = max_summaries
        self.max_html_bytes = max_html_bytes
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir:
            loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
        loaders.append(jinja2.FileSystemLoader(str(bundled_templates_dir())))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("mjml", "html"), default_for_string=False,
                                                default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.stats = RenderStats()

    @classmethod
    def from_config(cls, config: Any) -> "Renderer":
        return cls(site_name=config.site_name, site_url=config.site_url, postal_address=config.postal_address,
                   lang=config.lang, max_summaries=config.max_summaries, max_html_bytes=config.max_html_bytes,
                   templates_dir=config.templates_dir or None)

    # -- pieces ------------------------------------------------------------

    def disclaimer(self) -> list[str]:
        """The site's disclaimer paragraphs; an empty or missing one stops rendering."""
        try:
            source, filename, _ = self.env.loader.get_source(self.env, "disclaimer.txt")
        except jinja2.TemplateNotFound:
            raise RenderError("disclaimer.txt: missing: every digest must carry the disclaimer") from None
        paragraphs = [_defuse(" ".join(p.split())) for p in source.split("\n\n") if p.strip()]
        if not paragraphs:
            raise RenderError(f"{filename}: empty: every digest must carry the disclaimer")
        return paragraphs

    def card(self, summary: Mapping[str, Any], segment: Segment) -> dict[str, Any]:
        """What one summary's card shows for this segment: the segment's sections, in its order.

        Limitations are never dropped: the section is added at the end when a segment leaves it out
        (as segments.py does on load), and a summary without limitations gets a line saying the source
        did not state them.
        """
        sections = []
        names = list(segment.sections) + ([] if "limitations" in segment.sections else ["limitations"])
        for name in names:
            if name == "details":
                sections.append({"name": "details", "label": "Study details"})
                continue
            body = summary.get(name) or ""
            if not body.strip():
                if name != "limitations":
                    continue
                body = NO_LIMITATIONS
            label = OWN_SECTION_LABELS.get(name, "") if name == segment.name else ""
            sections.append({"name": name, "label": label or SECTION_LABELS[name],
                             "html": markdown_to_safe_html(body), "text": markdown_to_text(body)})
        source_url = _defuse_url(summary.get("source_url") or "")
        doi = _defuse(summary.get("doi") or "")
        return {
            "id": summary["id"],
            "title": plain_text(summary["title"]),
            "teaser": plain_text(summary.get("teaser") or ""),
            "date_label": date_label(summary["published"]),
            "topics": [plain_text(str(t)) for t in summary.get("topics") or []],
            "journal": plain_text(summary.get("journal") or ""),
            "doi": doi,
            "doi_url": _defuse_url("https://doi.org/" + (summary.get("doi") or "")) if doi else "",
            "source_url": source_url,
            "url": _defuse_url(summary.get("url") or f"{self.site_url}/summaries/{summary['slug']}"),
            "is_update": bool(summary.get("is_update")),
            "sections": sections,
            # The details section carries the source link up front; the card does not repeat it below.
            "source_in_details": bool(source_url) and "details" in names,
        }

    def subject_and_preheader(self, cards: list[Mapping[str, Any]], segment: Segment, test: bool) -> tuple[str, str]:
        """Subject: how many summaries, and the lead title. Preheader: the lead teaser (or the intro)."""
        count = len(cards)
        updated = sum(1 for c in cards if c["is_update"])
        kind = "new" if not updated else "updated" if updated == count else "new and updated"
        subject = _shorten(f"{count} {kind} research {'summary' if count == 1 else 'summaries'}: {cards[0]['title']}",
                           SUBJECT_MAX)
        if test:
            subject = "[TEST] " + subject
        preheader = _shorten(cards[0]["teaser"] or segment.intro, PREHEADER_MAX)
        return subject, preheader

    # -- the pipeline --------------------------------------------------------

    def render(self, *, issue_id: int, segment: Segment, cadence: str, period_label: str,
               summaries: list[Mapping[str, Any]], variant: str = "all", topics: Iterable[str] = (),
               test: bool = False) -> Rendered:
        """Render one variant. Compiles MJML and inlines CSS once, unless the size cap forces a
        retry with fewer full cards (the rest become teaser links); too big even then is an error.
        stats.seconds splits the time by stage (cards, jinja, mjml, premailer, text, checks): their sum is the
        render time."""
        if not summaries:
            raise RenderError(f"issue {issue_id}: no summaries to render")
        if not self.postal_address.strip():
            raise RenderError("postal_address: required in every footer (CAN-SPAM)")
        started = time.perf_counter()
        cards = [self.card(s, segment) for s in summaries]
        self.stats.seconds["cards"] += time.perf_counter() - started
        count = len(cards)
        subject, preheader = self.subject_and_preheader(cards, segment, test)
        context = {
            "lang": self.lang, "site_name": self.site_name, "segment": segment, "cadence": cadence,
            "period_label": period_label, "heading": f"{cadence.capitalize()} research digest",
            "subject": subject, "preheader": preheader, "preheader_filler": PREHEADER_FILLER,
            "disclaimer": self.disclaimer(), "postal_address": self.postal_address,
            "topics": [plain_text(t) for t in topics],
            "archive_url": f"{self.site_url}/archive/{issue_id}/{_defuse_url(variant)}",
            "unsubscribe_url": f"{self.site_url}/u/{UNSUB_TOKEN}",
            "preferences_url": f"{self.site_url}/p/{PREFS_TOKEN}",
            "greeting_html": GREETING_HTML, "greeting_text": GREETING_TEXT,
        }
        full = min(max(self.max_summaries, 0), count)
        while True:
            html = self._compile_html({**context, "cards": cards[:full], "more": cards[full:]})
            size = self.budget_size(html)
            if size <= self.max_html_bytes:
                break
            if full == 0:
                raise RenderError(f"issue {issue_id} ({segment.name}/{variant}): HTML is {size} bytes with "
                                  f"{count} teaser links, over the {self.max_html_bytes}-byte limit "
                                  "(max_html_bytes); lower max_age_days or split the issue")
            self.stats.counts["size_retry"] += 1
            full = max(0, min(full - 1, int(full * self.max_html_bytes / size) - 1))
        started = time.perf_counter()
        text = self._template("digest.txt", {**context, "cards": cards[:full], "more": cards[full:]})
        self.stats.seconds["text"] += time.perf_counter() - started
        started = time.perf_counter()
        self._check_footer(html, text, context, cards)
        self.stats.seconds["checks"] += time.perf_counter() - started
        self.stats.counts["render"] += 1
        return Rendered(issue_id=issue_id, segment=segment.name, cadence=cadence, variant=variant,
                        subject=subject, preheader=preheader, html=html, text=text,
                        summary_ids=[c["id"] for c in cards], full_cards=full)

    @staticmethod
    def budget_size(html: str) -> int:
        """Bytes counted against max_html_bytes: the HTML plus room for each recipient's values."""
        occurrences = sum(html.count(key) for key in PLACEHOLDERS)
        return len(html.encode("utf-8")) + occurrences * RECIPIENT_ALLOWANCE

    def _check_footer(self, html: str, text: str, context: Mapping[str, Any], cards: list[Mapping[str, Any]]) -> None:
        """Templates can be overridden per site; none may drop or move the footer. Each part must end
        with the disclaimer, the postal address, and the preferences and unsubscribe links."""
        body = lxml.html.document_fromstring(html).body
        html_text = " ".join(body.text_content().split()) if body is not None else ""
        plain = " ".join(text.split())
        required = [*context["disclaimer"], " ".join(self.postal_address.split())]
        for part, content, links in (("HTML", html_text, html), ("text", plain, text)):
            start = content.find(required[0])
            if start < 0:
                raise RenderError(f"{part} part: the disclaimer is missing: check the site's template overrides")
            footer = content[start:]
            missing = [piece for piece in required if piece not in footer]
            if missing:
                raise RenderError(f"{part} part: footer lacks {missing[0]!r}: the disclaimer, then the postal "
                                  "address, must end every digest")
            late = [c["title"] for c in cards if c["title"] and c["title"] in footer]
            if late:
                raise RenderError(f"{part} part: {late[0]!r} appears after the disclaimer: it must come last")
            for name in ("unsubscribe_url", "preferences_url"):
                if context[name] not in links:
                    raise RenderError(f"{part} part: no {name.replace('_url', '')} link")

    def _template(self, name: str, context: Mapping[str, Any]) -> str:
        """A site's broken template override is a one-line error naming it, not a traceback."""
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{exc.filename or name}: line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise RenderError(f"{name}: {exc}") from None

    def _compile_html(self, context: Mapping[str, Any]) -> str:
        started = time.perf_counter()
        source = self._template("base.mjml", context)
        self.stats.seconds["jinja"] += time.perf_counter() - started
        started = time.perf_counter()
        try:
            compiled = mjml.mjml2html(source, disable_comments=True, fonts={})
        except ValueError as exc:
            raise RenderError(f"base.mjml: MJML did not compile: {exc}") from None
        self.stats.counts["mjml"] += 1
        self.stats.seconds["mjml"] += time.perf_counter() - started
        started = time.perf_counter()
        inlined = premailer.Premailer(compiled, base_url=self.site_url, strip_important=False,
                                      allow_network=False, cssutils_logging_level=logging.CRITICAL,
                                      disable_validation=True).transform()
        self.stats.counts["premailer"] += 1
        self.stats.seconds["premailer"] += time.perf_counter() - started
        return inlined


def recipient_values(unsubscribe_token: str, preferences_token: str, name: str) -> dict[str, str]:
    """What fills one copy's placeholders: the two link tokens and the greeting."""
    ghtml, gtext = greeting(name)
    return {UNSUB_TOKEN: unsubscribe_token, PREFS_TOKEN: preferences_token, GREETING_HTML: ghtml,
            GREETING_TEXT: gtext}


def greeting(name: str) -> tuple[str, str]:
    """(html, text) greeting for one recipient."""
    name = _defuse(" ".join(name.split()))
    text = f"Hello {name}," if name else "Hello,"
    return htmllib.escape(text), text
