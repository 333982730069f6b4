"""Polling the configured feeds: one conditional GET per feed (a file is simply read), parsed into records.

Nothing here touches the database: the caller passes the validators kept from the
last answer (ETag, Last-Modified) and stores what comes back. Every failure (HTTP
error, timeout, unreadable feed) is an answer too, never an exception that would
stop the other feeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..settings import ConfigError
from ..topics import Topics
from .feed_items import FeedRead
from .fetch import FEED_TIMEOUT, FetchError, fetch
from .summaries import IngestError, parse_feed


@dataclass(frozen=True)
class FeedSpec:
    """One [[feeds]] table: where the feed is, the topics every item gets, whether items wait for an editor."""
    url: str
    topics: tuple[str, ...] = ()
    drafts: bool = False

    @property
    def is_url(self) -> bool:
        return bool(re.match(r"^https?://", self.url, re.I))


@dataclass
class Poll:
    url: str
    status: str  # fetched | not-modified | failed
    read: FeedRead = field(default_factory=FeedRead)
    etag: str | None = None
    last_modified: str | None = None
    error: str = ""


def feed_specs(feeds: Iterable[dict[str, Any]], topics: Topics) -> list[FeedSpec]:
    """The `feeds` setting as specs; a topic the site's list does not know is refused before anything is fetched."""
    specs = []
    for index, table in enumerate(feeds):
        named = []
        for topic in table.get("topics", []):
            canonical = topics.canonical(topic)
            if canonical is None:
                raise ConfigError(f"feeds[{index}]: topics: {topic!r} is not in the topic list "
                                  f"({', '.join(topics.names)})")
            named.append(canonical)
        specs.append(FeedSpec(table["url"], tuple(dict.fromkeys(named)), bool(table.get("drafts", False))))
    return specs


def poll(spec: FeedSpec, topics: Topics, etag: str | None = None, last_modified: str | None = None,
         timeout: float = FEED_TIMEOUT) -> Poll:
    """Fetch (conditionally) and parse one feed; items that cannot be read are skipped and named."""
    try:
        if spec.is_url:
            answer = fetch(spec.url, timeout, etag, last_modified)
            if answer.not_modified:
                return Poll(spec.url, "not-modified", etag=answer.etag, last_modified=answer.last_modified)
            content, etag, last_modified = answer.body, answer.etag, answer.last_modified
        else:
            try:
                content = Path(spec.url).read_bytes()
            except OSError as exc:
                raise IngestError(f"{spec.url}: path: cannot read: {exc.strerror or exc}") from None
            etag = last_modified = None
        read = parse_feed(content, spec.url, topics, implied=spec.topics, strict=False)
    except (FetchError, IngestError) as exc:
        return Poll(spec.url, "failed", error=str(exc))
    for record in read.records:
        record["draft"] = spec.drafts
    return Poll(spec.url, "fetched", read, etag, last_modified)
