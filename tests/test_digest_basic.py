"""The first digest: selection per segment, delivery to the Maildir outbox, and a second run that sends nothing."""

from __future__ import annotations

import email
import email.policy
import html as htmllib
import json
import mailbox
import re
from datetime import timedelta
from pathlib import Path

import pytest

from newsletter.digest import DigestRunner
from newsletter.select import select_summaries
from newsletter.sources.summaries import read_sources
from newsletter.messengers import messenger_from_config
from newsletter.render import Renderer
from newsletter.settings import ConfigError
from newsletter.tokens import Tokens

from .conftest import POSTAL, SAMPLE_NOW, SECRET, delivery_of, load_samples, read_maildir

SITE_URL = "https://digest.example.org"
UNSUB_RE = re.compile(re.escape(SITE_URL) + r"/u/([A-Za-z0-9_.\-]+)")


def run_digest(ctx, now=SAMPLE_NOW, cadence="weekly"):
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments,
                          messenger_factory=lambda: messenger_from_config(ctx.config))
    return runner.run(cadence, now)


def outbox(ctx) -> list[email.message.EmailMessage]:
    return read_maildir(ctx.config.outbox)


def recipient(msg) -> str:
    return msg["To"].addresses[0].addr_spec


def add_summary(ctx, tmp_path: Path, title: str, published: str, topics: list[str], **extra) -> None:
    path = tmp_path / f"{len(list(tmp_path.glob('*.json')))}.json"
    path.write_text(json.dumps({"title": title, "published": published, "topics": topics,
                                "findings": f"Findings of {title}.", **extra}))
    ctx.store.upsert_summaries(read_sources([str(path)]))


def expected_recipients(ctx, issue_id: int) -> set[str]:
    """Active subscribers of the issue's segment and cadence whose topics match something in it."""
    issue = ctx.store.get_issue(issue_id)
    carried = {t.lower() for s in ctx.store.issue_summaries(issue_id) for t in s["topics"]}
    return {s["email"] for s in ctx.store.subscribers(segment=issue["segment"], status="active")
            if s["cadence"] == issue["cadence"] and (not s["topics"] or carried & {t.lower() for t in s["topics"]})}


def flat(text: str) -> str:
    return " ".join(text.split())


def html_words(markup: str) -> str:
    return flat(htmllib.unescape(re.sub(r"<[^>]+>", " ", markup)))


# -- selection --------------------------------------------------------------------

def test_one_issue_per_segment_sent_to_active_subscribers_only(loaded):
    report = run_digest(loaded)
    issues = loaded.store.issues()
    assert sorted(i["segment"] for i in issues) == sorted(loaded.segments)
    assert {i["status"] for i in issues} == {"sent"}
    assert [i["id"] for i in report.created] == [i["id"] for i in issues]

    expected = set().union(*(expected_recipients(loaded, i["id"]) for i in issues))
    messages = outbox(loaded)
    assert len(messages) == report.tally.sent == len(expected) > 0
    assert {recipient(m) for m in messages} == expected

    never = {s["email"] for s in loaded.store.subscribers() if s["status"] != "active" or s["cadence"] != "weekly"}
    assert {s["status"] for s in loaded.store.subscribers() if s["email"] in never} >= {"pending", "unsubscribed"}
    assert not never & {recipient(m) for m in messages}
    planned = {d["email"] for d in loaded.store.deliveries()}
    assert not never & planned  # pending and unsubscribed people are not even planned


def test_each_message_goes_to_the_segment_of_its_subscriber(loaded):
    run_digest(loaded)
    for msg in outbox(loaded):
        issue = loaded.store.get_issue(int(msg["X-Newsletter-Issue"]))
        assert loaded.store.get_subscriber(recipient(msg))["segment"] == issue["segment"]


def test_second_run_sends_nothing(loaded):
    first = run_digest(loaded)
    assert first.tally.sent > 0
    messages = len(outbox(loaded))
    deliveries = loaded.store.deliveries()

    second = run_digest(loaded)
    assert second.created == []
    assert second.tally.sent == 0
    assert len(outbox(loaded)) == messages
    assert loaded.store.deliveries() == deliveries

    # Later the same week, too.
    third = run_digest(loaded, SAMPLE_NOW + timedelta(days=2))
    assert third.created == [] and third.tally.sent == 0
    assert len(outbox(loaded)) == messages


