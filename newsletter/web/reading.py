"""Public reading pages: a summary in full (the digest's "Read the full summary" link), the archive of sent
digests and its Atom feed. Read only; nothing about readers (no counts, no names) ever reaches them.

Summary text reaches the page only through the emails' sanitiser (render/content.py); plain fields are
escaped by Jinja, and link targets from feeds are kept only when they are http(s).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, make_response, render_template, url_for

from ..render import Renderer, date_label
from ..render.cards import NO_LIMITATIONS, SECTION_LABELS
from ..render.content import markdown_to_safe_html
from ..select import Period
from .state import get_ctx, web_state

bp = Blueprint("reading", __name__)

#: The sections a summary page shows, in order: every audience's paragraph, then the limitations.
PAGE_SECTIONS = ("findings", "patients", "caregivers", "clinicians")
FEED_ENTRIES = 50
#: RFC 4151: the date need only be one on which the site held its name; fixed, so the feed's id never changes.
FEED_TAG_DATE = "2026"
PUBLIC_CACHE = "public, max-age=600"
#: What XML 1.0 cannot carry even escaped (control characters): dropped from the feed's text.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def web_link(url: str) -> str:
    """A link target from outside (a feed's source URL): kept only if it is http or https."""
    url = (url or "").strip()
    return url if urlsplit(url).scheme.lower() in ("http", "https") else ""


def disclaimer() -> list[str]:
    """The site's disclaimer paragraphs, from the same templates (and overrides) as the emails."""
    return Renderer.from_config(web_state().config).disclaimer()


def public(response: Any) -> Any:
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@bp.get("/summaries/<slug>")
def summary(slug: str) -> Any:
    revisions = get_ctx().store.summary_revisions(slug)
    if not revisions:
        abort(404, description="There is no summary at this address.")
    latest = revisions[0]
    sections = [{"label": SECTION_LABELS[name], "html": markdown_to_safe_html(latest[name])}
                for name in PAGE_SECTIONS if (latest[name] or "").strip()]
    limitations = (latest["limitations"] or "").strip() or NO_LIMITATIONS
    sections.append({"label": SECTION_LABELS["limitations"], "html": markdown_to_safe_html(limitations)})
    doi = (latest["doi"] or "").strip()
    page = render_template(
        "reading/summary.html", summary=latest, sections=sections, published=date_label(latest["published"]),
        updated=date_label(latest["imported_at"]) if len(revisions) > 1 else "", revision=latest["revision"],
        source_url=web_link(latest["source_url"]), doi=doi, doi_url=f"https://doi.org/{doi}" if doi else "",
        disclaimer=disclaimer())
    return public(make_response(page))


def issue_entry(issue: dict[str, Any]) -> dict[str, Any]:
    segment = web_state().segments.get(issue["segment"])
    when = issue["sent_at"] or issue["approved_at"] or issue["created_at"]
    return {"id": issue["id"], "segment": segment.display_name if segment else issue["segment"],
            "cadence": issue["cadence"], "label": Period.from_key(issue["period"]).label, "titles": issue["titles"],
            "path": url_for("public.archive", issue_id=issue["id"], variant="all"), "when": when,
            "sent_label": date_label(when), "created": issue["created_at"][:10]}


@bp.get("/archive")
def archive_index() -> Any:
    """Each segment's sent digests, newest first; segments in the order of segments.toml, then any others."""
    order = {name: i for i, name in enumerate(web_state().segments)}
    issues = sorted(get_ctx().store.archived_issues(), key=lambda issue: order.get(issue["segment"], len(order)))
    groups: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:  # sorted() is stable: each segment's issues stay newest first
        entry = issue_entry(issue)
        groups.setdefault(entry["segment"], []).append(entry)
    return public(make_response(render_template("reading/archive.html", groups=groups)))


@bp.get("/archive.atom")
def archive_feed() -> Response:
    """Atom (RFC 4287) of the newest sent digests; ids are tag: URIs that never change for an issue."""
    config = web_state().config
    host = urlsplit(config.site_url).hostname or "localhost"
    entries = [issue_entry(issue) for issue in get_ctx().store.archived_issues(limit=FEED_ENTRIES)]
    updated = max((e["when"] for e in entries), default=None)
    body = render_template("reading/archive.xml", entries=entries, host=host, tag_date=FEED_TAG_DATE,
                           site_url=config.site_url.rstrip("/"), updated=updated or "1970-01-01T00:00:00+00:00")
    response = make_response(body)
    response.content_type = "application/atom+xml; charset=utf-8"
    return public(response)


@bp.app_template_filter("xml_text")
def xml_text(value: Any) -> str:
    return _NOT_XML.sub("", str(value))
