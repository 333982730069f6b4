"""Issue lifecycle, cadences, topics and cron, over eight weeks of publishing (time travel)."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone

import pytest
import time_machine

from newsletter.cli import cli
from newsletter.select import matching, period_for

from .conftest import read_maildir

START = date(2026, 9, 28)  # a Monday
WEEKS = 8
TOPICS = ["MS", "NMOSD", "MOGAD", "PML", "Autoimmune encephalitis"]

PEOPLE = [
    # email, segment, cadence, topics
    ("all-weekly@example.org", "patients", "weekly", []),
    ("ms-weekly@example.org", "patients", "weekly", ["MS"]),
    ("monthly@example.org", "patients", "monthly", []),
    ("nmosd-carer@example.org", "caregivers", "weekly", ["NMOSD", "MOGAD"]),
    ("doc@example.org", "clinicians", "weekly", []),
    ("doc-monthly@example.org", "clinicians", "monthly", ["PML"]),
]


def summaries_over_weeks() -> list[dict]:
    """Two or three summaries a week, on varying days, rotating topics."""
    out = []
    for n in range(WEEKS * 3 - 2):
        day = START + timedelta(days=(n * 7) // 3 + n % 2)
        topics = [TOPICS[n % len(TOPICS)]] + (["MS"] if n % 4 == 0 and TOPICS[n % len(TOPICS)] != "MS" else [])
        out.append({"title": f"Study number {n}", "slug": f"study-{n}", "published": day.isoformat(),
                    "findings": f"Findings of study {n}.", "limitations": "Small sample.",
                    "source_url": f"https://doi.org/10.5555/sample.{n}", "topics": topics})
    return out


@pytest.fixture
def scheduled(make_site, runner, tmp_path):
    ctx = make_site(editors_email="editors@example.org")
    feed = tmp_path / "summaries.json"
    feed.write_text(json.dumps(summaries_over_weeks()))
    config = str(ctx.config.source)
    result = runner.invoke(cli, ["--config", config, "summaries", "import", str(feed)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for address, segment, cadence, topics in PEOPLE:
        args = ["--config", config, "subscribers", "add", address, "--segment", segment, "--cadence", cadence,
                "--confirmed"] + [a for t in topics for a in ("--topic", t)]
        assert runner.invoke(cli, args, catch_exceptions=False).exit_code == 0
    return ctx


def cron(runner, ctx, when: datetime, *args: str):
    """What a crontab line does at `when`: no --now, the clock itself is moved."""
    with time_machine.travel(when.replace(tzinfo=timezone.utc), tick=False):
        result = runner.invoke(cli, ["--config", str(ctx.config.source), "digest", "run", *args],
                               catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def run_eight_weeks(runner, ctx):
    for week in range(WEEKS + 1):
        monday = datetime.combine(START + timedelta(weeks=week), datetime.min.time()).replace(hour=7)
        cron(runner, ctx, monday, "--cadence", "weekly")
        if monday.day <= 7:
            cron(runner, ctx, monday.replace(minute=15), "--cadence", "monthly")
        cron(runner, ctx, monday.replace(minute=30), "--send-only")


def received(ctx) -> dict[str, Counter]:
    """email -> Counter of summary slugs, from the ledger's sent deliveries."""
    rows = ctx.store.query("""SELECT sub.email, s.slug, s.topics FROM deliveries d
                              JOIN subscribers sub ON sub.id = d.subscriber_id
                              JOIN issue_summaries x ON x.issue_id = d.issue_id
                              JOIN summaries s ON s.id = x.summary_id
                              WHERE d.status = 'sent'""")
    got: dict[str, Counter] = defaultdict(Counter)
    person_topics = {p[0]: p[3] for p in PEOPLE}
    for row in rows:
        # An issue carries every topic; a subscriber's copy only those matching their choice.
        if matching([{"topics": json.loads(row["topics"])}], person_topics[row["email"]]):
            got[row["email"]][row["slug"]] += 1
    return got


def outbox_messages(ctx) -> list[email.message.EmailMessage]:
    return read_maildir(ctx.config.outbox)


