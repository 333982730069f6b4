"""The welcome email: sent once when a reader confirms, through the configured messenger (a real Maildir, a real
SMTP server), recorded in the ledger like a digest delivery, and never a second time."""

from __future__ import annotations

import re
import threading
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import lxml.html
import pytest
import time_machine
from hypothesis import given, strategies as st

from newsletter.context import Context
from newsletter.digest import DigestRunner
from newsletter.messengers import messenger_from_config
from newsletter.model import PLACEHOLDERS, recipient_values
from newsletter.render import Renderer
from newsletter.welcome import next_send_day, render_welcome, send_welcome
from tests.conftest import SAMPLE_NOW, delivery_of, load_samples
from tests.test_web import (app, clock, client, csrf_from, drafts, form_token, mails_to, make_app,  # noqa: F401
                            path_of, subscribe, text_of, tokens)

WELCOME = "Welcome to MS Research Digest"
#: A Tuesday evening: the next weekly send is Monday 14 December, the next monthly one Monday 4 January.
TUESDAY = datetime(2026, 12, 8, 22, 0, tzinfo=timezone.utc)


def welcomes_to(ctx, address: str) -> list:
    return [m for m in mails_to(ctx, address) if m["Subject"] == WELCOME]


def confirmation_token(ctx, address: str) -> str:
    [msg] = [m for m in mails_to(ctx, address) if m["Subject"].startswith("Confirm")]
    return re.search(r"/confirm/(\S+)", text_of(msg)).group(1)


