"""The report's numbers against a ledger built by a real digest run (Maildir), with events and unsubscribes
recorded through the store and the feedback stage."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import time_machine

from newsletter import feedback
from newsletter.cli import cli
from newsletter.digest import DigestRunner
from newsletter.messengers import messenger_from_config
from newsletter.report import issue_rows, subscriber_rows

from .conftest import SAMPLE_NOW, read_maildir


def run_digest(ctx):
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=lambda: messenger_from_config(ctx.config))
    return runner.run("weekly", SAMPLE_NOW)


def sendgrid_event(kind: str, sub: dict, issue_id: int, when: datetime, n: int, **extra) -> dict:
    return {"email": sub["email"], "timestamp": int(when.timestamp()), "event": kind, "sg_event_id": f"{kind}-{n}",
            "issue_id": str(issue_id), "subscriber_id": str(sub["subscriber_id"]), **extra}


def sent_deliveries(ctx, issue_id):
    return ctx.store.deliveries(issue_id=issue_id, status="sent")


def test_report_counts_what_the_run_and_the_readers_did(loaded, runner):
    loaded.store.upsert_subscribers([{"email": f"reader{i}@example.org", "segment": "patients", "status": "active"}
                                     for i in range(4)])
    run_digest(loaded)
    issues = {i["segment"]: i for i in loaded.store.issues()}
    issue = issues["patients"]
    recipients = [dict(d) for d in sent_deliveries(loaded, issue["id"])]
    assert len(recipients) >= 5
    mailed = [m for m in read_maildir(loaded.config.outbox)
              if m["To"].addresses[0].addr_spec in {r["email"] for r in recipients}]
    assert len(mailed) == len(recipients)
    unsub, hard, soft, complainer = recipients[:4]
    now = datetime.now(timezone.utc)

    loaded.store.set_subscriber_status(unsub["subscriber_id"], "unsubscribed")  # the one-click link's effect
    events = [sendgrid_event("bounce", hard, issue["id"], now, 1, type="bounce", reason="550 5.1.1 unknown user"),
              sendgrid_event("deferred", soft, issue["id"], now, 2, response="421 try later"),
              sendgrid_event("bounce", soft, issue["id"], now, 3, type="blocked", reason="blocked for now"),
              sendgrid_event("spamreport", complainer, issue["id"], now, 4),
              sendgrid_event("open", hard, issue["id"], now, 5),
              sendgrid_event("open", soft, issue["id"], now, 6),
              sendgrid_event("open", soft, issue["id"], now, 7),  # a second open by the same reader
              sendgrid_event("click", soft, issue["id"], now, 8)]
    counts = feedback.record_events(loaded.store, "sendgrid", events)
    assert counts["stored"] == len(events)
    # Someone who leaves more than 7 days after the issue is not counted against it.
    with time_machine.travel(now + timedelta(days=8), tick=False):
        loaded.store.set_subscriber_status(recipients[4]["subscriber_id"], "unsubscribed")
    # A status the ledger gains later (another stage's) is counted as it is, without a change to the report.
    other = issues["clinicians"]
    [first] = sent_deliveries(loaded, other["id"])[:1]
    loaded.store.conn.execute("UPDATE deliveries SET status = 'deferred' WHERE id = ?", (first["id"],))

    rows = {r["issue"]: r for r in issue_rows(loaded.store, tracking=True)}
    row = rows[issue["id"]]
    ledger = loaded.store.delivery_counts(issue["id"])
    assert row["planned"] == sum(ledger.values())
    assert row["sent"] == len(mailed)
    assert (row["failed"], row["unknown"], row["deferred"]) == (0, 0, 0)
    assert (row["hard_bounces"], row["soft_bounces"], row["complaints"], row["unsubscribes"]) == (1, 1, 1, 1)
    assert (row["opens"], row["clicks"]) == (2, 1)  # unique per reader
    assert rows[other["id"]]["deferred"] == 1
    assert rows[other["id"]]["sent"] == len(sent_deliveries(loaded, other["id"]))
    assert {r["segment"] for r in rows.values()} == set(loaded.segments)

    untracked = {r["issue"]: r for r in issue_rows(loaded.store, tracking=False)}[issue["id"]]
    assert (untracked["opens"], untracked["clicks"]) == (None, None)

    config = str(loaded.config.source)
    as_json = runner.invoke(cli, ["--config", config, "report", str(issue["id"]), "--format", "json"],
                            catch_exceptions=False)
    assert as_json.exit_code == 0, as_json.output
    [printed] = json.loads(as_json.stdout)
    assert printed == {**row, "opens": None, "clicks": None}  # the maildir backend tracks nothing
    as_csv = runner.invoke(cli, ["--config", config, "report", "--format", "csv"], catch_exceptions=False)
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [int(r["issue"]) for r in table] == sorted(rows)
    assert table[0]["opens"] == ""
    as_table = runner.invoke(cli, ["--config", config, "report"], catch_exceptions=False)
    assert as_table.stdout.splitlines()[0].split()[:6] == ["issue", "segment", "cadence", "period", "issue_status",
                                                           "planned"]
    assert "not tracked with the maildir backend" in as_table.stderr


def test_report_of_an_unknown_issue_is_one_line(site, runner):
    result = runner.invoke(cli, ["--config", str(site.config.source), "report", "99"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: issue 99: no such issue, or nothing of it reached the ledger yet"


def test_subscribers_over_time_per_week_and_segment(site, runner):
    weeks = [datetime(2026, 11, 2, 9, tzinfo=timezone.utc), datetime(2026, 11, 9, 9, tzinfo=timezone.utc)]
    with time_machine.travel(weeks[0], tick=False):
        site.store.upsert_subscribers([{"email": f"p{i}@example.org", "segment": "patients"} for i in range(3)]
                                      + [{"email": "c@example.org", "segment": "caregivers", "status": "active"}])
        site.store.set_subscriber_status(site.store.get_subscriber("p0@example.org")["id"], "active")
    with time_machine.travel(weeks[1], tick=False):
        site.store.set_subscriber_status(site.store.get_subscriber("p1@example.org")["id"], "active")
        site.store.set_subscriber_status(site.store.get_subscriber("p0@example.org")["id"], "unsubscribed")
        site.store.set_subscriber_status(site.store.get_subscriber("c@example.org")["id"], "bounced")
    rows = subscriber_rows(site.store, "UTC")
    by_key = {(r["week"], r["segment"]): r for r in rows}
    assert by_key[("2026-W45", "patients")] == {"week": "2026-W45", "segment": "patients", "new": 3, "confirmed": 1,
                                                "unsubscribed": 0, "bounced": 0, "complained": 0}
    assert by_key[("2026-W45", "caregivers")]["new"] == 1 and by_key[("2026-W45", "caregivers")]["confirmed"] == 1
    assert by_key[("2026-W46", "patients")]["confirmed"] == 1  # p1; p0's first confirmation stays in W45
    assert by_key[("2026-W46", "patients")]["unsubscribed"] == 1
    assert by_key[("2026-W46", "caregivers")]["bounced"] == 1
    result = runner.invoke(cli, ["--config", str(site.config.source), "report", "--subscribers", "--format", "json"],
                           catch_exceptions=False)
    assert json.loads(result.stdout) == rows
