"""Summary text into email text: Markdown through the nh3 allow-list for HTML, and the plain-text twin
walked from that same sanitised tree, so no word reaches one part and not the other.

Abstracts write `<LLN`, `<or=5.5`, `p<0.05`, `<in the first week>`: a `<` starts markup only when it opens
a real HTML element; anything else is text, shown literally in both parts, never dropped.
"""

from __future__ import annotations

import re
import threading
from datetime import date

import lxml.html
import markdown
import nh3
from lxml.html import defs
from markdown.blockprocessors import BlockQuoteProcessor
from markdown.extensions import Extension
from markdown.inlinepatterns import HTML_RE, HtmlInlineProcessor
from markupsafe import Markup

ALLOWED_TAGS = {"p", "br", "em", "strong", "b", "i", "ul", "ol", "li", "a", "code", "blockquote"}
#: Names that make `<name ...>` markup (removed by nh3 unless allowed); any other `<...>` is text.
#: lxml's list lacks a few elements browsers still parse specially.
HTML_ELEMENTS = frozenset(defs.tags) | {
    "data", "dialog", "frame", "image", "listing", "main", "noembed", "noframes", "nobr", "picture",
    "plaintext", "search", "slot", "template", "xmp"}
#: Attributes without a value that real markup uses; `<a few patients>` has none of them, so it is text.
BARE_ATTRIBUTES = frozenset({
    "allowfullscreen", "async", "autofocus", "autoplay", "checked", "controls", "default", "defer", "disabled",
    "hidden", "inert", "ismap", "loop", "multiple", "muted", "nomodule", "novalidate", "open", "playsinline",
    "readonly", "required", "reversed", "selected"})
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)(?=[\s/>])(.*?)/?>\Z", re.S)
_ATTRIBUTE = re.compile(r"""\s*([^\s"'=<>/]+)(\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>`]+))?""")
_BLOCKS = {"p", "ul", "ol", "blockquote", "li"}
_BREAK = "\x00"  # a <br> while a paragraph is gathered; parsed HTML text never holds NUL
#: A sentence ends at . ! or ? before a capital, a digit, an opening quote or bracket, or the end ("e.g. a" goes on).
_SENTENCE = re.compile(r".+?[.!?](?=\s+[A-Z0-9À-Þ\"'(\[]|\s*$)", re.S)
_EMPTY_PARAGRAPH = re.compile(r"<p>\s*</p>\s*")


def is_markup(raw: str) -> bool:
    """Whether `raw` (one `<...>` span, or a comment) is HTML the sanitiser should see, not text."""
    if raw.startswith("<!--"):
        return True
    m = _TAG.match(raw)
    if not m or m.group(2).lower() not in HTML_ELEMENTS:
        return False
    attributes, at = m.group(3), 0
    if m.group(1):  # an end tag takes no attributes
        return not attributes.strip()
    while at < len(attributes.rstrip()):
        a = _ATTRIBUTE.match(attributes, at)
        if not a or a.end() == at or (not a.group(2) and a.group(1).lower() not in BARE_ATTRIBUTES):
            return False
        at = a.end()
    return True


class _MarkupOnly(HtmlInlineProcessor):
    """Python-Markdown's raw-HTML pattern, declining what is not real markup, so Markdown escapes it as text."""

    def handleMatch(self, m, data):  # type: ignore[override]
        if not is_markup(m.group(1)):
            return None, None, None
        return super().handleMatch(m, data)


class _QuoteNeedsSpace(BlockQuoteProcessor):
    """`> quote` is a quotation; `>2 relapses` or `>=3` at a line start is text."""
    RE = re.compile(r"(^|\n)[ ]{0,3}>(?=[ ]|\n|$)[ ]?(.*)")