def test_eight_weeks_every_summary_reaches_every_eligible_subscriber_once(scheduled, runner):
    run_eight_weeks(runner, scheduled)
    got = received(scheduled)
    summaries = summaries_over_weeks()
    last_weekly = START + timedelta(weeks=WEEKS)
    monthly_runs = [START + timedelta(weeks=w) for w in range(WEEKS + 1) if (START + timedelta(weeks=w)).day <= 7]
    for address, _segment, cadence, topics in PEOPLE:
        last_run = last_weekly if cadence == "weekly" else monthly_runs[-1]
        eligible = {s["slug"] for s in matching(summaries, topics) if date.fromisoformat(s["published"]) <= last_run}
        assert set(got[address]) == eligible, address
        assert all(n == 1 for n in got[address].values()), (address, got[address])
    # The outbox agrees with the ledger: one message per sent delivery, topics honoured in the content.
    messages = outbox_messages(scheduled)
    sent = scheduled.store.delivery_counts().get("sent", 0)
    assert len(messages) == sent
    for msg in messages:
        if msg["To"].addresses[0].addr_spec == "ms-weekly@example.org":
            text = msg.get_body(("plain",)).get_content()
            lines = set(text.splitlines())
            shown = [s for s in summaries if s["title"] in lines]
            assert shown and all("MS" in s["topics"] for s in shown)


def test_a_summary_arrives_in_the_first_digest_after_it_is_published(scheduled, runner):
    run_eight_weeks(runner, scheduled)
    rows = scheduled.store.query("""SELECT s.slug, s.published, i.period FROM issue_summaries x
                                    JOIN issues i ON i.id = x.issue_id JOIN summaries s ON s.id = x.summary_id
                                    WHERE i.segment = 'patients' AND i.cadence = 'weekly'""")
    assert rows
    for row in rows:
        published = date.fromisoformat(row["published"])
        next_monday = published + timedelta(days=(7 - published.weekday()) % 7)  # a run sees today's too
        expected = period_for(datetime.combine(next_monday, datetime.min.time()), "weekly").key
        assert row["period"] == expected, row


def test_monthly_subscribers_get_only_monthly_digests(scheduled, runner):
    run_eight_weeks(runner, scheduled)
    periods = scheduled.store.query("""SELECT DISTINCT i.period, i.cadence FROM deliveries d
                                       JOIN subscribers s ON s.id = d.subscriber_id JOIN issues i ON i.id = d.issue_id
                                       WHERE s.email = 'monthly@example.org' AND d.status = 'sent'""")
    assert {p["cadence"] for p in periods} == {"monthly"}
    assert sorted(p["period"] for p in periods) == ["2026-10", "2026-11"]


def test_running_twice_in_a_period_creates_and_sends_nothing_more(scheduled, runner):
    when = datetime(2026, 10, 12, 7, 0)
    cron(runner, scheduled, when, "--cadence", "weekly")
    before = (len(scheduled.store.issues()), scheduled.store.delivery_counts())
    second = cron(runner, scheduled, when + timedelta(hours=3), "--cadence", "weekly")
    assert (len(scheduled.store.issues()), scheduled.store.delivery_counts()) == before
    assert "sent 0" in second.output


def test_a_variant_without_summaries_gets_no_email(scheduled, runner):
    # The week of 2026-10-05 only published topics none of which the NMOSD/MOGAD caregiver follows? Find one.
    cron(runner, scheduled, datetime(2026, 10, 5, 7, 0), "--cadence", "weekly")
    issue = scheduled.store.query("SELECT * FROM issues WHERE segment = 'caregivers'")[0]
    topics = {t for s in scheduled.store.issue_summaries(issue["id"]) for t in s["topics"]}
    deliveries = scheduled.store.deliveries(issue["id"])
    assert len(deliveries) == 1
    if topics & {"NMOSD", "MOGAD"}:
        assert deliveries[0]["status"] == "sent"
    else:
        assert deliveries[0]["status"] == "skipped"
        assert "topics" in deliveries[0]["error"]


