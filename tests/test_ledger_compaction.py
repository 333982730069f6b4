"""Compaction (ledger_retention_days, run by `newsletter purge`): a sent digest's rows become counts and the readers
it reached; the report, `issues show` and `status` read the same numbers, selection still never brings a reader a
summary twice, erasure still removes them, and an issue with anything still open is never compacted."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from newsletter.cli import cli
from newsletter.report import issue_rows

from .test_schedule import PEOPLE, cron, outbox_messages, summaries_over_weeks

FAR = "2100-01-01T00:00:00+00:00"
WEEK_42 = datetime(2026, 10, 12, 7, 0)


@pytest.fixture
def weeks(make_site, runner, tmp_path):
    """The six readers of test_schedule, and its summaries; events kept long enough to stay in the report."""
    ctx = make_site(retention_events_days=3650, ledger_retention_days=30)
    feed = tmp_path / "summaries.json"
    feed.write_text(json.dumps(summaries_over_weeks()))
    config = str(ctx.config.source)
    assert runner.invoke(cli, ["--config", config, "summaries", "import", str(feed)]).exit_code == 0
    for address, segment, cadence, topics in PEOPLE:
        args = ["--config", config, "subscribers", "add", address, "--segment", segment, "--cadence", cadence,
                "--confirmed"] + [a for t in topics for a in ("--topic", t)]
        assert runner.invoke(cli, args, catch_exceptions=False).exit_code == 0
    return ctx


def numbers(ctx) -> dict:
    """Everything a person reads about issues: the report (tracked), each issue's counts, the totals."""
    return {"report": issue_rows(ctx.store, tracking=True),
            "issues": {i["id"]: ctx.store.delivery_counts(i["id"]) for i in ctx.store.issues()},
            "totals": ctx.store.delivery_counts()}


def show(runner, ctx, issue_id: int) -> list[str]:
    out = runner.invoke(cli, ["--config", str(ctx.config.source), "issues", "show", str(issue_id)],
                        catch_exceptions=False).output
    return [line for line in out.splitlines() if "deliveries" in line]


