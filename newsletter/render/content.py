"""Summary text into email text: Markdown through the nh3 allow-list for HTML, readable plain text for the twin.

Every function here also defuses placeholders, so content can never spell one.
"""

from __future__ import annotations

import html as htmllib
import re
from datetime import date

import markdown
import nh3
from markupsafe import Markup

from ..model import defuse

ALLOWED_TAGS = {"p", "br", "em", "strong", "b", "i", "ul", "ol", "li", "a", "code", "blockquote"}
_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_STRONG = re.compile(r"(\*\*|__)(\S(?:.*?\S)?)\1")


def shorten(text: str, limit: int) -> str:
    """Cut at a word boundary, with an ellipsis, when longer than `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-") + "\u2026"


def markdown_to_safe_html(text: str) -> Markup:
    """Markdown in, allow-listed HTML out: raw HTML or script in a summary never survives."""
    rendered = markdown.markdown(defuse(text), output_format="html")
    cleaned = nh3.clean(rendered, tags=ALLOWED_TAGS, attributes={"a": {"href"}},
                        url_schemes={"http", "https", "mailto"})
    return Markup(cleaned)


def plain_text(text: str) -> str:
    """A plain-text field (title, teaser, journal): kept literally, escaped by the HTML templates."""
    return defuse(text).strip()


def markdown_to_text(text: str) -> str:
    """Markdown in, readable plain text out: raw HTML and script dropped as in the HTML part,
    links written as "text (url)", lines of a paragraph joined, list items kept one per line."""
    stripped = htmllib.unescape(nh3.clean(defuse(text), tags=set()))
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
