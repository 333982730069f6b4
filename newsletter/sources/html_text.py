"""Feed HTML into the Markdown our renderer understands (paragraphs, lists, bold, links), or into plain text.

Parsed with lxml, never with regular expressions. Written by hand rather than with an
HTML-to-Markdown library because we need three things those do not give together:
section headings kept as `## ` lines so the summary's sections can be split out, output
limited to what render/content.py allows, and literal text that looks like markup
(`p<0.05`, `<b and >c`, `&amp;`) written so that no later stage can read it as a tag or
an entity: every word survives.
"""

from __future__ import annotations

import re
from typing import Callable

from lxml import etree
from lxml import html as lxml_html

SKIP = {"script", "style", "noscript", "iframe", "object", "embed", "template", "svg", "math", "head", "title"}
HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
LIST_TAGS = {"ul", "ol"}
BLOCK_TAGS = {"p", "div", "section", "article", "blockquote", "figure", "figcaption", "header", "footer", "main",
              "aside", "table", "thead", "tbody", "tr", "dl", "dt", "dd", "pre", "address", "hr", "body", "html",
              "details", "summary", "nav", "td", "th"} | HEADING_TAGS | LIST_TAGS | {"li"}
STRONG = {"strong", "b"}
EMPHASIS = {"em", "i"}
#: `<` that could open a tag, `&` that could open an entity: written as entities so they stay text.
_TAG_LIKE = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY_LIKE = re.compile(r"&(?=#\d+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)")


def escape_text(text: str) -> str:
    """Literal text for Markdown: only what would otherwise become a tag or an entity is changed."""
    return _TAG_LIKE.sub("&lt;", _ENTITY_LIKE.sub("&amp;", text))


def _parse(markup: str) -> etree._Element | None:
    if not markup or not markup.strip():
        return None
    try:
        return lxml_html.fragment_fromstring(markup, create_parent="div")
    except (etree.ParserError, ValueError):
        return None


def _spaces(text: str) -> str:
    return re.sub(r"[ \t\r\n\f\v]+", " ", text)


def _tag(el: etree._Element) -> str:
    return el.tag.lower() if isinstance(el.tag, str) else ""


class _Writer:
    """Blocks of Markdown, built while walking the tree; inline text gathers until a block ends."""

    def __init__(self, is_heading: Callable[[str], bool]):
        self.is_heading = is_heading
        self.blocks: list[str] = []
        self.inline: list[str] = []

    def flush(self) -> None:
        text = "\n".join(line.strip() for line in "".join(self.inline).split("\n"))
        text = re.sub(r"\n{2,}", "\n", text).strip()
        if text:
            self.blocks.append(text)
        self.inline = []

    def heading(self, text: str) -> None:
        self.flush()
        text = " ".join(text.split())
        if text:
            self.blocks.append(f"## {text}" if self.is_heading(text) else f"**{escape_text(text)}**")

    def walk(self, el: etree._Element) -> None:
        tag = _tag(el)
        if not tag or tag in SKIP:
            return  # comments and processing instructions carry no words for readers
        if tag in HEADING_TAGS:
            self.heading(el.text_content())
        elif tag in LIST_TAGS:
            self.flush()
            items = self.list_items(el, 0)
            if items:
                self.blocks.append("\n".join(items))
        elif tag in BLOCK_TAGS:
            if tag == "p" and self.bold_heading(el):
                return
            self.flush()
            self.children(el)
            self.flush()
        else:
            self.inline.append(inline(el))

    def children(self, el: etree._Element) -> None:
        if el.text:
            self.inline.append(escape_text(_spaces(el.text)))
        for child in el:
            self.walk(child)
            if child.tail:
                self.inline.append(escape_text(_spaces(child.tail)))

    def bold_heading(self, el: etree._Element) -> bool:
        """A paragraph that is only a bold known heading ("<p><strong>Limitations</strong></p>") is one."""
        kids = [c for c in el if isinstance(c.tag, str)]
        if (len(kids) == 1 and _tag(kids[0]) in STRONG and not (el.text or "").strip()
                and not (kids[0].tail or "").strip() and self.is_heading(" ".join(kids[0].text_content().split()))):
            self.heading(kids[0].text_content())
            return True
        return False

    def list_items(self, el: etree._Element, depth: int) -> list[str]:
        items: list[str] = []
        marker = "1." if _tag(el) == "ol" else "-"
        for li in el:
            if _tag(li) != "li":
                continue
            nested: list[str] = []
            parts = [escape_text(_spaces(li.text or ""))]
            for child in li:
                if _tag(child) in LIST_TAGS:
                    nested += self.list_items(child, depth + 1)
                elif _tag(child) not in SKIP:
                    parts.append(inline(child))
                parts.append(escape_text(_spaces(child.tail or "")))
            text = " ".join("".join(parts).split())
            if text:
                items.append(f"{'    ' * depth}{marker} {text}")
            items += nested
        return items


def inline(el: etree._Element) -> str:
    """One inline element (with its children, without its tail) as Markdown."""
    tag = _tag(el)
    if tag in SKIP or not isinstance(el.tag, str):
        return ""
    if tag == "br":
        return "\n"
    inner = escape_text(_spaces(el.text or "")) + "".join(
        inline(child) + escape_text(_spaces(child.tail or "")) for child in el)
    if tag in BLOCK_TAGS:
        return f" {inner} "
    core = inner.strip()
    if not core:
        return inner
    lead = " " if inner[:1].isspace() else ""
    trail = " " if inner[-1:].isspace() else ""
    if tag in STRONG:
        core = f"**{core}**"
    elif tag in EMPHASIS:
        core = f"*{core}*"
    elif tag == "a":
        href = (el.get("href") or "").strip()
        if re.match(r"^https?://[^\s()<>]+$", href) and core != href:
            core = f"[{core}]({href})"
    return lead + core + trail


def html_to_markdown(markup: str, is_heading: Callable[[str], bool] = lambda text: False) -> str:
    """Paragraphs and lists as Markdown blocks; a heading the caller knows becomes a `## ` line."""
    root = _parse(markup)
    if root is None:
        return ""
    writer = _Writer(is_heading)
    writer.children(root)
    writer.flush()
    return "\n\n".join(writer.blocks)


def html_to_text(markup: str) -> str:
    """Plain text: tags dropped, entities decoded once, blocks separated by a blank line."""
    root = _parse(markup)
    if root is None:
        return ""
    for el in [e for e in root.iter() if not _tag(e) or _tag(e) in SKIP]:
        el.drop_tree()  # its tail stays
    for el in root.iter():
        if _tag(el) in BLOCK_TAGS or _tag(el) == "br":
            el.tail = "\n\n" + (el.tail or "")
    blocks = [" ".join(block.split()) for block in re.split(r"\n\s*\n", root.text_content())]
    return "\n\n".join(block for block in blocks if block)


def hrefs(markup: str) -> list[tuple[str, str]]:
    """Every link in the markup, in order: (target, its text)."""
    root = _parse(markup)
    return [] if root is None else [(a.get("href", "").strip(), " ".join(a.text_content().split()))
                                    for a in root.iter("a") if a.get("href")]
