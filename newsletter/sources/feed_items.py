"""One feed entry (as feedparser reads it) into a summary's raw fields, from what real feeds carry.

WordPress puts the article in `content:encoded` and boilerplate in the excerpt; PubMed
puts the journal in `dc:source`, the DOI in `dc:identifier` and a citation line around
the abstract; medRxiv gives `prism:doi`. Tracking parameters are dropped from links,
and the original study is linked at doi.org whenever a DOI is known.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .html_text import escape_text, hrefs, html_to_markdown, html_to_text

DOI = re.compile(r"^10\.\d{4,9}/\S+$")
DOI_IN_TEXT = re.compile(r"(?:doi\.org/|\bdoi:\s*)(10\.\d{4,9}/[^\s\"'<>]+)", re.I)
DOI_PREFIX = re.compile(r"^\s*(?:doi:\s*|info:doi/|https?://(?:dx\.)?doi\.org/)", re.I)
TRACKING = re.compile(r"^(?:utm_\w+|fbclid|gclid|mc_cid|mc_eid|rss)$", re.I)
#: Hosts whose links carry parameters that change between fetches; their path alone names the page.
QUERY_IS_TRACKING = ("pubmed.ncbi.nlm.nih.gov", "www.ncbi.nlm.nih.gov")
WORDPRESS_FOOTER = re.compile(r"^The post .+ appeared first on .+$", re.S)
#: What WordPress puts at the end of an excerpt: "[&#8230;]", "...", a "Continue reading" link.
TRAILING_MORE = re.compile(r"\s*(?:\[\s*(?:\u2026|\.\.\.|&#8230;|&hellip;)\s*\]|\u2026|\.\.\.|"
                           r"(?:Continue reading|Read more)\W*)\s*$", re.I)
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class FeedRead:
    """A feed's records, the categories no topic matched, and the items skipped (with why)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def clean_link(url: str) -> str:
    """The link without tracking parameters (PubMed's change at every fetch, which would look like an edit)."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if not parts.query:
        return url
    if parts.hostname in QUERY_IS_TRACKING:
        query = ""
    else:
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not TRACKING.match(k)])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _doi(candidate: Any) -> str:
    text = DOI_PREFIX.sub("", str(candidate or "")).strip().rstrip(".,;)]")
    return text if DOI.match(text) else ""


def find_doi(entry: Any, body_html: str) -> tuple[str, str]:
    """(DOI, the text of the doi.org link it came from). From prism:doi, dc:identifier (`doi:` prefix), a DOI
    id, a doi.org link of the entry or its body, then a `doi:` or doi.org in the text."""
    for candidate in (entry.get("prism_doi"), entry.get("dc_identifier"), entry.get("id")):
        if _doi(candidate):
            return _doi(candidate), ""
    links = [(link.get("href", ""), "") for link in entry.get("links", [])] + hrefs(body_html)
    for href, text in links:
        if re.match(r"^https?://(?:dx\.)?doi\.org/", href, re.I) and _doi(href):
            return _doi(href), "" if _doi(text) or text.startswith("http") else text
    match = DOI_IN_TEXT.search(html_to_text(body_html))
    return (_doi(match.group(1)), "") if match else ("", "")


def text_of(detail: Any, value: str) -> str:
    """A title or similar: HTML ones have their tags dropped and entities decoded, once; text is kept as is."""
    kind = (detail or {}).get("type", "text/plain")
    text = html_to_text(value) if kind in HTML_TYPES else value
    return " ".join((text or "").split())


def _content(entry: Any) -> tuple[str, str]:
    """(value, type) of the fullest body: content:encoded / Atom content, else the summary."""
    for content in entry.get("content", []):
        if content.get("value", "").strip():
            return content["value"], content.get("type", "text/html")
    detail = entry.get("summary_detail") or {}
    return entry.get("summary", ""), detail.get("type", "text/html")


def body_markdown(value: str, kind: str, is_heading: Callable[[str], bool]) -> str:
    """The body as Markdown. Text that is not HTML (Markdown written in the feed) keeps its lines."""
    if kind in HTML_TYPES and re.search(r"<[A-Za-z!/]", value):
        body = html_to_markdown(value, is_heading)
    elif kind in HTML_TYPES:  # no tag at all: only entities to decode, and the lines to keep
        body = escape_text(html.unescape(value))
    else:
        body = escape_text(value)
    blocks = [b for b in re.split(r"\n\s*\n", body.strip()) if b.strip()]
    # PubMed wraps the abstract in a citation line and a PMID/DOI line: metadata, carried as journal and DOI.
    while len(blocks) > 1 and _citation(blocks[0]):
        blocks.pop(0)
    while len(blocks) > 1 and _citation(blocks[-1]):
        blocks.pop()
    return "\n\n".join(blocks)


def _citation(block: str) -> bool:
    """A short line naming the study ("Mult Scler. 2026 ... doi: 10...", "PMID: ...", "Source: [Journal](doi.org)")."""
    return ("\n" not in block and len(block) < 400
            and (block.startswith("PMID:") or bool(DOI_IN_TEXT.search(block))))


def clean_teaser(markup: str) -> str:
    """An excerpt without WordPress's "The post ... appeared first on ..." and its trailing "[...]"."""
    paragraphs = [p for p in html_to_text(markup).split("\n\n") if not WORDPRESS_FOOTER.match(p)]
    text, before = " ".join(paragraphs).strip(), None
    while text != before:
        text, before = TRAILING_MORE.sub("", text).strip(), text
    return text


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def useless_teaser(teaser: str, findings: str, journal: str) -> bool:
    """Only the journal's name, or the whole abstract again: the findings' first sentence does better."""
    words = _words(teaser)
    return not words or words == _words(journal) or words == _words(html_to_text(findings)) or len(teaser) > 400


def feed_item(entry: Any, is_heading: Callable[[str], bool]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw fields for validation, with `body` and `categories` still to split and map; extra fields)."""
    value, kind = _content(entry)
    has_content = bool(entry.get("content"))
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    doi, link_text = find_doi(entry, value if kind in HTML_TYPES else "")
    link = clean_link(entry.get("link", ""))
    link = link if re.match(r"^https?://[^\s/]+", link) else ""  # an id (urn:, tag:) standing in for a link
    journal = " ".join(str(entry.get("prism_publicationname") or entry.get("dc_source") or link_text).split())
    raw = {
        "title": text_of(entry.get("title_detail"), entry.get("title", "")),
        "published": date(*stamp[:3]).isoformat() if stamp else "",
        "teaser": clean_teaser(entry.get("summary", "")) if has_content else "",
        "body": body_markdown(value, kind, is_heading),
        "url": link,
        "source_url": f"https://doi.org/{doi}" if doi else link,
        "journal": journal,
        "doi": doi,
        "categories": [" ".join(t["term"].split()) for t in entry.get("tags", []) if (t.get("term") or "").strip()],
    }
    return raw, {"guid": str(entry.get("id") or "").strip()}