def test_compaction_keeps_the_numbers_selection_and_erasure(weeks, runner, tmp_path):
    store, config = weeks.store, str(weeks.config.source)
    cron(runner, weeks, WEEK_42, "--cadence", "weekly", "--segment", "patients")
    [issue] = store.issues(status="sent")
    rows = store.deliveries(issue["id"])
    assert len(rows) == 2 and {r["status"] for r in rows} == {"sent"}
    # What the report counts besides statuses: opens and clicks, a bounce event, a reader who left since.
    ms, allw = (next(r for r in rows if r["email"] == e) for e in ("ms-weekly@example.org", "all-weekly@example.org"))
    assert store.mark_delivery_event(issue["id"], ms["subscriber_id"], ms["email"], "opened_at", "2026-10-12T09:00:00+00:00")
    assert store.mark_delivery_event(issue["id"], ms["subscriber_id"], ms["email"], "clicked_at", "2026-10-12T09:01:00+00:00")
    assert store.record_event("sendgrid", {"event_id": "b-1", "type": "bounce", "email": allw["email"],
                                           "subscriber_id": allw["subscriber_id"], "occurred_at": "2026-10-13T07:00:00+00:00",
                                           "payload": {"type": "bounce", "status": "4.2.2"}})
    with time_machine.travel(datetime(2026, 10, 14, 7, 0, tzinfo=timezone.utc), tick=False):
        store.set_subscriber_status(ms["subscriber_id"], "unsubscribed")
    before, shown = numbers(weeks), show(runner, weeks, issue["id"])
    assert before["report"][0]["opens"] == 1 and before["report"][0]["soft_bounces"] == 1
    assert before["report"][0]["unsubscribes"] == 1

    mover = store.get_subscriber("all-weekly@example.org")
    first = {s["slug"] for s in store.issue_summaries(issue["id"])}
    store.update_preferences(mover["id"], "caregivers", "weekly", [])
    assert store.compact_deliveries(FAR) == 2
    assert store.deliveries(issue["id"]) == [] and store.compactable_issues(FAR) == []
    assert store.compact_deliveries(FAR) == 0  # twice removes nothing more
    assert numbers(weeks) == before
    assert show(runner, weeks, issue["id"]) == shown
    assert store.ledger_bytes() > 0

    # The mover's next issue (another audience) carries the same summaries: none of them reaches the mover.
    fresh = {"title": "A fresh study", "slug": "fresh", "published": "2026-10-13", "findings": "New.",
             "limitations": "Small.", "source_url": "https://doi.org/10.5555/fresh", "topics": ["MS"]}
    (tmp_path / "fresh.json").write_text(json.dumps(fresh))
    runner.invoke(cli, ["--config", config, "summaries", "import", str(tmp_path / "fresh.json")], catch_exceptions=False)
    cron(runner, weeks, datetime(2026, 10, 13, 7, 0), "--cadence", "weekly", "--segment", "caregivers")
    carers = store.find_issue("caregivers", "weekly", "2026-W42")["id"]
    assert first <= {s["slug"] for s in store.issue_summaries(carers)}
    [msg] = [m for m in outbox_messages(weeks)
             if m["To"].addresses[0].addr_spec == mover["email"] and m["X-Newsletter-Issue"] == str(carers)]
    lines = set(msg.get_body(("plain",)).get_content().splitlines())
    titles = {s["slug"]: s["title"] for s in summaries_over_weeks()}
    assert "A fresh study" in lines and not any(titles[slug] in lines for slug in first)

    # Erasure reaches what compaction kept of them; the counts stay.
    assert store.query("SELECT * FROM compacted_recipients WHERE subscriber_id = ?", (mover["id"],))
    assert store.person_data(mover["id"], mover["email"])["compacted_recipients"]
    result = runner.invoke(cli, ["--config", config, "subscribers", "remove", mover["email"]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert store.query("SELECT * FROM compacted_recipients WHERE subscriber_id = ?", (mover["id"],)) == []
    assert store.delivery_counts(issue["id"]) == before["issues"][issue["id"]]
    assert issue_rows(store, issue["id"])[0]["sent"] == 2


def test_an_issue_with_anything_open_is_never_compacted(weeks, runner):
    store = weeks.store
    cron(runner, weeks, WEEK_42, "--cadence", "weekly")
    sent = store.issues(status="sent")
    assert len(sent) == 3
    for issue, status in zip(sent, ("unknown", "deferred", "pending")):  # a retry, a relay's 4xx, a resumed run
        row = store.deliveries(issue["id"])[0]
        assert store.mark_deliveries([row["id"]], status, error="still open", expect="sent") == 1
    store.conn.execute("UPDATE issues SET status = 'sending' WHERE id = ?", (sent[2]["id"],))
    assert store.compactable_issues(FAR) == []
    kept = {i["id"]: store.deliveries(i["id"]) for i in sent}
    assert store.compact_deliveries(FAR) == 0
    assert {i: store.deliveries(i) for i in kept} == kept
    assert all(i["compacted_at"] is None for i in store.issues())


def test_purge_compacts_issues_sent_more_than_ledger_retention_days_ago(weeks, runner):
    config = str(weeks.config.source)
    cron(runner, weeks, WEEK_42, "--cadence", "weekly")
    planned = sum(sum(weeks.store.delivery_counts(i["id"]).values()) for i in weeks.store.issues(status="sent"))
    assert planned > 0

    def purge(days_later: int, *extra: str) -> str:
        with time_machine.travel((WEEK_42 + timedelta(days=days_later)).replace(tzinfo=timezone.utc), tick=False):
            result = runner.invoke(cli, ["--config", config, "purge", *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return next(line for line in result.output.splitlines() if "compacted" in line)

    assert purge(29).split()[0] == "0"
    kept = {i["id"]: weeks.store.deliveries(i["id"]) for i in weeks.store.issues(status="sent")}
    assert int(purge(31, "--dry-run").split()[0]) == planned  # what a purge would compact, rolled back
    assert {i: weeks.store.deliveries(i) for i in kept} == kept
    assert not any(i["compacted_at"] for i in weeks.store.issues(status="sent"))
    assert int(purge(31).split()[0]) == planned
    assert purge(32).split()[0] == "0"
    assert all(i["compacted_at"] for i in weeks.store.issues(status="sent"))


def test_ledger_retention_days_0_never_compacts(make_site, runner):
    ctx = make_site(ledger_retention_days=0)
    assert ctx.config.ledger_retention_days == 0
    from newsletter.retention import compact_ledger
    assert compact_ledger(ctx.config, ctx.store, datetime(2100, 1, 1, tzinfo=timezone.utc)) == 0