def test_each_summary_goes_to_each_segment_once(loaded, tmp_path):
    run_digest(loaded)
    next_week = SAMPLE_NOW + timedelta(days=7)
    report = run_digest(loaded, next_week)
    assert report.created == []
    assert sorted(report.empty) == sorted(loaded.segments)  # nothing new: no issue at all

    # One summary published after the first run, one back-dated before it but imported only now:
    # selection is by what was sent, not by a time window.
    add_summary(loaded, tmp_path, "Published after the first digest", (SAMPLE_NOW + timedelta(days=3)).date().isoformat(), [])
    add_summary(loaded, tmp_path, "Back-dated but imported late", (SAMPLE_NOW - timedelta(days=5)).date().isoformat(), [])
    report = run_digest(loaded, next_week)
    assert len(report.created) == len(loaded.segments)
    for entry in report.created:
        titles = sorted(s["title"] for s in loaded.store.issue_summaries(entry["id"]))
        assert titles == ["Back-dated but imported late", "Published after the first digest"]

    for segment in loaded.segments:
        carried = loaded.store.query("""SELECT s.slug FROM issue_summaries x JOIN issues i ON i.id = x.issue_id
                                        JOIN summaries s ON s.id = x.summary_id WHERE i.segment = ?""", (segment,))
        slugs = [r["slug"] for r in carried]
        assert len(slugs) == len(set(slugs)), segment

    # Every subscriber got each issue once: no (issue, subscriber) twice, and nobody twice in one issue's mail.
    per_issue: dict[str, list[str]] = {}
    for msg in outbox(loaded):
        per_issue.setdefault(msg["X-Newsletter-Issue"], []).append(recipient(msg))
    for issue, people in per_issue.items():
        assert len(people) == len(set(people)), issue


def test_selection_is_newest_first_recent_published_and_capped(loaded, tmp_path):
    add_summary(loaded, tmp_path, "Not published yet", "2026-12-24", ["MS"])
    today = SAMPLE_NOW.date()
    eligible = [s for s in loaded.store.summaries()
                if (today - timedelta(days=45)).isoformat() <= s["published"] <= today.isoformat()]
    assert 3 < len(eligible) < len(loaded.store.summaries())  # the window really excludes some
    chosen = select_summaries(loaded.store, "patients", "weekly", today, max_age_days=45, limit=3)
    assert len(chosen) == 3
    assert [s["published"] for s in chosen] == sorted((s["published"] for s in eligible), reverse=True)[:3]
    assert "Not published yet" not in {s["title"] for s in chosen}
    everything = select_summaries(loaded.store, "patients", "weekly", today, max_age_days=45, limit=100)
    assert {s["id"] for s in everything} == {s["id"] for s in eligible}


def test_a_segment_with_nothing_new_gets_no_issue(site, tmp_path):
    site.store.upsert_subscribers([{"email": "p@example.org", "segment": "patients", "status": "active"}])
    report = run_digest(site)
    assert report.created == [] and sorted(report.empty) == sorted(site.segments)
    assert site.store.issues() == [] and outbox(site) == []


def test_topics_filter_what_a_subscriber_gets(loaded):
    loaded.store.upsert_subscribers([
        {"email": "pml.only@example.org", "segment": "patients", "topics": ["PML"], "status": "active"},
        {"email": "zebra.only@example.org", "segment": "patients", "topics": ["Zebra"], "status": "active"},
    ])
    run_digest(loaded)
    [issue] = [i for i in loaded.store.issues() if i["segment"] == "patients"]
    carried = loaded.store.issue_summaries(issue["id"])
    pml = [s["title"] for s in carried if "PML" in s["topics"]]
    other = [s["title"] for s in carried if "PML" not in s["topics"]]
    assert pml and other

    by_recipient = {recipient(m): m for m in outbox(loaded)}
    text = flat(by_recipient["pml.only@example.org"].get_body(("plain",)).get_content())
    html = html_words(by_recipient["pml.only@example.org"].get_body(("html",)).get_content())
    for title in pml:
        assert flat(title) in text and flat(title) in html
    for title in other:
        assert flat(title) not in text and flat(title) not in html
    everyone = flat(by_recipient["maria.lopez@example.org"].get_body(("plain",)).get_content())
    assert all(flat(t) in everyone for t in pml + other)  # no topics chosen: every topic

    assert "zebra.only@example.org" not in by_recipient
    zebra = loaded.store.get_subscriber("zebra.only@example.org")
    [row] = [d for d in loaded.store.deliveries(issue["id"]) if d["subscriber_id"] == zebra["id"]]
    assert row["status"] == "skipped"


