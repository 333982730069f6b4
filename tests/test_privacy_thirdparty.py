"""What third parties receive names no reader's segment or topics: SendGrid (Prism, and the fault stub) and every
message header in a Maildir outbox, after real runs with every segment and every topic; tracking always explicit."""

from __future__ import annotations

import json
import re

import pytest

from newsletter.digest import DigestRunner
from newsletter.messengers import messenger_from_config
from newsletter.messengers import sendgrid as sendgrid_module
from newsletter.model import Notice, derive_key, list_code
from tests.conftest import SAMPLE_NOW, load_samples, read_maildir
from tests.test_sendgrid_contract import recorded_payloads
from tests.test_sendgrid_faults import messenger_for, stub  # noqa: F401  (the stub fixture)

NO_TRACKING = {"click_tracking": {"enable": False, "enable_text": False}, "open_tracking": {"enable": False},
               "subscription_tracking": {"enable": False}}


def every_audience(ctx) -> None:
    """The samples, plus one active reader per segment and cadence holding every topic."""
    load_samples(ctx)
    topics = list(ctx.topics.names)
    audiences = [(seg, cad) for seg in ctx.segments for cad in ("weekly", "monthly")]
    ctx.store.upsert_subscribers_with_consent([
        {"email": f"reader-{n}@example.org", "name": "", "segment": seg, "cadence": cad, "topics": topics,
         "status": "active", "consent": {"method": "cli", "basis": "test readers"}}
        for n, (seg, cad) in enumerate(audiences)])


def forbidden(ctx) -> list[str]:
    """Segment keys and display names, and topic names (as words: "MS" must not match "MSc")."""
    return ([s.name for s in ctx.segments.values()] + [s.display_name for s in ctx.segments.values()]
            + list(ctx.topics.names))


def names_any(ctx, text: str) -> list[str]:
    text = text.replace(ctx.config.sender_name, "")  # the site's own name is the same for every reader
    return [w for w in forbidden(ctx) if re.search(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])", text, re.I)]


def metadata(payload: dict) -> str:
    """What SendGrid files a request under, besides the content the reader reads."""
    return json.dumps([payload.get("categories"), payload.get("custom_args"),
                       [(p.get("custom_args"), p.get("headers")) for p in payload["personalizations"]],
                       payload.get("headers")])


@pytest.fixture
def prism_everyone(make_site, prism, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    ctx = make_site(backend="sendgrid", sendgrid_host=prism.url, sendgrid_timeout=10.0)
    every_audience(ctx)
    return ctx


def test_no_sendgrid_request_names_a_segment_or_topic_and_tracking_is_explicit(prism_everyone, monkeypatch):
    ctx = prism_everyone
    payloads = recorded_payloads(monkeypatch)
    for cadence in ("weekly", "monthly"):
        report = DigestRunner(ctx.config, ctx.store, ctx.segments).run(cadence, SAMPLE_NOW)
        assert report.tally.failed == 0
    assert {i["segment"] for i in ctx.store.query("SELECT segment FROM issues")} == set(ctx.segments)
    assert len(payloads) >= 6
    key = derive_key(ctx.config.require_secret(), "list codes")
    codes = set()
    for payload in payloads:
        assert names_any(ctx, metadata(payload)) == []
        assert "variant" not in payload["custom_args"]
        assert payload["tracking_settings"] == NO_TRACKING
        issue = ctx.store.get_issue(int(payload["custom_args"]["issue_id"]))
        assert payload["categories"] == [list_code(key, issue["segment"], issue["cadence"])]
        codes.add(payload["categories"][0])
    assert len(codes) == 6  # one opaque code per segment and cadence
    # without the key the code cannot be found from the segment's name
    assert list_code(b"", "patients", "weekly") not in codes


def test_tracking_settings_follow_the_site(make_site, prism, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    ctx = make_site(backend="sendgrid", sendgrid_host=prism.url, track_opens=True, track_clicks=True)
    load_samples(ctx)
    payloads = recorded_payloads(monkeypatch)
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW)
    assert payloads
    for payload in payloads:
        assert payload["tracking_settings"] == {"click_tracking": {"enable": True, "enable_text": True},
                                                "open_tracking": {"enable": True},
                                                "subscription_tracking": {"enable": False}}


def test_a_notice_turns_all_tracking_off_and_its_subject_cannot_break_a_line(make_site, stub):  # noqa: F811
    ctx = make_site(backend="sendgrid", sendgrid_host=stub.url, track_opens=True, track_clicks=True)
    messenger = messenger_for(ctx, stub)
    try:
        outcome = messenger.send_notice(Notice(to="r@example.org", subject="Confirm\r\nBcc: x@example.org", text="t"))
    finally:
        messenger.close()
    assert outcome.status == "sent"
    body = stub.seen[-1].body
    assert body["tracking_settings"] == NO_TRACKING
    assert body["subject"] == "Confirm Bcc: x@example.org"


def test_the_fault_stub_sees_no_segment_or_topic_either(make_site, stub, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    ctx = make_site(backend="sendgrid", sendgrid_host=stub.url)
    every_audience(ctx)
    messenger = messenger_from_config(ctx.config.replace(sendgrid_timeout=5.0))
    for cadence in ("weekly", "monthly"):
        DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=lambda: messenger).run(cadence, SAMPLE_NOW)
    bodies = [s.body for s in stub.accepted()]
    assert len(bodies) >= 6
    for body in bodies:
        assert names_any(ctx, metadata(body)) == []
        assert body["tracking_settings"] == NO_TRACKING


def test_a_rendered_subject_is_normalised_like_a_header():
    from newsletter.model import Rendered, Sender
    rendered = Rendered(issue_id=1, segment="patients", cadence="weekly", variant="ms", subject=" A\r\nB\u2028  C ",
                        preheader="", html="<p>x</p>", text="x", summary_ids=[], full_cards=0)
    payload = sendgrid_module._common(rendered, Sender("d@example.org"), 0, False)
    assert payload["subject"] == "A B C"
    assert "patients" not in json.dumps(payload["categories"]) and "variant" not in payload["custom_args"]


def test_no_maildir_header_names_a_segment_or_topic(make_site):
    ctx = make_site()
    every_audience(ctx)
    for cadence in ("weekly", "monthly"):
        DigestRunner(ctx.config, ctx.store, ctx.segments).run(cadence, SAMPLE_NOW)
    messages = read_maildir(ctx.config.outbox)
    assert len(messages) >= 6
    display_names = [s.display_name for s in ctx.segments.values()]
    for message in messages:
        for name, value in message.items():
            if name == "Subject":  # the issue's own words (titles may name a condition), never its audience
                assert not [d for d in display_names if d.lower() in str(value).lower()]
            else:
                assert names_any(ctx, str(value)) == [], (name, value)
