"""The report in the editors' pages (approvers and up): the numbers of `newsletter report`, a chart of each table
drawn on the server as SVG, and each table as CSV. Aggregates only: nothing names a reader."""

from __future__ import annotations

from typing import Any

import pygal
from flask import Blueprint, Response, render_template
from lxml import etree

from ..report import PROXY_NOTE, as_csv, issue_rows, subscriber_rows, tracking_on
from .security import requires
from .state import get_ctx, web_state

bp = Blueprint("reports", __name__, url_prefix="/editor")

#: The chart is our own markup with its own <style> (pygal writes one); no script may run in it.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
ISSUE_SERIES = ("sent", "deferred", "failed", "unknown")
SUBSCRIBER_SERIES = ("new", "confirmed", "unsubscribed", "bounced", "complained")


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
    """A bar chart as a standalone SVG document. pygal always writes a <script> with its tooltip config: it is
    dropped here, so the chart is markup and style only (it is shown through <img>, where no script runs anyway)."""
    chart = (pygal.StackedBar if stacked else pygal.Bar)(
        js=[], explicit_size=True, title=title, x_label_rotation=30 if len(labels) > 6 else 0, width=800, height=400,
        legend_at_bottom=True, print_values=False, show_minor_x_labels=True, no_data_text="Nothing yet")
    chart.x_labels = labels
    for name, values in series.items():
        chart.add(name, values)
    tree = chart.render_tree()
    for script in tree.iter("{http://www.w3.org/2000/svg}script", "script"):
        script.getparent().remove(script)
    return etree.tostring(tree, xml_declaration=True, encoding="utf-8")


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
                           tracking=tracking_on(web_state().config), proxy_note=PROXY_NOTE)


@bp.get("/reports/issues.svg")
@requires("reports")
def issues_chart() -> Response:
    rows = _issues()
    return _svg(svg_chart("Deliveries per issue", [f"{r['issue']} {r['segment']}" for r in rows],
                          {s: [r.get(s, 0) for r in rows] for s in ISSUE_SERIES}, stacked=True))


@bp.get("/reports/subscribers.svg")
@requires("reports")
def subscribers_chart() -> Response:
    weeks = _weeks(_subscribers())
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