# -- the messages ----------------------------------------------------------------

def test_maildir_messages_parse_into_text_then_html_with_footer_and_unsubscribe(loaded):
    run_digest(loaded)
    messages = outbox(loaded)
    assert messages
    disclaimer = Renderer.from_config(loaded.config).disclaimer()
    assert len(disclaimer) >= 1 and all(len(p) > 40 for p in disclaimer)
    tokens = Tokens(SECRET)
    for msg in messages:
        for header in ("Subject", "From", "To", "Date", "Message-ID"):
            assert msg[header], header
        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        text, html = parts[0].get_content(), parts[1].get_content()
        for paragraph in disclaimer:
            assert flat(paragraph) in flat(text)
            assert flat(paragraph) in html_words(html)
        assert flat(POSTAL) in flat(text) and flat(POSTAL) in html_words(html)

        [header_link] = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert header_link.startswith(SITE_URL + "/u/")
        assert header_link in [m.group(0) for m in UNSUB_RE.finditer(text)]
        assert header_link in [m.group(0) for m in UNSUB_RE.finditer(html)]
        subscriber = loaded.store.get_subscriber(recipient(msg))
        token = UNSUB_RE.fullmatch(header_link).group(1)
        assert tokens.verify("unsubscribe", token) == subscriber["id"]
        assert "-nl-" not in text and "-nl-" not in html  # every placeholder was filled


def test_each_recipient_has_their_own_unsubscribe_token(loaded):
    run_digest(loaded)
    links = [msg["List-Unsubscribe"] for msg in outbox(loaded)]
    assert len(links) == len(set(links)) > 1


def test_every_delivery_is_recorded(loaded):
    report = run_digest(loaded)
    box = mailbox.Maildir(loaded.config.outbox, factory=None, create=False)
    try:
        keys = set(box.keys())
    finally:
        box.close()
    rows = loaded.store.deliveries()
    sent = [d for d in rows if d["status"] == "sent"]
    assert {d["status"] for d in rows} <= {"sent", "skipped"}
    assert len(sent) == report.tally.sent == len(keys)
    assert {d["provider_id"] for d in sent} == keys
    for msg in outbox(loaded):
        row = next(d for d in rows if d["id"] == delivery_of(msg))
        assert row["email"] == recipient(msg)
        assert row["issue_id"] == int(msg["X-Newsletter-Issue"])


def test_raw_html_in_a_summary_never_reaches_the_email_unescaped(site, tmp_path):
    site.store.upsert_subscribers([{"email": "reader@example.org", "segment": "patients", "status": "active"}])
    add_summary(site, tmp_path, "Title with <i>markup</i> & an ampersand", "2026-11-18", ["MS"],
                findings='Useful finding. <script>alert("owned")</script> <img src=x onerror="alert(1)"> '
                         '<a href="javascript:alert(2)">click</a> and **bold** words.',
                patients='<iframe src="https://evil.example"></iframe>Plain advice.')
    run_digest(site)
    [msg] = outbox(site)
    html = msg.get_body(("html",)).get_content()
    lowered = html.lower()
    for bad in ("<script", "onerror", "javascript:", "<iframe", "<img src=x", "<i>markup</i>"):
        assert bad not in lowered, bad
    assert "&lt;i&gt;markup&lt;/i&gt;" in html  # the title is shown as text, escaped
    assert "<strong>bold</strong>" in html  # Markdown in bodies is rendered
    assert "Plain advice." in html and "Useful finding." in html


def test_nothing_is_sent_without_a_postal_address(make_site):
    ctx = make_site(postal_address="")
    load_samples(ctx)
    with pytest.raises(ConfigError, match="postal_address"):
        run_digest(ctx)
    assert outbox(ctx) == []
    assert ctx.store.deliveries() == []
