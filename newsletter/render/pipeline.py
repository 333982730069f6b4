"""The pipeline: one variant of an issue through Jinja2 -> MJML -> mjml-python -> premailer, once.

The result holds a few placeholders (tokens and greeting) that each
recipient's copy fills by plain string substitution, so the cost per recipient
never includes MJML or CSS work. Nothing here opens a socket.

Placeholders are filled only where the templates put them: the templates get markers made afresh
for each render (content, written before, cannot know them); the finished HTML and text are
neutralised, whatever content spelled with entities, percent or CSS escapes or Markdown, and only
then do the markers become model.PLACEHOLDERS, which SendGrid and Rendered.personalise fill.

Guarantees checked on every render, whatever a site's template overrides say:
- the disclaimer (disclaimer.txt, never empty), the postal address and the preferences and
  unsubscribe links end both the HTML and the text part (RenderError otherwise);
- the HTML, with room for each recipient's values, fits max_html_bytes: past max_summaries, or
  when the size needs it, summaries fall back to teaser links; still too big is a RenderError;
- summary Markdown reaches the HTML only through the nh3 allow-list, and the text part is walked
  from that same tree (every word in both); plain fields (title, teaser, journal) are escaped.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jinja2
import mjml
import premailer

from ..model import (GREETING_HTML, GREETING_TEXT, PLACEHOLDERS, PREFS_TOKEN, UNSUB_TOKEN, Rendered,
                     neutralise_html, neutralise_text)
from ..segments import Segment
from .cards import card, subject_and_preheader
from .content import plain_text
from .footer import RenderError, check_footer

# Invisible characters after the preheader keep body text out of the inbox preview;
# kept short because long hidden filler scores with spam filters.
PREHEADER_FILLER = "\u034f\u200c\u00a0" * 40
#: Bytes reserved in the size budget for each placeholder occurrence in the HTML: the recipient's
#: token or greeting replaces it, so the copy actually sent is a little larger than the render.
RECIPIENT_ALLOWANCE = 200


def bundled_templates_dir() -> Path:
    return Path(str(resources.files("newsletter._templates")))


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
        cards = [card(s, segment, self.site_url) for s in summaries]
        self.stats.seconds["cards"] += time.perf_counter() - started
        count = len(cards)
        subject, preheader = subject_and_preheader(cards, segment, test)
        markers = fresh_markers()
        context = {
            "lang": self.lang, "site_name": self.site_name, "segment": segment, "cadence": cadence,
            "period_label": period_label, "heading": f"{cadence.capitalize()} research digest",
            "subject": subject, "preheader": preheader, "preheader_filler": PREHEADER_FILLER,
            "disclaimer": self.disclaimer(), "postal_address": self.postal_address,
            "topics": [plain_text(t) for t in topics],
            "archive_url": f"{self.site_url}/archive/{issue_id}/{variant}",
            "unsubscribe_url": f"{self.site_url}/u/{markers[UNSUB_TOKEN]}",
            "preferences_url": f"{self.site_url}/p/{markers[PREFS_TOKEN]}",
            "privacy_url": f"{self.site_url}/privacy",
            "greeting_html": markers[GREETING_HTML], "greeting_text": markers[GREETING_TEXT],
        }
        full = min(max(self.max_summaries, 0), count)
        while True:
            parts = {**context, "cards": cards[:full], "more": cards[full:]}
            html = finish(neutralise_html, self._compile_html(parts), markers)
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
        text = finish(neutralise_text, self._template("digest.txt", parts), markers)
        self.stats.seconds["text"] += time.perf_counter() - started
        started = time.perf_counter()
        finished = {**context, "unsubscribe_url": f"{self.site_url}/u/{UNSUB_TOKEN}",
                    "preferences_url": f"{self.site_url}/p/{PREFS_TOKEN}"}
        check_footer(html, text, finished, cards, self.postal_address)
        self.stats.seconds["checks"] += time.perf_counter() - started
        self.stats.counts["render"] += 1
        return Rendered(issue_id=issue_id, segment=segment.name, cadence=cadence, variant=variant,
                        subject=neutralise_text(subject), preheader=neutralise_text(preheader), html=html,
                        text=text, summary_ids=[c["id"] for c in cards], full_cards=full)

    @staticmethod
    def budget_size(html: str) -> int:
        """Bytes counted against max_html_bytes: the HTML plus room for each recipient's values."""
        occurrences = sum(html.count(key) for key in PLACEHOLDERS)
        return len(html.encode("utf-8")) + occurrences * RECIPIENT_ALLOWANCE

    def _template(self, name: str, context: Mapping[str, Any]) -> str:
        """A site's broken template override is a one-line error naming it, not a traceback."""
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{exc.filename or name}: line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise RenderError(f"{name}: {exc}") from None

    def template(self, name: str, context: Mapping[str, Any]) -> str:
        """One of the site's templates rendered, errors as above (the welcome email renders through it)."""
        return self._template(name, context)

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


def fresh_markers() -> dict[str, str]:
    """This render's stand-ins for the placeholders: made after the content exists, so it cannot spell them."""
    return {key: "nlm" + secrets.token_hex(16) for key in PLACEHOLDERS}


def finish(neutralise: Callable[[str], str], content: str, markers: Mapping[str, str]) -> str:
    """Neutralise what content spelled, then turn this render's markers into the placeholders."""
    content = neutralise(content)
    for key, marker in markers.items():
        content = content.replace(marker, key)
    return content
