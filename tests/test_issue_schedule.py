"""Per-issue send times: `issues schedule` and the issue page's field set when an approved issue may go out, in the
configured zone; the ten-minute cron line (`digest run --send-only`, the clock moved by time-machine) sends it only
once its time has come and leaves it approved until then."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import time_machine

from newsletter.cli import cli
from newsletter.digest import DigestRunner
from tests.conftest import SAMPLE_NOW, load_samples, read_maildir
from tests.test_web import EDITOR, HASH, PASSWORD, clock, csrf_from, login, make_app  # noqa: F401

#: Before the send time below (Monday 23 November 2026, 09:00 in Paris = 08:00 UTC).
EARLY = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def paris(make_site):
    """Drafts for this week on a site counting time in Paris."""
    ctx = make_site("paris", require_approval="yes", timezone="Europe/Paris")
    load_samples(ctx)
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW, send=False)
    return ctx


def cli_at(runner, ctx, when: datetime, *args: str):
    with time_machine.travel(when, tick=False):
        return runner.invoke(cli, ["--config", str(ctx.config.source), *args], catch_exceptions=False)


def delivered(ctx, issue_id: int) -> int:
    return ctx.store.delivery_counts(issue_id).get("sent", 0)


def test_the_cron_line_sends_a_scheduled_issue_only_once_its_time_has_come(paris, runner):
    first, second = [i["id"] for i in paris.store.issues()][:2]
    for issue_id in (first, second):
        assert cli_at(runner, paris, EARLY, "issues", "approve", str(issue_id)).exit_code == 0
    result = cli_at(runner, paris, EARLY, "issues", "schedule", str(first), "--at", "2026-11-23T09:00")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"issue {first}: sends at 2026-11-23 09:00 CET"
    assert paris.store.get_issue(first)["send_at"] == "2026-11-23T08:00:00+00:00"  # kept in UTC
    shown = cli_at(runner, paris, EARLY, "issues", "show", str(first)).output
    assert "sends at 2026-11-23 09:00 CET" in shown
    assert f"sends at 2026-11-23 09:00 CET" in [line for line in cli_at(runner, paris, EARLY, "issues", "list").output
                                                .splitlines() if line.strip().startswith(str(first))][0]

    # 07:50 UTC: the unscheduled approved issue goes, the scheduled one waits, approved.
    assert cli_at(runner, paris, datetime(2026, 11, 23, 7, 50, tzinfo=timezone.utc),
                  "digest", "run", "--send-only").exit_code == 0
    assert paris.store.get_issue(second)["status"] == "sent" and delivered(paris, second) > 0
    assert paris.store.get_issue(first)["status"] == "approved" and paris.store.delivery_counts(first) == {}
    outbox = len(read_maildir(paris.config.outbox))
    # `issues send` refuses it too (one line, nothing sent), until the time is cleared.
    refused = cli_at(runner, paris, datetime(2026, 11, 23, 7, 55, tzinfo=timezone.utc), "issues", "send", str(first))
    assert refused.exit_code == 1 and "scheduled for 2026-11-23T08:00:00+00:00" in refused.output
    assert len(read_maildir(paris.config.outbox)) == outbox

    # 08:00 UTC, the next ten-minute line: its time has come.
    assert cli_at(runner, paris, datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc),
                  "digest", "run", "--send-only").exit_code == 0
    assert paris.store.get_issue(first)["status"] == "sent"
    assert len(read_maildir(paris.config.outbox)) == outbox + delivered(paris, first)
    [row] = paris.store.audit_entries(action="issue.schedule")
    assert row["actor"].startswith("cli:") and row["target"] == f"issue:{first}"
    assert row["detail"]["send_at"] == [None, "2026-11-23T08:00:00+00:00"]


def test_an_offset_wins_over_the_zone_and_clear_drops_the_time(paris, runner):
    issue_id = paris.store.issues()[0]["id"]
    result = cli_at(runner, paris, EARLY, "issues", "schedule", str(issue_id), "--at", "2026-11-23T06:30:00-05:00")
    assert result.exit_code == 0 and paris.store.get_issue(issue_id)["send_at"] == "2026-11-23T11:30:00+00:00"
    result = cli_at(runner, paris, EARLY, "issues", "schedule", str(issue_id), "--clear")
    assert result.output.strip() == f"issue {issue_id}: sends with the next run"
    assert paris.store.get_issue(issue_id)["send_at"] is None


@pytest.mark.parametrize("args,message", [
    (["--at", "2026-11-22T12:00"], "is in the past"),               # 11:00 UTC, before EARLY
    (["--at", "next monday"], "send time: 'next monday' is no ISO date and time"),
    ([], "give either --at ISO-DATETIME or --clear"),
    (["--at", "2026-12-01T09:00", "--clear"], "give either --at ISO-DATETIME or --clear"),
])
def test_mistakes_are_refused_in_one_line_and_nothing_changes(paris, runner, args, message):
    issue_id = paris.store.issues()[0]["id"]
    result = cli_at(runner, paris, EARLY, "issues", "schedule", str(issue_id), *args)
    assert result.exit_code != 0 and message in result.output
    assert paris.store.get_issue(issue_id)["send_at"] is None
    assert paris.store.audit_entries(action="issue.schedule") == []


def test_a_sent_or_cancelled_issue_cannot_be_scheduled(paris, runner):
    issue_id = paris.store.issues()[0]["id"]
    assert cli_at(runner, paris, EARLY, "issues", "cancel", str(issue_id)).exit_code == 0
    result = cli_at(runner, paris, EARLY, "issues", "schedule", str(issue_id), "--at", "2026-12-01T09:00")
    assert result.exit_code == 1 and "is cancelled; only a draft or approved issue is scheduled" in result.output


def test_an_approver_sets_the_time_on_the_issue_page_and_it_is_audited(paris, make_app):
    client = make_app(paris, editors={EDITOR: HASH}).test_client()
    assert login(client).status_code == 303
    issue_id = paris.store.issues()[0]["id"]
    page = client.get(f"/editor/issues/{issue_id}")
    assert "with the next run once approved" in page.get_data(as_text=True)
    response = client.post(f"/editor/issues/{issue_id}/schedule",
                           data={"csrf_token": csrf_from(page), "send_at": "2026-12-07T07:00"})
    assert response.status_code == 303
    assert paris.store.get_issue(issue_id)["send_at"] == "2026-12-07T06:00:00+00:00"
    html = client.get(f"/editor/issues/{issue_id}").get_data(as_text=True)
    assert "at 2026-12-07 07:00 CET" in html and "Clear send time" in html
    [row] = paris.store.audit_entries(action="issue.schedule")
    assert row["actor"] == EDITOR and row["detail"]["send_at"] == [None, "2026-12-07T06:00:00+00:00"]
    bad = client.post(f"/editor/issues/{issue_id}/schedule", data={"csrf_token": csrf_from(page), "send_at": "soon"})
    assert bad.status_code == 303 and paris.store.get_issue(issue_id)["send_at"] == "2026-12-07T06:00:00+00:00"
    assert "no ISO date and time" in client.get(f"/editor/issues/{issue_id}").get_data(as_text=True)
    client.post(f"/editor/issues/{issue_id}/schedule", data={"csrf_token": csrf_from(page), "clear": "yes"})
    assert paris.store.get_issue(issue_id)["send_at"] is None
    assert len(paris.store.audit_entries(action="issue.schedule")) == 2
