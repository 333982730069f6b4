"""Editors' preview: each segment's HTML and text, and a page showing desktop and phone widths. Sends nothing."""

from __future__ import annotations

import html as htmllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .model import Rendered, recipient_values
from .render import Renderer, variants_of
from .select import local_today, period_for, select_summaries

DESKTOP_WIDTH = 640
PHONE_WIDTH = 375
PREVIEW_VALUES = recipient_values("preview-token", "preview-token", "Alex")


def render_upcoming(ctx: Any, segment: str, cadence: str, now: datetime) -> Rendered | None:
    """What this segment's next issue would look like, without creating it."""
    config = ctx.config
    chosen = select_summaries(ctx.store, segment, cadence, local_today(now, config.timezone),
                              config.max_age_days, config.max_summaries * 3)
    if not chosen:
        return None
    period = period_for(now, cadence, config.timezone)
    return Renderer.from_config(config).render(issue_id=0, segment=ctx.segments[segment], cadence=cadence,
                                               period_label=period.label, summaries=chosen)


def render_issue(ctx: Any, issue_id: int) -> Rendered:
    issue = ctx.store.get_issue(issue_id)
    if issue is None:
        raise LookupError(f"issue {issue_id}: no such issue")
    return variants_of(ctx, issue)([])


def preview_renders(ctx: Any, *, issue_id: int | None = None, segment: str | None = None,
                    cadence: str = "weekly", now: datetime | None = None) -> dict[str, Rendered]:
    """What `newsletter preview` shows: one issue, or each segment's upcoming one (none if nothing is new)."""
    if issue_id is not None:
        rendered = render_issue(ctx, issue_id)
        return {rendered.segment: rendered}
    names = [segment] if segment else list(ctx.segments)
    for name in names:
        if name not in ctx.segments:
            raise LookupError(f"segment: unknown {name!r} (segments: {', '.join(ctx.segments)})")
    now = now or datetime.now(timezone.utc)
    return {n: r for n in names if (r := render_upcoming(ctx, n, cadence, now))}


def write_preview(out: Path, renders: dict[str, Rendered]) -> Path:
    """<segment>.html and .txt for each segment, plus index.html with both widths side by side
    and the plain-text part below them. Everything is local: the page loads nothing from the network."""
    out.mkdir(parents=True, exist_ok=True)
    panes = []
    for segment, rendered in renders.items():
        html, text = rendered.personalise(PREVIEW_VALUES)
        (out / f"{segment}.html").write_text(html, encoding="utf-8")
        (out / f"{segment}.txt").write_text(text, encoding="utf-8")
        size_kb = len(html.encode()) / 1024
        name = htmllib.escape(segment)
        href = htmllib.escape(quote(f"{segment}.html"))
        text_href = htmllib.escape(quote(f"{segment}.txt"))
        panes.append(f"""
<section>
  <h2>{name}: {htmllib.escape(rendered.subject)}</h2>
  <p>Preheader: {htmllib.escape(rendered.preheader)}<br>
     {size_kb:.1f} KB HTML, {rendered.full_cards} full cards of {len(rendered.summary_ids)} summaries.
     <a href="{href}">HTML</a> &middot; <a href="{text_href}">plain text</a></p>
  <div class="widths">
    <figure><figcaption>Desktop ({DESKTOP_WIDTH} px)</figcaption><iframe title="{name} at desktop width" src="{href}" width="{DESKTOP_WIDTH}" height="900"></iframe></figure>
    <figure><figcaption>Phone ({PHONE_WIDTH} px)</figcaption><iframe title="{name} at phone width" src="{href}" width="{PHONE_WIDTH}" height="900"></iframe></figure>
  </div>
  <details><summary>Plain-text part</summary><pre>{htmllib.escape(text)}</pre></details>
</section>""")
    index = out / "index.html"
    index.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Digest preview</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:1rem 2rem;color:#1f2933}}
.widths{{display:flex;gap:2rem;flex-wrap:wrap;align-items:flex-start}}
iframe{{border:1px solid #8a96a3;background:#fff}} figure{{margin:0}}
pre{{white-space:pre-wrap;max-width:72ch;background:#f4f6f8;padding:1rem}}</style></head>
<body><h1>Digest preview (nothing was sent)</h1>{''.join(panes) or '<p>No segment has new summaries.</p>'}</body></html>
""", encoding="utf-8")
    return index