def sign_up_and_confirm(client, ctx, address: str = "reader@example.org", **fields):
    assert subscribe(client, email=address, **fields).status_code == 200
    token = confirmation_token(ctx, address)
    page = client.get(f"/confirm/{token}")
    response = client.post(f"/confirm/{token}", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 200 and "you are subscribed" in response.get_data(as_text=True)
    return token


def test_confirming_sends_one_welcome_that_says_what_when_and_how_to_leave(client, drafts):
    with time_machine.travel(TUESDAY, tick=False):
        sign_up_and_confirm(client, drafts)
    sub = drafts.store.get_subscriber("reader@example.org")
    [msg] = welcomes_to(drafts, sub["email"])
    text = " ".join(text_of(msg).split())
    assert "The monthly research digest, written for caregivers, family and friends" in text
    assert "(Caregivers and family)" in text and "on these topics: NMOSD" in text
    assert "on the first Monday of each month" in text and "due on Monday 4 January 2027" in text
    assert "latest digest" not in text  # no monthly caregivers' digest has been sent yet
    for paragraph in Renderer.from_config(drafts.config).disclaimer():
        assert paragraph in text
    assert text.rstrip().endswith(drafts.config.postal_address)
    # The links are the digest's: signed for this subscriber, and working.
    t = tokens(drafts)
    unsubscribe = re.search(r"Unsubscribe: (\S+)", text).group(1)
    preferences = re.search(r"topics\): (\S+)", text).group(1)
    assert unsubscribe == f"https://digest.example.org/u/{t.sign('unsubscribe', sub['id'])}"
    assert preferences == f"https://digest.example.org/p/{t.sign('preferences', sub['id'])}"
    assert msg["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for url in (unsubscribe, preferences, re.search(r"Every past digest: (\S+)", text).group(1)):
        assert client.get(path_of(url)).status_code == 200, url
    html = msg.get_body(("html",)).get_content()
    assert f'href="{unsubscribe}"' in html and f'href="{preferences}"' in html
    assert not any(p in html or p in text for p in PLACEHOLDERS)
    # Recorded in the ledger like any delivery, against the welcome issue of the reader's audience.
    [row] = drafts.store.welcome_deliveries(sub["id"])
    assert (row["status"], row["segment"], row["cadence"]) == ("sent", "caregivers", "monthly")
    assert delivery_of(msg) == row["id"] and msg["X-Newsletter-Issue"] == str(row["issue_id"])


def test_a_weekly_reader_gets_a_link_to_the_latest_sent_digest_of_their_segment(make_site, make_app):
    ctx = make_site("sent")
    load_samples(ctx)
    DigestRunner(ctx.config, ctx.store, ctx.segments,
                 messenger_factory=lambda: messenger_from_config(ctx.config)).run("weekly", SAMPLE_NOW)
    [issue] = [i for i in ctx.store.issues(status="sent") if i["segment"] == "patients"]
    client = make_app(ctx).test_client()
    with time_machine.travel(TUESDAY, tick=False):
        sign_up_and_confirm(client, ctx, "weekly@example.org", segment="patients", cadence="weekly", topics=[])
    [msg] = welcomes_to(ctx, "weekly@example.org")
    text = " ".join(text_of(msg).split())
    assert "every Monday" in text and "due on Monday 14 December 2026" in text
    assert "read the latest digest (Week of 16 November 2026):" in text
    latest = f"https://digest.example.org/archive/{issue['id']}/all"
    assert latest in text and f'href="{latest}"' in msg.get_body(("html",)).get_content()
    assert client.get(path_of(latest)).status_code == 200


def test_a_repeated_confirm_never_sends_a_second_welcome(client, drafts):
    token = sign_up_and_confirm(client, drafts)
    sub = drafts.store.get_subscriber("reader@example.org")
    csrf = form_token(client, "/")  # the session's token (the page of an active subscriber has no form)
    for _ in range(3):  # a double click, a scanner's GETs, the person again
        assert client.post(f"/confirm/{token}", data={"csrf_token": csrf}).status_code == 200
        assert client.get(f"/confirm/{token}").status_code == 200
        assert client.head(f"/confirm/{token}").status_code == 200
    # Unsubscribing and confirming again with the old link restarts the digest, not the welcome.
    drafts.store.set_subscriber_status(sub["id"], "unsubscribed")
    assert "you are subscribed" in client.post(f"/confirm/{token}", data={"csrf_token": csrf}).get_data(as_text=True)
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"
    # So does a confirm after changing audience: still one welcome per person.
    drafts.store.update_preferences(sub["id"], "patients", "weekly", [])
    drafts.store.set_subscriber_status(sub["id"], "unsubscribed")
    client.post(f"/confirm/{token}", data={"csrf_token": csrf})
    assert len(welcomes_to(drafts, sub["email"])) == 1
    assert len(drafts.store.welcome_deliveries(sub["id"])) == 1


def test_confirms_at_the_same_moment_send_one_welcome(drafts, make_app):
    app = make_app(drafts)
    subscribe(app.test_client())
    token = confirmation_token(drafts, "reader@example.org")
    clients = [app.test_client() for _ in range(6)]
    forms = [{"csrf_token": form_token(c, f"/confirm/{token}")} for c in clients]
    start = threading.Barrier(len(clients))
    codes = []

    def confirm(c, form):
        start.wait()
        codes.append(c.post(f"/confirm/{token}", data=form).status_code)

    threads = [threading.Thread(target=confirm, args=pair) for pair in zip(clients, forms)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [200] * len(clients)
    assert len(welcomes_to(drafts, "reader@example.org")) == 1


def test_send_welcome_from_many_connections_at_once_plans_and_sends_one(drafts):
    sub = drafts.store.sign_up("race@example.org", "patients", "weekly", [])
    drafts.store.confirm_subscriber(sub["id"])
    start = threading.Barrier(5)
    outcomes = []

    def send():
        ctx = Context(drafts.config)  # a connection of its own, like another web thread or process
        try:
            start.wait()
            outcomes.append(send_welcome(ctx, sub["id"]))
        finally:
            ctx.close()

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted((o.status if o else "none") for o in outcomes) == ["none"] * 4 + ["sent"]
    assert len(welcomes_to(drafts, "race@example.org")) == 1


def test_a_pending_or_suppressed_subscriber_gets_no_welcome(drafts):
    pending = drafts.store.sign_up("pending@example.org", "patients", "weekly", [])
    assert send_welcome(drafts, pending["id"]) is None
    drafts.store.confirm_subscriber(pending["id"])
    drafts.store.set_subscriber_status(pending["id"], "complained")
    assert send_welcome(drafts, pending["id"]) is None
    assert drafts.store.welcome_deliveries() == []


def test_a_welcome_that_cannot_be_sent_is_recorded_failed_and_the_confirm_still_succeeds(drafts, make_app, tmp_path):
    client = make_app(drafts).test_client()
    subscribe(client)
    token = confirmation_token(drafts, "reader@example.org")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    broken = make_app(drafts, outbox=str(blocker / "outbox")).test_client()
    response = broken.post(f"/confirm/{token}", data={"csrf_token": form_token(broken, f"/confirm/{token}")})
    assert response.status_code == 200 and "you are subscribed" in response.get_data(as_text=True)
    sub = drafts.store.get_subscriber("reader@example.org")
    assert sub["status"] == "active"
    [row] = drafts.store.welcome_deliveries(sub["id"])
    assert row["status"] == "failed" and "cannot open the outbox" in row["error"]
    assert welcomes_to(drafts, sub["email"]) == []


def test_a_site_template_override_is_used_and_one_without_the_disclaimer_is_refused(make_site, make_app, tmp_path):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    ctx = make_site("custom", templates_dir=str(overrides))
    load_samples(ctx)
    bundled = (Renderer.from_config(ctx.config).env.loader.get_source(
        Renderer.from_config(ctx.config).env, "welcome.txt")[0])
    (overrides / "welcome.txt").write_text("Our own welcome words.\n" + bundled, encoding="utf-8")
    client = make_app(ctx).test_client()
    sign_up_and_confirm(client, ctx, "one@example.org")
    [msg] = welcomes_to(ctx, "one@example.org")
    assert text_of(msg).startswith("Our own welcome words.")

    (overrides / "welcome.txt").write_text("Welcome! {{ unsubscribe_url }} {{ preferences_url }}\n", encoding="utf-8")
    sign_up_and_confirm(client, ctx, "two@example.org")
    assert welcomes_to(ctx, "two@example.org") == []
    [row] = ctx.store.welcome_deliveries(ctx.store.get_subscriber("two@example.org")["id"])
    assert row["status"] == "failed" and "disclaimer is missing" in row["error"]


def test_welcome_over_smtp_reaches_the_server_with_one_click_unsubscribe(drafts, make_app, smtp_server):
    client = make_app(drafts, backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                      smtp_security="none").test_client()
    assert subscribe(client).status_code == 200
    assert smtp_server.wait_for(1, 10)
    token = re.search(r"/confirm/(\S+)", smtp_server.messages[0].get_body(("plain",)).get_content()).group(1)
    client.post(f"/confirm/{token}", data={"csrf_token": form_token(client, f"/confirm/{token}")})
    assert smtp_server.wait_for(2, 10)
    msg = smtp_server.messages[1]
    assert msg["Subject"] == WELCOME and msg.rcpt_tos == ["reader@example.org"]
    assert msg["List-Unsubscribe"].startswith("<https://digest.example.org/u/")
    [row] = drafts.store.welcome_deliveries()
    assert row["status"] == "sent"


def test_welcome_issues_stay_out_of_the_digests_lists_sends_and_retries(client, drafts):
    sign_up_and_confirm(client, drafts)
    [row] = drafts.store.welcome_deliveries()
    drafts.store.mark_deliveries([row["id"]], "failed", error="made to fail")
    assert all(i["kind"] == "digest" for i in drafts.store.issues())
    assert drafts.store.get_issue(row["issue_id"]) is None
    assert row["issue_id"] not in {i["id"] for i in drafts.store.issues_to_send(retry=("failed", "unknown"))}
    assert row["issue_id"] not in {i["id"] for i in drafts.store.latest_issues()}
    report = DigestRunner(drafts.config, drafts.store, drafts.segments).run(None, SAMPLE_NOW, retry_failed=True)
    assert report.tally.skipped == 0
    assert drafts.store.welcome_deliveries()[0]["status"] == "failed"  # left for the operator, never skipped


# -- the next send day --------------------------------------------------------------------------------

@pytest.mark.parametrize("now,tz,cadence,expected", [
    ("2026-12-01T22:00:00+00:00", "UTC", "weekly", "2026-12-07"),
    ("2026-12-07T06:59:00+00:00", "UTC", "weekly", "2026-12-07"),    # Monday, before the 07:00 build
    ("2026-12-07T07:00:00+00:00", "UTC", "weekly", "2026-12-14"),
    ("2026-12-06T20:00:00+00:00", "Pacific/Auckland", "weekly", "2026-12-14"),  # already Monday 09:00 there
    ("2026-12-07T10:00:00+00:00", "America/New_York", "weekly", "2026-12-07"),  # Monday 05:00 there
    ("2026-12-07T07:10:00+00:00", "UTC", "monthly", "2026-12-07"),   # the first Monday, before 07:15
    ("2026-12-07T07:20:00+00:00", "UTC", "monthly", "2027-01-04"),
    ("2027-02-02T12:00:00+00:00", "UTC", "monthly", "2027-03-01"),
])
def test_next_send_day_follows_schedule_cron_in_the_configured_zone(now, tz, cadence, expected):
    assert next_send_day(datetime.fromisoformat(now), cadence, tz) == date.fromisoformat(expected)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(timezone.utc)),
       st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Auckland"]),
       st.sampled_from(["weekly", "monthly"]))
def test_next_send_day_is_the_first_send_day_still_ahead(now, tz, cadence):
    day = next_send_day(now, cadence, tz)
    local = now.astimezone(ZoneInfo(tz))
    at = {"weekly": (7, 0), "monthly": (7, 15)}[cadence]

    def is_send_day(d: date) -> bool:
        return d.weekday() == 0 and (cadence == "weekly" or d.day <= 7)

    assert is_send_day(day)
    assert (day, at) > (local.date(), (local.hour, local.minute)) or (day == local.date() and (
        local.hour, local.minute, local.second, local.microsecond) < (*at, 0, 0))
    assert day - local.date() <= timedelta(days=7 if cadence == "weekly" else 35)
    between = (local.date() + timedelta(days=n) for n in range(1, (day - local.date()).days))
    assert not any(is_send_day(d) for d in between)


# -- outside text in the welcome ----------------------------------------------------------------------

TRICKY = st.lists(st.sampled_from(list("ab <>&\"';") + ["&amp;", "<script>", "-nl-utok-", "\u00e9"]),
                  min_size=1, max_size=12).map("".join).map(str.strip).filter(bool)


@given(topics=st.lists(TRICKY, min_size=1, max_size=3, unique=True))
def test_topics_reach_the_welcome_as_text_never_as_markup_or_placeholders(site, topics):
    rendered = render_welcome(Renderer.from_config(site.config), issue_id=1, segment=site.segments["patients"],
                              cadence="weekly", topics=topics, next_send=date(2026, 12, 7), latest=None)
    html, text = rendered.personalise(recipient_values("UTOK", "PTOK", "Ana <b>"))
    assert "<script>" not in html
    # Only the footer's own links are filled, whatever a topic spells.
    assert (text.count("UTOK"), text.count("PTOK")) == (1, 1)
    assert (html.count("UTOK"), html.count("PTOK")) == (1, 1)
    assert "https://digest.example.org/u/UTOK" in html and "Hello Ana &lt;b&gt;," in html
    seen_text = text.replace("\u200c", "")
    seen_html = lxml.html.document_fromstring(html).text_content().replace("\u200c", "")
    for topic in topics:
        assert topic in seen_text and topic in seen_html