def test_cron_fired_twice_at_once_yields_one_issue_per_segment(scheduled):
    config = str(scheduled.config.source)
    cmd = [sys.executable, "-c", "from newsletter.cli import cli; cli()", "--config", config, "digest", "run",
           "--cadence", "weekly", "--now", "2026-10-19T07:00:00"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    issues = scheduled.store.issues()
    assert Counter(i["segment"] for i in issues) == Counter({"patients": 1, "caregivers": 1, "clinicians": 1})
    per_person = Counter(m["To"].addresses[0].addr_spec for m in outbox_messages(scheduled))
    assert per_person and max(per_person.values()) == 1


def test_approval_gates_sending(make_site, runner, tmp_path):
    ctx = make_site("gated", require_approval="yes", editors_email="editors@example.org")
    feed = tmp_path / "one.json"
    feed.write_text(json.dumps(summaries_over_weeks()[:3]))
    config = str(ctx.config.source)
    runner.invoke(cli, ["--config", config, "summaries", "import", str(feed)], catch_exceptions=False)
    runner.invoke(cli, ["--config", config, "subscribers", "add", "p@example.org", "--segment", "patients",
                        "--confirmed"], catch_exceptions=False)
    cron(runner, ctx, datetime(2026, 10, 12, 7, 0), "--cadence", "weekly")
    issue = ctx.store.query("SELECT * FROM issues WHERE segment = 'patients'")[0]
    assert issue["status"] == "draft"
    assert ctx.store.delivery_counts() == {}
    notices = [m for m in outbox_messages(ctx) if m["To"].addresses[0].addr_spec == "editors@example.org"]
    assert len(notices) == 1 and f"/editor/issues/{issue['id']}" in notices[0].get_body(("plain",)).get_content()

    cron(runner, ctx, datetime(2026, 10, 12, 7, 30), "--send-only")
    assert ctx.store.delivery_counts() == {}

    test = runner.invoke(cli, ["--config", config, "issues", "test-send", str(issue["id"]), "--to", "ed@example.org"],
                         catch_exceptions=False)
    assert test.exit_code == 0
    test_msgs = [m for m in outbox_messages(ctx) if m["To"].addresses[0].addr_spec == "ed@example.org"]
    assert len(test_msgs) == 1 and test_msgs[0]["Subject"].startswith("[TEST]")
    assert ctx.store.delivery_counts() == {}

    assert runner.invoke(cli, ["--config", config, "issues", "approve", str(issue["id"])]).exit_code == 0
    cron(runner, ctx, datetime(2026, 10, 12, 7, 40), "--send-only")
    assert ctx.store.delivery_counts() == {"sent": 1}
    assert ctx.store.get_issue(issue["id"])["status"] == "sent"
    again = runner.invoke(cli, ["--config", config, "issues", "cancel", str(issue["id"])])
    assert again.exit_code == 1 and "is sent" in again.output


def test_an_edited_summary_is_not_sent_again_unless_an_editor_adds_the_revision(scheduled, runner, tmp_path):
    config = str(scheduled.config.source)
    cron(runner, scheduled, datetime(2026, 10, 5, 7, 0), "--cadence", "weekly")
    first = summaries_over_weeks()[0]
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**first, "findings": "Corrected findings."}))
    out = runner.invoke(cli, ["--config", config, "summaries", "import", str(fixed)], catch_exceptions=False)
    assert "1 new revisions" in out.output
    cron(runner, scheduled, datetime(2026, 10, 12, 7, 0), "--no-send", "--cadence", "weekly")
    week2 = scheduled.store.query("SELECT * FROM issues WHERE segment = 'patients' AND period = '2026-W42'")[0]
    assert first["slug"] not in {s["slug"] for s in scheduled.store.issue_summaries(week2["id"])}

    gated = scheduled.store.set_issue_status(week2["id"], "draft", expect=["approved"])
    assert gated
    out = runner.invoke(cli, ["--config", config, "issues", "add-update", str(week2["id"]), first["slug"]],
                        catch_exceptions=False)
    assert "revision 2" in out.output
    scheduled.store.set_issue_status(week2["id"], "approved", expect=["draft"])
    cron(runner, scheduled, datetime(2026, 10, 12, 7, 30), "--send-only")
    msgs = [m for m in outbox_messages(scheduled) if m["To"].addresses[0].addr_spec == "all-weekly@example.org"]
    latest = max(msgs, key=lambda m: int(m["X-Newsletter-Issue"]))
    text = latest.get_body(("plain",)).get_content()
    assert "UPDATED: Study number 0" in text and "Corrected findings." in text


