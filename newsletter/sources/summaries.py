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
    "limitations": "limitations",
}
DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")


class IngestError(Exception):
    """One bad input; the message is `file: field: what is wrong`."""


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:80].rstrip("-") or "summary"


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
        first = re.split(r"(?<=[.!?])\s", record["findings"], maxsplit=1)[0]
        record["teaser"] = first[:200]
    record["slug"] = record["slug"] or None
    record["derived_slug"] = slugify(record["title"])
    return record


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
    sections: dict[str, list[str]] = {"findings": []}
    current = "findings"
    for line in post.content.splitlines():
        match = re.match(r"^##\s+(.+?)\s*#*\s*$", line)
        if match:
            heading = match.group(1).strip().rstrip(":").lower()
            if heading not in HEADINGS:
                raise IngestError(f"{where}: body: unknown section heading {match.group(1)!r} "
                                  f"(use: For people with MS, For caregivers, For healthcare providers, Limitations)")
            current = HEADINGS[heading]
            if current in raw:
                raise IngestError(f"{where}: {current}: given both in front matter and as a section")
            sections.setdefault(current, [])
            continue
        sections.setdefault(current, []).append(line)
    for field, lines in sections.items():
        body = "\n".join(lines).strip()
        if body:
            if field in raw and field == "findings":
                raise IngestError(f"{where}: findings: given both in front matter and in the body")
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


def parse_feed(content: bytes | str, where: str) -> list[dict[str, Any]]:
    feed = feedparser.parse(content)
    if feed.bozo and not feed.entries:
        raise IngestError(f"{where}: feed: not a readable RSS or Atom feed ({feed.bozo_exception})")
    if not feed.entries:
        raise IngestError(f"{where}: feed: has no entries")
    records = []
    for index, entry in enumerate(feed.entries):
        label = f"{where}[{index}]"
        stamp = entry.get("published_parsed") or entry.get("updated_parsed")
        content_html = entry["content"][0]["value"] if entry.get("content") else ""
        raw = {
            "title": entry.get("title", ""),
            "published": date(*stamp[:3]).isoformat() if stamp else "",
            "teaser": _strip_tags(entry.get("summary", "")) if content_html else "",
            "findings": _strip_tags(content_html or entry.get("summary", "")),
            "url": entry.get("link", ""),
            "source_url": entry.get("link", ""),
            "topics": [t["term"] for t in entry.get("tags", []) if t.get("term")],
        }
        records.append(_clean(raw, label))
    return records


def _strip_tags(markup: str) -> str:
    """Feeds carry HTML; keep the words, drop every tag (the renderer escapes what is left)."""
    text = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", markup, flags=re.S | re.I)
    text = re.sub(r"<br\s*/?>|</p\s*>", "\n\n", text, flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\n{3,}", "\n\n", html.unescape(text)).strip()


def read_source(source: str) -> list[dict[str, Any]]:
    """One path or http(s) URL -> its summaries, chosen by suffix or content."""
    if re.match(r"^https?://", source):
        try:
            content = fetch_url(source)
        except FetchError as exc:
            raise IngestError(str(exc)) from None
        return parse_feed(content, source)
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
        return parse_feed(text, source)
    raise IngestError(f"{source}: format: unknown (use .md with front matter, .json, or an RSS/Atom .xml)")


def read_sources(sources: Iterable[str]) -> list[dict[str, Any]]:
    """All sources or an error: a batch with one bad file is rejected whole."""
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for source in sources:
        for record in read_source(str(source)):
            key = record["slug"] or record["derived_slug"]
            if key in seen:
                raise IngestError(f"{source}: slug: {key!r} appears twice in this import (also in {seen[key]})")
            seen[key] = str(source)
            records.append(record)
    return records
