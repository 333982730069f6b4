"""The editors' reports page over a ledger built by a real Maildir run: the same numbers as `newsletter report`,
welcome emails left out of them and shown apart in `status`, charts as SVG without script, each table as CSV."""

from __future__ import annotations

import csv
import io
import re

import lxml.etree

from newsletter.cli import cli
from newsletter.report import as_csv, issue_rows, subscriber_rows
from tests.test_web import EDITOR, HASH, PASSWORD, clock, login, make_app, sent  # noqa: F401

STAFF = {EDITOR: HASH, "ann": {"hash": HASH, "role": "author"}, "abe": {"hash": HASH, "role": "approver"}}


def failed_welcome(ctx) -> dict:
    """A welcome planned for a digest reader and refused: its issue is of kind 'welcome'."""
    sub = next(s for s in ctx.store.subscribers(status="active"))
    planned = ctx.store.plan_welcome(sub["id"])
    ctx.store.mark_deliveries([planned["delivery_id"]], "failed", error="550 mailbox unavailable")
    return planned


def test_report_numbers_and_status_leave_welcome_emails_out(sent, runner):
    digests = {row["issue"] for row in issue_rows(sent.store)}
    planned = failed_welcome(sent)
    rows = issue_rows(sent.store)
    assert {row["issue"] for row in rows} == digests and planned["issue_id"] not in digests
    assert all(row["failed"] == 0 for row in rows)  # the welcome's failure is not any digest's
    out = runner.invoke(cli, ["--config", str(sent.config.source), "status"], catch_exceptions=False).output
    assert "Needs attention: welcome emails: 1 failed (550 mailbox unavailable)" in out
    assert f"issue {planned['issue_id']}" not in out


def test_the_reports_page_shows_the_reports_numbers_with_charts_and_csv(sent, make_app):
    app = make_app(sent, editors=STAFF)
    client = app.test_client()
    assert login(client, "abe", PASSWORD).status_code == 303  # an approver
    failed_welcome(sent)
    page = client.get("/editor/reports")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    rows = issue_rows(sent.store)
    for row in rows:
        cells = re.search(rf'<tr><th scope="row"><a href="/editor/issues/{row["issue"]}">{row["issue"]}</a></th>(.*?)</tr>',
                          html).group(1)
        values = re.findall(r"<td>([^<]*)</td>", cells)
        assert values == ["-" if v is None else str(v) for k, v in row.items() if k != "issue"]
    assert "<script" not in html
    assert client.get("/editor/reports/issues.csv").get_data(as_text=True) == as_csv(rows)
    subscribers = client.get("/editor/reports/subscribers.csv")
    assert subscribers.headers["Content-Disposition"].startswith("attachment")
    assert list(csv.DictReader(io.StringIO(subscribers.get_data(as_text=True)))) == [
        {k: str(v) for k, v in r.items()} for r in subscriber_rows(sent.store, sent.config.timezone)]
    for chart in ("issues", "subscribers"):
        response = client.get(f"/editor/reports/{chart}.svg")
        assert response.mimetype == "image/svg+xml"
        assert "script-src" not in response.headers["Content-Security-Policy"]
        svg = lxml.etree.fromstring(response.get_data())
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert not [e for e in svg.iter() if isinstance(e.tag, str) and e.tag.endswith("script")]
        assert b"<script" not in response.get_data() and b"xlink:href=\"http" not in response.get_data()
    # The issues chart has one bar group per issue, labelled by issue and segment.
    labels = lxml.etree.fromstring(client.get("/editor/reports/issues.svg").get_data()).itertext()
    text = " ".join(labels)
    assert all(f"{row['issue']} {row['segment']}" in text for row in rows)


def test_an_author_sees_no_reports_link_and_gets_403(sent, make_app):
    client = make_app(sent, editors=STAFF).test_client()
    assert login(client, "ann", PASSWORD).status_code == 303
    assert "/editor/reports" not in client.get("/editor/").get_data(as_text=True)
    for path in ("/editor/reports", "/editor/reports/issues.svg", "/editor/reports/subscribers.csv"):
        assert client.get(path).status_code == 403
