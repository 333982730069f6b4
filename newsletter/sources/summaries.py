"""Read research summaries from Markdown, JSON and RSS/Atom into validated records.

Parsing only: nothing here touches the database. Every problem is raised as
`file: field: what is wrong`, so an import can reject the whole batch before
the store sees any of it.
"""

from __future__ import annotations

import html
import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable

import feedparser
import frontmatter
import yaml

from ..topics import Topics, load_topics
from .feed_items import FeedRead, feed_item, useless_teaser
from .fetch import FetchError, fetch_url

FIELDS = ("title", "slug", "published", "teaser", "findings", "patients", "caregivers", "clinicians",
          "limitations", "source_url", "journal", "doi", "topics", "url")
REQUIRED = ("title", "published", "findings")

#: Markdown section headings an editor may use, and the field each fills.
HEADINGS = {
    "findings": "findings", "what was found": "findings",
    "for people with ms": "patients", "for patients": "patients", "patients": "patients",
    "for caregivers": "caregivers", "caregivers": "caregivers",
    "for healthcare providers": "clinicians", "for clinicians": "clinicians", "clinicians": "clinicians",
    "limitations": "limitations", "abstract": "findings", "summary": "findings",
}
DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")


class IngestError(Exception):
    """One bad input; the message is `file: field: what is wrong`."""


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:80].rstrip("-") or "summary"


def first_sentence(markdown_text: str) -> str:
    """The findings' first sentence as plain text: the teaser when none was given (or a feed's was useless)."""
    text = re.sub(r"\[([^\]\n]+)\]\([^)\s]+\)", r"\1", markdown_text)
    text = html.unescape(re.sub(r"(\*\*|__)(.+?)\1", r"\2", text))
    text = " ".join(line for line in text.splitlines() if not re.match(r"^\s*#{1,6}\s", line))
    text = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", " ".join(text.split()))
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0][:200]


def _parse_date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        raise ValueError(f"not a date (use YYYY-MM-DD): {text!r}") from None


