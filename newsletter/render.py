"""Render a digest once per (issue, segment, variant): Jinja2 -> MJML -> mjml-python -> premailer.

The result holds a few placeholders (tokens and greeting) that each
recipient's copy fills by plain string substitution, so the cost per recipient
never includes MJML or CSS work. Nothing here opens a socket.
"""

from __future__ import annotations

import html as htmllib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
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

SECTION_LABELS = {
    "findings": "What was found",
    "patients": "What it could mean for people living with the condition",
    "caregivers": "For caregivers and family",
    "clinicians": "For healthcare providers",
    "limitations": "Limitations",
}
NO_LIMITATIONS = "The source did not state its limitations; read the original study before drawing conclusions."
ALLOWED_TAGS = {"p", "br", "em", "strong", "b", "i", "ul", "ol", "li", "a", "code", "blockquote"}
# Invisible characters after the preheader keep body text out of the inbox preview;
# kept short because long hidden filler scores with spam filters.
PREHEADER_FILLER = "\u034f\u200c\u00a0" * 40


class RenderError(Exception):
    pass


def bundled_templates_dir() -> Path:
    return Path(str(resources.files("newsletter._templates")))


def _defuse(text: str) -> str:
    """Content must never contain a placeholder that substitution would fill."""
    return text.replace("-nl-", "-n\u200cl-")


def markdown_to_safe_html(text: str) -> Markup:
    """Markdown in, allow-listed HTML out: raw HTML or script in a summary never survives."""
    rendered = markdown.markdown(_defuse(text), output_format="html")
    cleaned = nh3.clean(rendered, tags=ALLOWED_TAGS, attributes={"a": {"href"}},
                        url_schemes={"http", "https", "mailto"})
    return Markup(cleaned)


def plain_text(text: str) -> str:
    return _defuse(text).strip()


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

    def personalise(self, values: Mapping[str, str]) -> tuple[str, str]:
        """Fill this recipient's tokens and greeting: string replacement only."""
        html, text = self.html, self.text
        for key in PLACEHOLDERS:
            html = html.replace(key, values[key])
            text = text.replace(key, values[key])
        return html, text


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
        paragraphs = [" ".join(p.split()) for p in source.split("\n\n") if p.strip()]
        if not paragraphs:
            raise RenderError(f"{filename}: empty: every digest must carry the disclaimer")
        return paragraphs

    def card(self, summary: Mapping[str, Any], segment: Segment) -> dict[str, Any]:
        sections = []
        for name in segment.sections:
            if name == "details":
                sections.append({"name": "details"})
                continue
            body = summary.get(name) or ""
            if not body.strip():
                if name != "limitations":
                    continue
                body = NO_LIMITATIONS
            sections.append({"name": name, "label": SECTION_LABELS[name],
                             "html": markdown_to_safe_html(body), "text": plain_text(body)})
        return {
            "id": summary["id"],
            "title": plain_text(summary["title"]),
            "teaser": plain_text(summary.get("teaser") or ""),
            "date_label": date_label(summary["published"]),
            "topics": summary.get("topics") or [],
            "journal": plain_text(summary.get("journal") or ""),
            "doi": summary.get("doi") or "",
            "source_url": summary.get("source_url") or "",
            "url": summary.get("url") or f"{self.site_url}/summaries/{summary['slug']}",
            "is_update": bool(summary.get("is_update")),
            "sections": sections,
        }

    # -- the pipeline --------------------------------------------------------

    def render(self, *, issue_id: int, segment: Segment, cadence: str, period_label: str,
               summaries: list[Mapping[str, Any]], variant: str = "all", topics: Iterable[str] = (),
               test: bool = False) -> Rendered:
        if not summaries:
            raise RenderError(f"issue {issue_id}: no summaries to render")
        if not self.postal_address.strip():
            raise RenderError("postal_address: required in every footer (CAN-SPAM)")
        cards = [self.card(s, segment) for s in summaries]
        count = len(cards)
        lead = cards[0]["title"]
        subject = f"{count} new research {'summary' if count == 1 else 'summaries'}: {lead}"
        if len(subject) > 90:
            subject = subject[:87].rstrip() + "..."
        if test:
            subject = "[TEST] " + subject
        context = {
            "lang": self.lang, "site_name": self.site_name, "segment": segment, "cadence": cadence,
            "period_label": period_label, "heading": f"{cadence.capitalize()} research digest",
            "subject": subject, "preheader": cards[0]["teaser"], "preheader_filler": PREHEADER_FILLER,
            "disclaimer": self.disclaimer(), "postal_address": self.postal_address, "topics": list(topics),
            "archive_url": f"{self.site_url}/archive/{issue_id}/{variant}",
            "unsubscribe_url": f"{self.site_url}/u/{UNSUB_TOKEN}",
            "preferences_url": f"{self.site_url}/p/{PREFS_TOKEN}",
            "greeting_html": GREETING_HTML, "greeting_text": GREETING_TEXT,
        }
        full = min(self.max_summaries, count)
        while True:
            html = self._compile_html({**context, "cards": cards[:full], "more": cards[full:]})
            size = len(html.encode("utf-8"))
            if size <= self.max_html_bytes:
                break
            if full == 0:
                raise RenderError(f"issue {issue_id} ({segment.name}/{variant}): HTML is {size} bytes with "
                                  f"{count} teaser links, over the {self.max_html_bytes}-byte limit; "
                                  "lower max_age_days or split the issue")
            full = max(0, min(full - 1, int(full * self.max_html_bytes / size) - 1))
        text = self.env.get_template("digest.txt").render({**context, "cards": cards[:full], "more": cards[full:]})
        return Rendered(issue_id=issue_id, segment=segment.name, cadence=cadence, variant=variant,
                        subject=subject, preheader=cards[0]["teaser"], html=html, text=text,
                        summary_ids=[c["id"] for c in cards], full_cards=full)

    def _compile_html(self, context: Mapping[str, Any]) -> str:
        started = time.perf_counter()
        source = self.env.get_template("base.mjml").render(context)
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


def greeting(name: str) -> tuple[str, str]:
    """(html, text) greeting for one recipient."""
    name = _defuse(name.strip())
    text = f"Hello {name}," if name else "Hello,"
    return htmllib.escape(text), text
