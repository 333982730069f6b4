"""An existing issue's variants: one render per distinct set of summaries a reader's topics leave.

Used by the send, the test send, the preview and the web archive alike, so
each renders an issue the same way without going through the job runner.
"""

from __future__ import annotations

import logging
from typing import Any

from ..model import Rendered, VariantFor
from ..select import Period, matching, topic_key
from ..segments import Segment
from .pipeline import Renderer

log = logging.getLogger("newsletter.render")

def issue_variants(renderer: Renderer, issue: dict[str, Any], summaries: list[dict[str, Any]],
                   segment: Segment, test: bool = False) -> VariantFor:
    """Renders lazily, once per distinct set of summaries a topic choice (less what a reader
    already received in another digest) yields."""
    period_label = Period.from_key(issue["period"]).label
    by_topics: dict[tuple[str, frozenset[str]], Rendered | None] = {}
    by_content: dict[tuple[int, ...], Rendered] = {}

    def variant_for(topics: list[str], exclude: frozenset[str] = frozenset()) -> Rendered | None:
        key = (topic_key(topics), exclude)
        if key not in by_topics:
            chosen = [s for s in matching(summaries, topics) if s["slug"] not in exclude]
            ids = tuple(s["id"] for s in chosen)
            if not chosen:
                log.info("issue %s: nothing left for topics %s: those subscribers get no email", issue["id"], key[0])
                by_topics[key] = None
            elif ids in by_content:
                by_topics[key] = by_content[ids]
            else:
                variant = "all" if len(chosen) == len(summaries) else key[0]
                rendered = renderer.render(issue_id=issue["id"], segment=segment, cadence=issue["cadence"],
                                           period_label=period_label, summaries=chosen, variant=variant,
                                           topics=[] if variant == "all" else topics, test=test)
                by_content[ids] = by_topics[key] = rendered
        return by_topics[key]

    return variant_for


def variants_of(ctx: Any, issue: dict[str, Any], test: bool = False,
                renderer: Renderer | None = None) -> VariantFor:
    """The same for a site's Context: its store's summaries of the issue, its segments, its templates."""
    return issue_variants(renderer or Renderer.from_config(ctx.config), issue,
                          ctx.store.issue_summaries(issue["id"]), ctx.segments[issue["segment"]], test)
