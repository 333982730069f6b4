"""The report in the editors' pages (approvers and up): the numbers of `newsletter report`, a chart of each table
drawn on the server as SVG, and each table as CSV. Aggregates only: nothing names a reader."""

from __future__ import annotations

import io
from typing import Any

import matplotlib
from flask import Blueprint, Response, render_template
from matplotlib.figure import Figure

from ..report import PROXY_NOTE, as_csv, issue_rows, subscriber_rows, tracking_on
from .security import requires
from .state import get_ctx, web_state

bp = Blueprint("reports", __name__, url_prefix="/editor")

#: The chart is our own markup with style attributes (matplotlib writes them); no script may run in it.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
#: Okabe and Ito's palette: told apart with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#D55E00", "#CC79A7", "#009E73", "#56B4E9")
ISSUE_SERIES = ("sent", "deferred", "failed", "unknown")
SUBSCRIBER_SERIES = ("new", "confirmed", "unsubscribed", "bounced", "complained")
#: Bars a chart draws at most, the newest (the tables and CSV keep everything).
CHART_BARS = 20


def _issues() -> list[dict[str, Any]]:
    return issue_rows(get_ctx().store, tracking=tracking_on(web_state().config))


def _subscribers() -> list[dict[str, Any]]:
    return subscriber_rows(get_ctx().store, web_state().config.timezone)


def _weeks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The subscriber rows summed over segments, one per week (the chart's bars)."""
    weeks: dict[str, dict[str, Any]] = {}
    for row in rows:
        week = weeks.setdefault(row["week"], {"week": row["week"], **dict.fromkeys(SUBSCRIBER_SERIES, 0)})
        for key in SUBSCRIBER_SERIES:
            week[key] += row[key]
    return list(weeks.values())


def svg_chart(title: str, labels: list[str], series: dict[str, list[int]], stacked: bool = False) -> bytes:
    """A bar chart (stacked, or grouped side by side) as a standalone SVG document, through matplotlib's SVG
    backend: markup with style attributes, text as <text> in the system's sans-serif, no script, nothing fetched.
    (pygal was tried first: its import hook has no find_spec, so every later failed import in the process warns.)"""
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "newsletter"}):
        figure = Figure(figsize=(8, 4), dpi=100, layout="constrained")
        axes = figure.subplots()
        axes.set_title(title)
        if not labels:
            axes.text(0.5, 0.5, "Nothing yet", ha="center", va="center", transform=axes.transAxes)
        positions = list(range(len(labels)))
        width = 0.8 if stacked else 0.8 / max(1, len(series))
        bottoms = [0] * len(labels)
        for n, (name, values) in enumerate(series.items()):
            if stacked:
                axes.bar(positions, values, width, bottom=bottoms, label=name, color=PALETTE[n % len(PALETTE)])
                bottoms = [b + v for b, v in zip(bottoms, values)]
            else:
                axes.bar([p - 0.4 + width * (n + 0.5) for p in positions], values, width, label=name,
                         color=PALETTE[n % len(PALETTE)])
        crowded = len(labels) > 6
        axes.set_xticks(positions, labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.spines[["top", "right"]].set_visible(False)
        if labels:
            axes.legend(ncols=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
        out = io.BytesIO()
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return out.getvalue()


def _svg(body: bytes) -> Response:
    response = Response(body, mimetype="image/svg+xml")
    response.headers["Content-Security-Policy"] = SVG_CSP
    return response


def _csv(text: str, name: str) -> Response:
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/reports")
@requires("reports")
def index() -> str:
    issues = _issues()
    subscribers = _subscribers()
    return render_template("editor/reports.html", issues=issues, subscribers=subscribers,
                           issue_columns=list(issues[0]) if issues else [],
                           subscriber_columns=list(subscribers[0]) if subscribers else [],
                           tracking=tracking_on(web_state().config), proxy_note=PROXY_NOTE, bars=CHART_BARS)


@bp.get("/reports/issues.svg")
@requires("reports")
def issues_chart() -> Response:
    rows = _issues()[-CHART_BARS:]
    return _svg(svg_chart("Deliveries per issue", [f"{r['issue']} {r['segment']}" for r in rows],
                          {s: [r.get(s, 0) for r in rows] for s in ISSUE_SERIES}, stacked=True))


@bp.get("/reports/subscribers.svg")
@requires("reports")
def subscribers_chart() -> Response:
    weeks = _weeks(_subscribers())[-CHART_BARS:]
    return _svg(svg_chart("Subscribers per week", [w["week"] for w in weeks],
                          {s: [w[s] for w in weeks] for s in SUBSCRIBER_SERIES}))


@bp.get("/reports/issues.csv")
@requires("reports")
def issues_csv() -> Response:
    return _csv(as_csv(_issues()), "issues-report.csv")


@bp.get("/reports/subscribers.csv")
@requires("reports")
def subscribers_csv() -> Response:
    return _csv(as_csv(_subscribers()), "subscribers-report.csv")