class _Literal(Extension):
    def extendMarkdown(self, md):  # noqa: N802 - Python-Markdown's name
        md.preprocessors.deregister("html_block")  # raw blocks would skip the markup test above
        md.inlinePatterns.register(_MarkupOnly(HTML_RE, md), "html", 90)
        md.parser.blockprocessors.register(_QuoteNeedsSpace(md.parser), "quote", 20)


_local = threading.local()  # a Markdown instance keeps state while converting: one per thread


def shorten(text: str, limit: int) -> str:
    """Cut at a word boundary, with an ellipsis, when longer than `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-") + "\u2026"


def markdown_to_safe_html(text: str) -> Markup:
    """Markdown in, allow-listed HTML out: raw HTML or script in a summary never survives."""
    md = getattr(_local, "markdown", None)
    if md is None:
        md = _local.markdown = markdown.Markdown(extensions=[_Literal()], output_format="html")
    rendered = md.reset().convert(text)
    cleaned = nh3.clean(rendered, tags=ALLOWED_TAGS, attributes={"a": {"href"}},
                        url_schemes={"http", "https", "mailto"})
    # Raw block HTML goes through Markdown's paragraphs (to be tested as markup), leaving empty ones.
    return Markup(_EMPTY_PARAGRAPH.sub("", cleaned))


def plain_text(text: str) -> str:
    """A plain-text field (title, teaser, journal): kept literally, escaped by the HTML templates."""
    return text.strip()


def html_to_text(html: str) -> str:
    """The plain-text twin of sanitised HTML: paragraphs apart, list items "- item" (or "1. item"),
    line breaks kept, links as "text (url)", a quotation's lines prefixed "> "."""
    if not html.strip():
        return ""
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    return "\n\n".join(b for b in _blocks(root) if b)


def _blocks(parent) -> list[str]:
    """The blocks of a container: its block children, and each run of inline content as one paragraph."""
    blocks, run = [], []

    def flush() -> None:
        if run:
            blocks.append(_lines("".join(run)))
            run.clear()

    if parent.text:
        run.append(parent.text)
    for child in parent:
        if child.tag in ("ul", "ol"):
            flush()
            items = [c for c in child if c.tag == "li"]
            marks = [f"{n}. " for n in range(1, len(items) + 1)] if child.tag == "ol" else ["- "] * len(items)
            blocks.append("\n".join(_item(mark, li) for mark, li in zip(marks, items)))
        elif child.tag == "blockquote":
            flush()
            quoted = "\n\n".join(_blocks(child))
            blocks.append("\n".join(("> " + line).rstrip() for line in quoted.splitlines()))
        elif child.tag in _BLOCKS:
            flush()
            blocks.extend(_blocks(child))
        else:
            run.append(_inline(child))
        if child.tail:
            run.append(child.tail)
    flush()
    return [b for b in blocks if b]


def _item(mark: str, li) -> str:
    body = "\n".join(_blocks(li)).splitlines() or [""]
    return "\n".join([mark + body[0]] + [" " * len(mark) + line for line in body[1:]])


def _inline(el) -> str:
    """Inline content; a line break is kept as _BREAK for _lines."""
    if el.tag == "br":
        return _BREAK
    inner = (el.text or "") + "".join(_inline(c) + (c.tail or "") for c in el)
    if el.tag == "a":
        href, label = el.get("href") or "", " ".join(inner.split())
        if href and href not in (label, f"mailto:{label}"):
            return f"{inner} ({href})" if label else href
    return inner


def _lines(text: str) -> str:
    """Whitespace of a paragraph collapsed, its explicit line breaks kept."""
    return "\n".join(" ".join(line.split()) for line in text.split(_BREAK)).strip("\n")


def first_sentence(text: str) -> str:
    """One line for a teaser entry's limitations note: the first sentence of `text` (all of it if none ends)."""
    flat = " ".join(text.split())
    m = _SENTENCE.match(flat)
    return m.group(0) if m else flat


def date_label(iso: str) -> str:
    d = date.fromisoformat(iso[:10])
    return f"{d.day} {d:%B %Y}"
