"""Every place that changes content, subscribers or sends leaves an audit row naming who: the CLI user
(`cli:<user>`), a reader through their signed link (`subscriber`), or the provider whose report suppressed an
address (`provider:sendgrid`, `provider:bounce-mail`). Each through the real command, page or webhook path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from newsletter import feedback
from newsletter.bootstrap import sample_summary_files
from newsletter.cli import cli
from newsletter.cli.audit import cli_actor
from tests.conftest import SAMPLE_NOW, delivery_of, load_samples, read_maildir
from tests.test_bounces import bounce_of, bounce_box
from tests.test_web import (app, client, clock, csrf_from, drafts, form_token, make_app, subscribe,  # noqa: F401
                            tokens)
from tests.test_welcome import sign_up_and_confirm

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"


def invoke(runner, ctx, *args: str):
    result = runner.invoke(cli, ["--config", str(ctx.config.source), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def only(ctx, action: str) -> dict:
    [row] = ctx.store.audit_entries(action=action)
    return row


def test_summaries_import_and_pull_are_recorded(site, runner, tmp_path):
    feed = tmp_path / "rss.xml"
    shutil.copy(FEEDS / "rss.xml", feed)
    config = Path(site.config.source)
    config.write_text(config.read_text() + f'\n[[feeds]]\nurl = "{feed}"\n')
    ctx = site
    invoke(runner, ctx, "summaries", "import", *map(str, sample_summary_files()))
    row = only(ctx, "summaries.import")
    assert row["actor"] == cli_actor() and row["target"] == "summaries"
    assert row["detail"]["sources"] == len(sample_summary_files()) and row["detail"]["inserted"] > 0
    invoke(runner, ctx, "summaries", "pull")
    pulled = ctx.store.audit_entries(action="summaries.import")[0]  # newest first
    assert pulled["target"] == "feeds" and pulled["detail"]["feeds"] == [str(feed)]
    assert pulled["detail"]["inserted"] > 0
    invoke(runner, ctx, "summaries", "pull")  # nothing changed in the feed: no row
    assert len(ctx.store.audit_entries(action="summaries.import")) == 2


def test_subscribers_add_import_and_remove_are_recorded(site, runner, tmp_path):
    load_samples(site)
    invoke(runner, site, "subscribers", "add", "ana@example.org", "--segment", "caregivers", "--confirmed")
    ana = site.store.get_subscriber("ana@example.org")
    row = only(site, "subscriber.import")
    assert (row["actor"], row["target"]) == (cli_actor(), f"subscriber:{ana['id']}")
    people = tmp_path / "people.csv"
    people.write_text("email,name,segment,cadence,topics,status\nbo@example.org,Bo,patients,weekly,,active\n"
                      "not-an-address,X,patients,weekly,,active\n", encoding="utf-8")
    invoke(runner, site, "subscribers", "import", str(people))
    row = site.store.audit_entries(action="subscriber.import")[0]
    assert row["target"] == "file:people.csv" and row["detail"]["added"] == 1 and row["detail"]["rejected"] == 1
    assert "bo@example.org" not in json.dumps(row)  # counts, not addresses
    invoke(runner, site, "subscribers", "remove", "ana@example.org")
    row = only(site, "subscriber.erase")
    assert (row["actor"], row["target"]) == (cli_actor(), f"subscriber:{ana['id']}")
    assert site.store.get_subscriber("ana@example.org") is None
    assert site.store.audit_entries(target=f"subscriber:{ana['id']}", action="subscriber.import")[0]["detail"] == {}


def test_issues_send_and_digest_run_record_each_issue_sent(drafts, runner):
    first, *others = [i["id"] for i in drafts.store.issues()]
    for issue_id in (first, *others):
        invoke(runner, drafts, "issues", "approve", str(issue_id))
    invoke(runner, drafts, "issues", "send", str(first))
    row = only(drafts, "issue.send")
    assert (row["actor"], row["target"]) == (cli_actor(), f"issue:{first}")
    assert row["detail"]["sent"] == drafts.store.delivery_counts(first)["sent"]
    invoke(runner, drafts, "digest", "run", "--send-only", "--now", SAMPLE_NOW.isoformat())
    rows = drafts.store.audit_entries(action="issue.send")
    assert sorted(r["target"] for r in rows) == sorted(f"issue:{i}" for i in (first, *others))


def test_what_readers_do_through_their_links_is_recorded_as_the_subscriber(client, drafts):
    sign_up_and_confirm(client, drafts)
    sub = drafts.store.get_subscriber("reader@example.org")
    target = f"subscriber:{sub['id']}"
    assert only(drafts, "subscriber.confirm")["actor"] == "subscriber"
    t = tokens(drafts)
    prefs = f"/p/{t.sign('preferences', sub['id'])}"
    page = client.get(prefs)
    client.post(prefs, data={"csrf_token": csrf_from(page), "segment": "patients", "cadence": "monthly",
                             "topics": ["NMOSD"]})
    row = only(drafts, "subscriber.preferences")
    assert (row["actor"], row["target"], row["detail"]) == ("subscriber", target, {"segment": ["caregivers", "patients"]})
    response = client.post(f"/u/{t.sign('unsubscribe', sub['id'])}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    row = only(drafts, "subscriber.unsubscribe")
    assert (row["actor"], row["target"], row["detail"]) == ("subscriber", target, {"one_click": True})
    client.post(f"/u/{t.sign('unsubscribe', sub['id'])}", data={"List-Unsubscribe": "One-Click"})
    assert len(drafts.store.audit_entries(action="subscriber.unsubscribe")) == 1  # nothing changed the second time
    access = f"/a/{t.sign('access', sub['id'])}"  # erasing takes a fresh link sent to the address
    client.post(f"{access}/delete", data={"csrf_token": form_token(client, access)})
    assert drafts.store.get_subscriber("reader@example.org") is None
    assert only(drafts, "subscriber.erase")["actor"] == "subscriber"


def test_suppressions_from_the_webhook_and_bounce_mail_name_the_provider(make_site, runner):
    ctx = make_site("sent", bounce_mailbox="maildir:bounces")
    load_samples(ctx)
    invoke(runner, ctx, "digest", "run", "--cadence", "weekly", "--now", SAMPLE_NOW.isoformat())
    first, second = ctx.store.deliveries(status="sent")[:2]
    feedback.record_events(ctx.store, "sendgrid", [
        {"email": first["email"], "timestamp": 1_790_000_000, "event": "spamreport", "sg_event_id": "spam-1",
         "issue_id": str(first["issue_id"]), "subscriber_id": str(first["subscriber_id"])}])
    row = only(ctx, "subscriber.suppress")
    assert (row["actor"], row["target"]) == ("provider:sendgrid", f"subscriber:{first['subscriber_id']}")
    assert row["detail"]["status"] == ["active", "complained"]

    message = next(m for m in read_maildir(ctx.config.outbox) if delivery_of(m) == second["id"])
    box = bounce_box(ctx)
    box.add(bounce_of("postfix_user_unknown", message))
    box.close()
    invoke(runner, ctx, "bounces", "process")
    row = ctx.store.audit_entries(action="subscriber.suppress")[0]
    assert (row["actor"], row["target"]) == ("provider:bounce-mail", f"subscriber:{second['subscriber_id']}")
    assert row["detail"]["status"] == ["active", "bounced"]