def test_status_reports_latest_issues_and_what_needs_attention(scheduled, runner):
    cron(runner, scheduled, datetime(2026, 10, 12, 7, 0), "--cadence", "weekly")
    issue_id = scheduled.store.issues()[0]["id"]
    delivery = scheduled.store.deliveries(issue_id)[0]
    scheduled.store.mark_deliveries([delivery["id"]], "unknown", error="connection lost during DATA")
    out = runner.invoke(cli, ["--config", str(scheduled.config.source), "status"], catch_exceptions=False).output
    assert "patients    weekly   issue" in out
    assert f"Needs attention: issue {issue_id}: 1 unknown" in out
    assert "Subscribers: active 6" in out


def test_a_reader_who_changes_segment_does_not_get_the_same_summaries_again(scheduled, runner, tmp_path):
    """At most once across all their digests, even when the audience they belong to changes."""
    config = str(scheduled.config.source)
    # Week of 12 October: only the patients' issue is built and sent.
    cron(runner, scheduled, datetime(2026, 10, 12, 7, 0), "--cadence", "weekly", "--segment", "patients")
    mover = scheduled.store.get_subscriber("all-weekly@example.org")
    first = {s["slug"] for i in scheduled.store.issues() for s in scheduled.store.issue_summaries(i["id"])}
    assert first and scheduled.store.deliveries(status="sent")
    scheduled.store.update_preferences(mover["id"], "caregivers", "weekly", [])
    fresh = {"title": "A fresh study", "slug": "fresh", "published": "2026-10-13", "findings": "New.",
             "limitations": "Small.", "source_url": "https://doi.org/10.5555/fresh", "topics": ["MS"]}
    (tmp_path / "fresh.json").write_text(json.dumps(fresh))
    runner.invoke(cli, ["--config", config, "summaries", "import", str(tmp_path / "fresh.json")], catch_exceptions=False)
    # Later the same week the caregivers' issue goes out: it carries those summaries, and the fresh one.
    cron(runner, scheduled, datetime(2026, 10, 13, 7, 0), "--cadence", "weekly", "--segment", "caregivers")
    carers = scheduled.store.find_issue("caregivers", "weekly", "2026-W42")["id"]
    carried = {s["slug"] for s in scheduled.store.issue_summaries(carers)}
    assert first <= carried and "fresh" in carried
    [msg] = [m for m in outbox_messages(scheduled)
             if m["To"].addresses[0].addr_spec == mover["email"] and m["X-Newsletter-Issue"] == str(carers)]
    lines = set(msg.get_body(("plain",)).get_content().splitlines())
    titles = {s["slug"]: s["title"] for s in summaries_over_weeks()}
    assert "A fresh study" in lines
    assert not any(titles[slug] in lines for slug in first)
    # A caregiver who never moved gets the whole issue, old summaries included.
    stayer = scheduled.store.get_subscriber("doc@example.org")
    scheduled.store.update_preferences(stayer["id"], "clinicians", "weekly", [])  # unchanged: not a move
    assert scheduled.store.get_subscriber("doc@example.org")["audience_changed_at"] is None


def test_periods_are_counted_in_the_configured_time_zone(make_site, runner, tmp_path):
    # Sunday 20:00 UTC is already Monday morning in Auckland: a new week there, not in UTC.
    moment = datetime(2026, 11, 22, 20, 0, tzinfo=timezone.utc)
    assert period_for(moment, "weekly", "UTC").key == "2026-W47"
    assert period_for(moment, "weekly", "Pacific/Auckland").key == "2026-W48"
    assert period_for(datetime(2026, 11, 30, 13, 0, tzinfo=timezone.utc), "monthly", "Pacific/Auckland").key == "2026-12"
    ctx = make_site("nz", timezone="Pacific/Auckland")
    feed = tmp_path / "nz.json"
    feed.write_text(json.dumps(summaries_over_weeks()[-3:]))
    config = str(ctx.config.source)
    runner.invoke(cli, ["--config", config, "summaries", "import", str(feed)], catch_exceptions=False)
    runner.invoke(cli, ["--config", config, "subscribers", "add", "kiwi@example.org", "--segment", "patients",
                        "--confirmed"], catch_exceptions=False)
    cron(runner, ctx, datetime(2026, 11, 22, 20, 0), "--cadence", "weekly")
    assert {i["period"] for i in ctx.store.issues()} == {"2026-W48"}