def _clean(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate one summary's fields; raises IngestError naming the field."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise IngestError(f"{where}: {unknown[0]}: unknown field (allowed: {', '.join(FIELDS)})")
    record: dict[str, Any] = {}
    for field in FIELDS:
        value = raw.get(field)
        if field == "topics":
            if value is None or value == "":
                value = []
            elif isinstance(value, str):
                value = [t.strip() for t in value.split(",") if t.strip()]
            elif not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
                raise IngestError(f"{where}: topics: expected a list of names, got {value!r}")
            record["topics"] = [t.strip() for t in value]
            continue
        if field == "published":
            if value in (None, ""):
                raise IngestError(f"{where}: published: missing")
            try:
                record["published"] = _parse_date(value)
            except ValueError as exc:
                raise IngestError(f"{where}: published: {exc}") from None
            continue
        if value is None:
            value = ""
        if not isinstance(value, (str, int, float)):
            raise IngestError(f"{where}: {field}: expected text, got {type(value).__name__}")
        record[field] = str(value).strip()
    for field in REQUIRED:
        if not record[field]:
            raise IngestError(f"{where}: {field}: missing or empty")
    for field in ("source_url", "url"):
        if record[field] and not re.match(r"^https?://[^\s/]+", record[field]):
            raise IngestError(f"{where}: {field}: not an http(s) URL: {record[field]!r}")
    if record["doi"] and not DOI_RE.match(record["doi"]):
        raise IngestError(f"{where}: doi: not a DOI (10.NNNN/...): {record['doi']!r}")
    if record["slug"] and record["slug"] != slugify(record["slug"]):
        raise IngestError(f"{where}: slug: use lowercase letters, digits and hyphens: {record['slug']!r}")
    if not record["teaser"]:
        record["teaser"] = first_sentence(record["findings"])
    record["slug"] = record["slug"] or None
    record["derived_slug"] = slugify(record["title"])
    return record


def split_sections(body: str, where: str | None = None) -> dict[str, str]:
    """`## Heading` lines -> the field each fills. With `where` (our own files) an unknown heading is an
    error; without it (a feed's text) the line stays where it is, as text."""
    sections: dict[str, list[str]] = {"findings": []}
    current = "findings"
    for line in body.splitlines():
        match = re.match(r"^##\s+(.+?)\s*#*\s*$", line)
        heading = match.group(1).strip().rstrip(":").strip().lower() if match else ""
        if match and heading in HEADINGS:
            current = HEADINGS[heading]
            sections.setdefault(current, [])
            continue
        if match and where is not None:
            raise IngestError(f"{where}: body: unknown section heading {match.group(1)!r} "
                              f"(use: For people with MS, For caregivers, For healthcare providers, Limitations)")
        sections.setdefault(current, []).append(line)
    return {field: "\n".join(lines).strip() for field, lines in sections.items() if "\n".join(lines).strip()}


def is_heading(text: str) -> bool:
    return text.strip().rstrip(":").strip().lower() in HEADINGS


def parse_markdown(text: str, where: str) -> list[dict[str, Any]]:
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        raise IngestError(f"{where}: front matter: not valid YAML: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:  # YAML reads 2026-13-45 as a date and fails on it
        raise IngestError(f"{where}: published: not a date (use YYYY-MM-DD): {exc}") from None
    if not post.metadata:
        raise IngestError(f"{where}: front matter: missing (start the file with --- and a YAML block)")
    raw = dict(post.metadata)
    for field, body in split_sections(post.content, where).items():
        if field in raw:
            where_else = "in the body" if field == "findings" else "as a section"
            raise IngestError(f"{where}: {field}: given both in front matter and {where_else}")
        raw[field] = body
    return [_clean(raw, where)]


def parse_json(text: str, where: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{where}: json: not valid JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    records = []
    for index, item in enumerate(items):
        label = f"{where}[{index}]" if isinstance(data, list) else where
        if not isinstance(item, dict):
            raise IngestError(f"{label}: item: expected an object, got {type(item).__name__}")
        records.append(_clean(item, label))
    return records


def parse_feed(content: bytes | str, where: str, topics: Topics | None = None, implied: Iterable[str] = (),
               strict: bool = True) -> FeedRead:
    """A feed's items as records. Strict (an import): one bad item rejects the feed. Otherwise (a pull)
    a bad item is skipped and named in `skipped`, and the others are read."""
    feed = feedparser.parse(content)
    if feed.bozo and not feed.entries:
        raise IngestError(f"{where}: feed: not a readable RSS or Atom feed ({feed.bozo_exception})")
    if not feed.entries and (feed.bozo or not feed.get("version")):
        raise IngestError(f"{where}: feed: has no entries")
    topics = topics or load_topics()
    read = FeedRead()
    for index, entry in enumerate(feed.entries):
        label = f"{where}[{index}]"
        raw, extra = feed_item(entry, is_heading)
        raw.update(split_sections(raw.pop("body")))
        found, unknown = topics.map(raw.pop("categories"))
        raw["topics"] = list(dict.fromkeys([*implied, *found]))
        try:
            record = _clean(raw, label)
        except IngestError as exc:
            if strict:
                raise
            read.skipped.append(str(exc))
            continue
        record.update(extra)
        if useless_teaser(record["teaser"], record["findings"], record["journal"]):
            record["teaser"] = first_sentence(record["findings"])
        read.records.append(record)
        read.ignored += [term for term in unknown if term not in read.ignored]
    return read


def read_source(source: str, topics: Topics | None = None) -> list[dict[str, Any]]:
    """One path or http(s) URL -> its summaries, chosen by suffix or content."""
    if re.match(r"^https?://", source):
        try:
            content = fetch_url(source)
        except FetchError as exc:
            raise IngestError(str(exc)) from None
        return parse_feed(content, source, topics).records
    path = Path(source)
    if path.is_dir():
        raise IngestError(f"{source}: path: is a folder (pass its files, e.g. {source}/*.md)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IngestError(f"{source}: path: no such file") from None
    except UnicodeDecodeError:
        raise IngestError(f"{source}: encoding: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        return parse_markdown(text, source)
    if suffix == ".json":
        return parse_json(text, source)
    if suffix in (".xml", ".rss", ".atom") or text.lstrip().startswith("<"):
        return parse_feed(text, source, topics).records
    raise IngestError(f"{source}: format: unknown (use .md with front matter, .json, or an RSS/Atom .xml)")


def read_sources(sources: Iterable[str], topics: Topics | None = None) -> list[dict[str, Any]]:
    """All sources or an error: a batch with one bad file is rejected whole."""
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for source in sources:
        for record in read_source(str(source), topics):
            key = record.get("guid") or record["slug"] or record["derived_slug"]
            if key in seen:
                raise IngestError(f"{source}: slug: {key!r} appears twice in this import (also in {seen[key]})")
            seen[key] = str(source)
            records.append(record)
    return records
