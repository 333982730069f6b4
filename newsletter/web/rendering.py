"""Rendered issues for the editors' preview and the public archive, cached by content.

Rendering (MJML + CSS inlining) costs tens of milliseconds; the issue page and
its two iframes would otherwise render the same email three times. The cache
key includes each summary's content hash, so an edited draft renders afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ..model import Rendered, recipient_values
from ..render import variants_of
from ..select import topic_key

#: What the links of the public web copy carry instead of a reader's tokens.
ARCHIVE_TOKEN = "web-copy"
ARCHIVE_VALUES = recipient_values(ARCHIVE_TOKEN, ARCHIVE_TOKEN, "")


class RenderCache:
    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict[tuple, Rendered | None] = OrderedDict()
        self._lock = threading.Lock()

    def variant(self, ctx: Any, issue: dict[str, Any], topics: list[str]) -> Rendered | None:
        """The issue rendered for readers of these topics (None when no summary matches)."""
        summaries = ctx.store.issue_summaries(issue["id"])
        key = (issue["id"], topic_key(topics), tuple((s["id"], s["content_hash"]) for s in summaries))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        rendered = variants_of(ctx, issue)(topics)
        with self._lock:
            self._items[key] = rendered
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return rendered


def topics_for_variant(summaries: list[dict[str, Any]], variant: str) -> list[str] | None:
    """The topic list whose variant key is `variant` ('all' -> []); None when no topic of the issue matches."""
    if variant == "all":
        return []
    by_key = {topic_key([t]): t for s in summaries for t in s["topics"]}
    wanted = variant.split("+")
    if not all(part in by_key for part in wanted):
        return None
    return [by_key[part] for part in wanted]
