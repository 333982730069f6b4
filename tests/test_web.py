"""The web app through Flask's test client: every route, with real SQLite, a real Maildir outbox,
real ECDSA signatures, a real SMTP server and Prism for SendGrid's contract."""

from __future__ import annotations

import base64
import email
import email.policy
import importlib
import json
import mailbox
import re
import subprocess
import sys
import time
import tomllib
import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
import time_machine
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.security import check_password_hash, generate_password_hash

from newsletter.cli import cli
from newsletter.digest import DigestRunner
from newsletter.select import topic_key
from newsletter.messengers import messenger_from_config
from newsletter.store import Store
from newsletter.settings import ConfigError, load_config
from newsletter.tokens import Tokens
from newsletter.web import create_app
from newsletter.web.mailer import wait_for_handovers
from newsletter.messengers import sender_from_config
from newsletter.model import Notice
from newsletter.messengers.sendgrid import notice_payload
from newsletter.store import Limit
from tests.conftest import SAMPLE_NOW, load_samples
from tests.fixtures_servers import free_port, wait_for_port

EDITOR, PASSWORD = "alice", "correct horse battery staple"
#: A cheap hash keeps the many logins fast; the CLI test checks the real (scrypt) default.
HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
SIG = "X-Twilio-Email-Event-Webhook-Signature"
TS = "X-Twilio-Email-Event-Webhook-Timestamp"


# -- fixtures and helpers ----------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(clock):
    def make(ctx, **overrides):
        return create_app(ctx.config, **{"editors": {EDITOR: HASH}, "TESTING": True, "CLOCK": clock, **overrides})
    return make


@pytest.fixture
def drafts(make_site):
    """A site whose drafts wait for approval: the bundled samples, this week's issue per segment."""
    ctx = make_site(require_approval="yes")
    load_samples(ctx)
    report = DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW, send=False)
    assert len(report.created) == 3
    return ctx


@pytest.fixture
def app(drafts, make_app):
    return make_app(drafts)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def sent(make_site):
    """A site whose weekly issues went out through the Maildir messenger."""
    ctx = make_site("sent")
    load_samples(ctx)
    report = DigestRunner(ctx.config, ctx.store, ctx.segments,
                          messenger_factory=lambda: messenger_from_config(ctx.config)).run("weekly", SAMPLE_NOW)
    assert report.tally.sent > 0 and not report.tally.failed
    return ctx


def csrf_from(response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
    assert match, "the page has no CSRF field"
    return match.group(1)


def form_token(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return csrf_from(response)


def login(client, name: str = EDITOR, password: str = PASSWORD, **kw):
    token = form_token(client, "/editor/login")
    return client.post("/editor/login", data={"name": name, "password": password, "csrf_token": token}, **kw)


def logged_in(client) -> bool:
    return client.get("/editor/").status_code == 200


def messages(ctx) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(ctx.config.outbox, create=True)
    return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]


def mails_to(ctx, address: str) -> list[email.message.EmailMessage]:
    return [m for m in messages(ctx) if m["To"].addresses[0].addr_spec == address]


def text_of(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def tokens(ctx) -> Tokens:
    return Tokens(ctx.config.require_secret())


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def subscribe(client, **fields):
    data = {"email": "reader@example.org", "segment": "caregivers", "cadence": "monthly", "topics": ["NMOSD"],
            "consent": "yes", "consent_health": "yes", **fields}
    if "csrf_token" not in data:
        data["csrf_token"] = form_token(client, "/")
    data = {k: v for k, v in data.items() if v is not None}
    response = client.post("/", data=data, buffered=True)  # buffered: the response is closed, so the mail goes
    wait_for_handovers()  # ...from a thread of its own
    return response


def invoke_cli(runner, ctx, *args):
    return runner.invoke(cli, ["--config", str(ctx.config.source), *map(str, args)], catch_exceptions=False)


def active_subscriber(ctx) -> dict:
    return ctx.store.subscribers(status="active")[0]


class PageCheck(HTMLParser):
    """What the accessibility checks look at in a page's HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.lang = None
        self.h1 = 0
        self.title = ""
        self._in_title = False
        self.inputs: list[dict] = []
        self.label_for: set[str] = set()
        self.iframes: list[dict] = []
        self.urls: list[str] = []
        self.buttons = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "h1":
            self.h1 += 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("input", "select", "textarea"):
            self.inputs.append(a)
        elif tag == "label" and a.get("for"):
            self.label_for.add(a["for"])
        elif tag == "iframe":
            self.iframes.append(a)
        elif tag == "button":
            self.buttons += 1
        for name in ("src", "href", "action"):
            if a.get(name):
                self.urls.append(a[name])

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def check_page(html: str) -> PageCheck:
    page = PageCheck()
    page.feed(html)
    assert page.lang == "en"
    assert page.h1 == 1, "one h1 per page"
    assert page.title.strip()
    for field in page.inputs:
        if field.get("type") == "hidden":
            continue
        assert field.get("id") in page.label_for or field.get("aria-label"), f"unlabelled field {field}"
    for url in page.urls:
        assert not re.match(r"^(https?:)?//", url) or url.startswith("https://digest.example.org"), \
            f"external resource {url}"
    return page


# -- the app and its cookies -------------------------------------------------------------

def test_session_cookie_is_httponly_lax_and_secure_on_an_https_site(client):
    cookie = client.get("/").headers["Set-Cookie"]
    assert cookie.startswith("__Host-newsletter=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie and "Path=/" in cookie


def test_session_cookie_is_not_secure_on_a_plain_http_site(drafts, make_app):
    cookie = make_app(drafts, site_url="http://127.0.0.1:8000").test_client().get("/").headers["Set-Cookie"]
    assert cookie.startswith("newsletter=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_security_headers(client):
    response = client.get("/")
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers["Cache-Control"] == "no-store"
    with client.get("/static/site.css") as css:
        assert css.status_code == 200 and "no-store" not in css.headers.get("Cache-Control", "")


def test_create_app_refuses_unknown_settings_and_a_missing_secret(drafts):
    with pytest.raises(TypeError):
        create_app(drafts.config, no_such_setting=1)
    no_secret = load_config(drafts.config.source, env={})
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET"):
        create_app(no_secret)


def test_create_app_reads_the_config_file_by_path(drafts):
    app = create_app(drafts.config.source, TESTING=True)
    assert app.extensions["newsletter"].config.database == drafts.config.database
    assert app.test_client().get("/").status_code == 200


def test_wsgi_module_builds_the_app_from_newsletter_config(drafts, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(drafts.config.source))
    sys.modules.pop("newsletter.web.wsgi", None)
    try:
        module = importlib.import_module("newsletter.web.wsgi")
        assert module.app.extensions["newsletter"].config.source == drafts.config.source
    finally:
        sys.modules.pop("newsletter.web.wsgi", None)


def test_unknown_page_is_a_plain_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    check_page(response.get_data(as_text=True))


# -- editors: login -----------------------------------------------------------------------

def test_login_with_the_right_password_opens_the_issues_list(client, drafts):
    response = login(client)
    assert response.status_code == 303 and response.location.endswith("/editor/")
    page = client.get("/editor/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for issue in drafts.store.issues():
        assert f"Issue {issue['id']}</a>" in html
    assert "People living with MS" in html and "draft" in html
    check_page(html)


@pytest.mark.parametrize("name,password", [(EDITOR, "wrong password"), ("mallory", PASSWORD), ("", "")])
def test_wrong_password_or_unknown_editor_is_refused(client, name, password):
    response = login(client, name, password)
    assert response.status_code == 401
    assert "Wrong name or password." in response.get_data(as_text=True)
    assert not logged_in(client)


def test_login_without_csrf_token_is_refused_even_with_the_right_password(client):
    client.get("/editor/login")
    response = client.post("/editor/login", data={"name": EDITOR, "password": PASSWORD})
    assert response.status_code == 400
    assert not logged_in(client)


def test_login_with_another_sessions_csrf_token_is_refused(app):
    first, second = app.test_client(), app.test_client()
    token = form_token(first, "/editor/login")
    second.get("/editor/login")
    response = second.post("/editor/login", data={"name": EDITOR, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 400
    assert not logged_in(second)


def test_failed_logins_are_throttled_per_name_until_the_window_passes(drafts, make_app, clock):
    client = make_app(drafts, LOGIN_MAX_FAILURES=3).test_client()
    for _ in range(3):
        assert login(client, password="guess").status_code == 401
    blocked = login(client)  # the right password, but too late
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert "Too many failed attempts" in blocked.get_data(as_text=True)
    assert not logged_in(client)
    clock.now += 899
    assert login(client).status_code == 429
    clock.now += 2
    assert login(client).status_code == 303
    assert logged_in(client)


def test_failed_logins_are_throttled_per_address_across_names(drafts, make_app):
    client = make_app(drafts, LOGIN_MAX_FAILURES_IP=4).test_client()
    for name in ("a", "b", "c", "d"):
        assert login(client, name, "guess", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 401
    assert login(client, environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 429
    assert login(client, environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 303


def test_throttle_forgets_old_failures(site):
    def attempt(now: float) -> float:
        return site.store.throttle_attempt([Limit("test", "k", 2, 10)], now).wait

    assert attempt(0) == 0
    assert attempt(5) == 0
    assert attempt(5) == pytest.approx(5)  # two hits within 10 s: the next waits for the first to age out
    assert attempt(10.5) == 0
    site.store.throttle_release([], clear=[("test", "k")])
    assert attempt(10.5) == 0 and attempt(10.5) == 0


def test_login_redirects_only_to_local_pages(app, client):
    token = form_token(client, "/editor/login?next=/editor/summaries")
    response = client.post("/editor/login", data={"name": EDITOR, "password": PASSWORD, "csrf_token": token,
                                                  "next": "/editor/summaries"})
    assert response.location.endswith("/editor/summaries")
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client = app.test_client()
        token = form_token(client, "/editor/login")
        response = client.post("/editor/login", data={"name": EDITOR, "password": PASSWORD, "csrf_token": token,
                                                      "next": target})
        assert response.location.endswith("/editor/"), target


def test_login_page_redirects_a_logged_in_editor(client):
    login(client)
    assert client.get("/editor/login").status_code == 302


EDITOR_GETS = ["/editor/", "/editor/issues/1", "/editor/issues/1/email.html", "/editor/issues/1/email.txt",
               "/editor/summaries"]
EDITOR_POSTS = ["/editor/issues/1/approve", "/editor/issues/1/cancel", "/editor/issues/1/test"]


@pytest.mark.parametrize("path", EDITOR_GETS)
def test_editor_pages_need_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/editor/login?next=" in response.location


@pytest.mark.parametrize("path", EDITOR_POSTS)
def test_editor_actions_need_a_login(client, drafts, path):
    token = form_token(client, "/")
    response = client.post(path, data={"csrf_token": token, "address": "ed@example.org"})
    assert response.status_code == 403
    assert drafts.store.get_issue(1)["status"] == "draft"


def test_logout_needs_the_csrf_token(client):
    login(client)
    assert client.post("/editor/logout").status_code == 400
    assert logged_in(client)
    response = client.post("/editor/logout", data={"csrf_token": form_token(client, "/editor/")})
    assert response.status_code == 303
    assert not logged_in(client)


def test_editor_session_ends_after_twelve_hours(client, clock):
    login(client)
    assert logged_in(client)
    clock.now += 13 * 3600
    assert not logged_in(client)


def test_editor_removed_from_the_config_is_logged_out(drafts, make_app, clock):
    client = make_app(drafts).test_client()
    login(client)
    other = create_app(drafts.config, editors={}, TESTING=True, CLOCK=clock)
    cookie = client.get_cookie("__Host-newsletter")
    client2 = other.test_client()
    client2.set_cookie("__Host-newsletter", cookie.value)
    assert client2.get("/editor/").status_code == 302
    again = make_app(drafts).test_client()  # the same cookie on an app that still has the editor: still in
    again.set_cookie("__Host-newsletter", cookie.value)
    assert again.get("/editor/").status_code == 200


# -- editors: issues ------------------------------------------------------------------------

@pytest.fixture
def editor(client):
    assert login(client).status_code == 303
    return client


def test_issue_page_shows_the_email_at_both_widths_and_its_plain_text(editor, drafts):
    issue = drafts.store.issues()[0]
    response = editor.get(f"/editor/issues/{issue['id']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    page = check_page(html)
    widths = sorted(int(f["width"]) for f in page.iframes)
    assert widths == [375, 640]
    assert all(f["src"] == f"/editor/issues/{issue['id']}/email.html" for f in page.iframes)
    assert all(f.get("title") for f in page.iframes)
    assert all("allow-scripts" not in f.get("sandbox", "allow-scripts") for f in page.iframes)
    titles = [s["title"] for s in drafts.store.issue_summaries(issue["id"])]
    assert titles[0] in html  # the plain-text twin and the summary list
    assert "Hello Alex," in html  # the plain text, personalised with the preview values
    assert "Approve for sending" in html and "Cancel this issue" in html


def test_issue_email_is_the_rendered_html_with_preview_values(editor, drafts):
    issue = drafts.store.issues()[0]
    response = editor.get(f"/editor/issues/{issue['id']}/email.html")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "-nl-" not in html  # every placeholder filled
    assert "/u/preview-token" in html
    assert drafts.store.issue_summaries(issue["id"])[0]["title"].split()[0] in html
    assert "sandbox" in response.headers["Content-Security-Policy"]
    text = editor.get(f"/editor/issues/{issue['id']}/email.txt")
    assert text.mimetype == "text/plain"
    assert "Hello Alex," in text.get_data(as_text=True) and "-nl-" not in text.get_data(as_text=True)


def test_unknown_issue_is_404(editor):
    for path in ("/editor/issues/999", "/editor/issues/999/email.html"):
        assert editor.get(path).status_code == 404
    token = form_token(editor, "/editor/")
    assert editor.post("/editor/issues/999/approve", data={"csrf_token": token}).status_code == 404


def test_approve_moves_a_draft_once(editor, drafts):
    token = form_token(editor, "/editor/issues/1")
    response = editor.post("/editor/issues/1/approve", data={"csrf_token": token})
    assert response.status_code == 303
    assert drafts.store.get_issue(1)["status"] == "approved"
    assert "is approved" in editor.get("/editor/issues/1").get_data(as_text=True)
    again = editor.post("/editor/issues/1/approve", data={"csrf_token": token}, follow_redirects=True)
    assert "Not approved" in again.get_data(as_text=True)
    assert drafts.store.get_issue(1)["status"] == "approved"


def test_approve_without_csrf_token_changes_nothing(editor, drafts):
    assert editor.post("/editor/issues/1/approve").status_code == 400
    assert editor.post("/editor/issues/1/approve", data={"csrf_token": "forged"}).status_code == 400
    assert drafts.store.get_issue(1)["status"] == "draft"


def test_cancel_an_approved_issue_but_not_a_sent_one(editor, drafts):
    drafts.store.set_issue_status(1, "approved")
    drafts.store.set_issue_status(2, "sent")
    token = form_token(editor, "/editor/issues/1")
    editor.post("/editor/issues/1/cancel", data={"csrf_token": token})
    assert drafts.store.get_issue(1)["status"] == "cancelled"
    page = editor.post("/editor/issues/2/cancel", data={"csrf_token": token}, follow_redirects=True)
    assert "Not cancelled" in page.get_data(as_text=True)
    assert drafts.store.get_issue(2)["status"] == "sent"
    assert "Cancel this issue" not in page.get_data(as_text=True)


def test_send_a_test_to_an_address(editor, drafts):
    token = form_token(editor, "/editor/issues/1")
    page = editor.post("/editor/issues/1/test", data={"csrf_token": token, "address": "Ed@Example.org"},
                       follow_redirects=True)
    assert "A test of issue 1 was sent to ed@example.org" in page.get_data(as_text=True)
    sent = mails_to(drafts, "ed@example.org")
    assert len(sent) == 1 and sent[0]["Subject"].startswith("[TEST]")
    assert drafts.store.deliveries(issue_id=1) == []  # never in the ledger
    bad = editor.post("/editor/issues/1/test", data={"csrf_token": token, "address": "not an address"},
                      follow_redirects=True)
    assert "Enter the email address" in bad.get_data(as_text=True)
    assert len(messages(drafts)) == 1


def test_send_a_test_reports_a_transport_failure(drafts, make_app):
    client = make_app(drafts, backend="smtp", legacy_consent=True, smtp_host="127.0.0.1", smtp_port=free_port(),
                      smtp_security="none", smtp_timeout=2.0).test_client()
    login(client)
    token = form_token(client, "/editor/issues/1")
    page = client.post("/editor/issues/1/test", data={"csrf_token": token, "address": "ed@example.org"},
                       follow_redirects=True)
    assert "The test was not sent" in page.get_data(as_text=True)


def test_summaries_list(editor, drafts):
    html = editor.get("/editor/summaries").get_data(as_text=True)
    check_page(html)
    summaries = drafts.store.summaries()
    assert f"{len(summaries)} summaries" in html
    for summary in summaries:
        assert summary["title"].replace("'", "&#39;") in html


# -- subscribing ------------------------------------------------------------------------------

def test_subscribe_form_is_labelled_and_lists_segments_cadences_and_topics(client):
    html = client.get("/").get_data(as_text=True)
    page = check_page(html)
    names = {f.get("name") for f in page.inputs}
    assert {"email", "segment", "cadence", "topics", "consent", "consent_health", "csrf_token"} <= names
    for label in ("People living with MS", "Caregivers and family", "Healthcare providers", "Every week",
                  "Once a month", "NMOSD", "MOGAD", "Autoimmune encephalitis"):
        assert label in html


def test_subscribe_stores_a_pending_subscriber_and_mails_a_confirmation_link(client, drafts):
    response = subscribe(client)
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    sub = drafts.store.get_subscriber("reader@example.org")
    assert (sub["status"], sub["segment"], sub["cadence"], sub["topics"]) == ("pending", "caregivers", "monthly",
                                                                               ["NMOSD"])
    [msg] = mails_to(drafts, "reader@example.org")
    assert msg["Subject"].startswith("Confirm your subscription")
    assert msg["Auto-Submitted"] == "auto-generated" and "List-Unsubscribe" not in msg
    link = re.search(r"https://digest\.example\.org/confirm/(\S+)", text_of(msg))
    assert tokens(drafts).verify("confirm", link.group(1)) == sub["id"]


@pytest.mark.parametrize("fields,error", [
    ({"consent": None}, "Tick the box"),
    ({"consent_health": None}, "agree that we keep your choice"),
    ({"email": "not-an-address"}, "Enter an email address"),
    ({"segment": "robots"}, "Choose who the digest is for"),
    ({"cadence": "daily"}, "Choose how often"),
    ({"topics": ["Astrology"]}, "Choose topics from the list"),
])
def test_subscribe_with_a_bad_field_says_so_and_stores_and_sends_nothing(client, drafts, fields, error):
    response = subscribe(client, **fields)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert error in html and 'role="alert"' in html
    check_page(html)
    assert drafts.store.get_subscriber("reader@example.org") is None
    assert messages(drafts) == []


def test_subscribe_without_csrf_token_is_refused(client, drafts):
    client.get("/")
    response = subscribe(client, csrf_token="")
    assert response.status_code == 400
    assert drafts.store.get_subscriber("reader@example.org") is None
    assert messages(drafts) == []


def test_subscribing_an_existing_address_reveals_nothing_and_changes_nothing(client, drafts):
    new = subscribe(client, email="someone.new@example.org")
    existing = active_subscriber(drafts)
    before = drafts.store.get_subscriber(existing["email"])
    again = subscribe(client, email=existing["email"].upper(), segment="clinicians", cadence="monthly",
                      topics=["MOGAD"])
    assert (again.status_code, again.get_data()) == (new.status_code, new.get_data())
    assert drafts.store.get_subscriber(existing["email"]) == before
    [msg] = mails_to(drafts, existing["email"])
    body = text_of(msg)
    assert "/confirm/" not in body and "Nothing was changed" in body
    prefs = re.search(r"https://digest\.example\.org/p/(\S+)", body).group(1)
    assert tokens(drafts).verify("preferences", prefs) == existing["id"]


def test_subscribing_a_pending_address_again_resends_the_confirmation_only(client, drafts):
    subscribe(client)
    before = drafts.store.get_subscriber("reader@example.org")
    subscribe(client, segment="patients", cadence="weekly", topics=[])
    assert drafts.store.get_subscriber("reader@example.org") == before
    sent = mails_to(drafts, "reader@example.org")
    assert len(sent) == 2 and all("/confirm/" in text_of(m) for m in sent)


def test_no_confirmation_goes_to_an_address_that_reported_spam(client, drafts):
    sub = active_subscriber(drafts)
    drafts.store.set_subscriber_status(sub["id"], "complained")
    reference = subscribe(client, email="fresh@example.org")
    response = subscribe(client, email=sub["email"])
    assert response.get_data() == reference.get_data()
    assert mails_to(drafts, sub["email"]) == []
    assert drafts.store.get_subscriber(sub["email"])["status"] == "complained"


def test_confirmations_to_one_address_are_capped(drafts, make_app):
    client = make_app(drafts, SUBSCRIBE_MAX_PER_ADDRESS=2).test_client()
    pages = {subscribe(client).get_data() for _ in range(4)}
    assert len(pages) == 1
    assert len(mails_to(drafts, "reader@example.org")) == 2


def test_signups_from_one_client_are_capped(drafts, make_app):
    client = make_app(drafts, SUBSCRIBE_MAX_PER_IP=2).test_client()
    assert subscribe(client, email="a@example.org").status_code == 200
    assert subscribe(client, email="b@example.org").status_code == 200
    assert subscribe(client, email="c@example.org").status_code == 429
    assert drafts.store.get_subscriber("c@example.org") is None


def test_a_removed_address_can_come_back_only_by_confirming(client, drafts):
    sub = active_subscriber(drafts)
    drafts.store.remove_subscriber(sub["email"])
    assert drafts.store.is_suppressed(sub["email"])
    subscribe(client, email=sub["email"])
    again = drafts.store.get_subscriber(sub["email"])
    assert again["status"] in ("pending", "unsubscribed")  # stored, but mailed nothing but the confirmation
    link = re.search(r"/confirm/(\S+)", text_of(mails_to(drafts, sub["email"])[0])).group(0)
    client.post(link, data={"csrf_token": form_token(client, link)})
    assert drafts.store.get_subscriber(sub["email"])["status"] == "active"
    assert not drafts.store.is_suppressed(sub["email"])


def test_a_confirmation_the_transport_refuses_is_queued_and_sent_later(drafts, make_app, tmp_path, runner):
    """The answer never says whether the mail went (that would tell a held-back address from others);
    what the transport did not take waits for `newsletter notices send`."""
    reference = subscribe(make_app(drafts).test_client(), email="first@example.org")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    client = make_app(drafts, outbox=str(blocker / "outbox")).test_client()
    response = subscribe(client)
    assert (response.status_code, response.get_data()) == (reference.status_code, reference.get_data())
    [queued] = drafts.store.queued_notices()
    assert (queued["recipient"], queued["category"], queued["attempts"]) == ("reader@example.org", "confirmation", 1)
    assert "Not a directory" in queued["error"]
    assert mails_to(drafts, "reader@example.org") == []
    early = invoke_cli(runner, drafts, "notices", "send")
    assert (early.exit_code, early.stdout.strip()) == (1, "sent 0, unknown 0, waiting 1, dropped 0")  # not due yet
    later = (datetime.now(timezone.utc) + timedelta(minutes=6)).isoformat()
    done = invoke_cli(runner, drafts, "notices", "send", "--now", later)
    assert (done.exit_code, done.stdout.strip()) == (0, "sent 1, unknown 0, waiting 0, dropped 0")
    [mail] = mails_to(drafts, "reader@example.org")
    assert "/confirm/" in text_of(mail)
    assert drafts.store.queued_notices() == []


def test_confirmation_over_smtp_reaches_the_server(drafts, make_app, smtp_server):
    client = make_app(drafts, backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                      smtp_security="none").test_client()
    assert subscribe(client).status_code == 200
    assert smtp_server.wait_for(1, 10)
    [msg] = smtp_server.messages
    assert msg.rcpt_tos == ["reader@example.org"]
    assert msg.mail_from == drafts.config.sender_email
    assert "/confirm/" in msg.get_body(("plain",)).get_content()


def test_confirmation_through_sendgrid_passes_its_contract(make_site, make_app, prism, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    ctx = make_site("sg", backend="sendgrid", legacy_consent=True, sendgrid_host=prism.url)
    client = make_app(ctx).test_client()
    assert subscribe(client, topics=[]).status_code == 200  # Prism answers 400 to a body outside the contract
    assert ctx.store.get_subscriber("reader@example.org")["status"] == "pending"


def test_confirmation_through_sendgrid_without_a_key_is_queued(make_site, make_app, prism):
    ctx = make_site("sg", backend="sendgrid", legacy_consent=True, sendgrid_host=prism.url)
    assert subscribe(make_app(ctx).test_client(), topics=[]).status_code == 200
    [queued] = ctx.store.queued_notices()
    assert "SENDGRID_API_KEY" in queued["error"]


def test_sendgrid_confirmation_payload_keeps_the_link_untracked(drafts):
    payload = notice_payload(Notice("r@example.org", "Confirm", "link\n", "confirmation"),
                             sender_from_config(drafts.config))
    assert payload["tracking_settings"]["click_tracking"] == {"enable": False, "enable_text": False}
    assert payload["personalizations"] == [{"to": [{"email": "r@example.org"}]}]
    assert payload["content"] == [{"type": "text/plain", "value": "link\n"}]


# -- confirming ---------------------------------------------------------------------------------

@pytest.fixture
def pending(client, drafts):
    subscribe(client)
    sub = drafts.store.get_subscriber("reader@example.org")
    token = re.search(r"/confirm/(\S+)", text_of(mails_to(drafts, sub["email"])[0])).group(1)
    return sub, token


def test_confirm_link_shows_a_button_and_the_post_activates(client, drafts, pending):
    sub, token = pending
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 200
    check_page(page.get_data(as_text=True))
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "pending"  # a link scanner confirms nothing
    done = client.post(f"/confirm/{token}", data={"csrf_token": csrf_from(page)})
    assert done.status_code == 200 and "you are subscribed" in done.get_data(as_text=True)
    now = drafts.store.get_subscriber(id=sub["id"])
    assert now["status"] == "active" and now["confirmed_at"]
    assert "already subscribed" in client.get(f"/confirm/{token}").get_data(as_text=True)


def test_confirm_without_csrf_token_changes_nothing(client, drafts, pending):
    sub, token = pending
    assert client.post(f"/confirm/{token}").status_code == 400
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "pending"


def test_expired_confirmation_link_is_refused(client, drafts, pending):
    sub, token = pending
    csrf = form_token(client, f"/confirm/{token}")
    with time_machine.travel(datetime.now() + timedelta(days=8)):
        response = client.post(f"/confirm/{token}", data={"csrf_token": csrf})
        assert response.status_code == 400
        assert "expired" in response.get_data(as_text=True)
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "pending"


def bad_tokens(ctx, subscriber_id: int, purpose: str) -> dict[str, str]:
    t = tokens(ctx)
    good = t.sign(purpose, subscriber_id)
    other = "unsubscribe" if purpose != "unsubscribe" else "preferences"
    value, _, mac = good.rpartition(".")
    return {
        "forged signature": f"{value}.{'A' * len(mac)}",
        "other subscriber": f"{subscriber_id + 1}.{mac}" if purpose != "confirm" else
                            good.replace(f"{subscriber_id}.", f"{subscriber_id + 1}.", 1),
        "wrong purpose": t.sign(other, subscriber_id),
        "another secret": Tokens("some-other-secret").sign(purpose, subscriber_id),
        "garbage": "not-a-token",
    }


@pytest.mark.parametrize("kind", ["forged signature", "other subscriber", "wrong purpose", "another secret",
                                  "garbage"])
def test_bad_confirm_tokens_get_an_error_page_and_change_nothing(client, drafts, pending, kind):
    sub, _ = pending
    token = bad_tokens(drafts, sub["id"], "confirm")[kind]
    assert client.get(f"/confirm/{token}").status_code == 400
    csrf = form_token(client, "/")
    response = client.post(f"/confirm/{token}", data={"csrf_token": csrf})
    assert response.status_code == 400
    check_page(response.get_data(as_text=True))
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "pending"


def test_confirm_token_of_a_deleted_subscriber_is_404(client, drafts, pending):
    sub, token = pending
    drafts.store.remove_subscriber(sub["email"])
    assert client.get(f"/confirm/{token}").status_code == 404


# -- preferences --------------------------------------------------------------------------------

@pytest.fixture
def reader(drafts):
    sub = active_subscriber(drafts)
    t = tokens(drafts)
    return sub, t.sign("preferences", sub["id"]), t.sign("unsubscribe", sub["id"])


def test_preferences_page_shows_the_current_choices(client, reader):
    sub, ptok, _ = reader
    html = client.get(f"/p/{ptok}").get_data(as_text=True)
    check_page(html)
    assert sub["email"] in html
    assert re.search(rf'value="{sub["segment"]}"\s+checked', html)
    assert re.search(rf'value="{sub["cadence"]}"\s+checked', html)


def test_preferences_save(client, drafts, reader):
    sub, ptok, _ = reader
    csrf = form_token(client, f"/p/{ptok}")
    response = client.post(f"/p/{ptok}", data={"csrf_token": csrf, "segment": "clinicians", "cadence": "monthly",
                                               "topics": ["mogad", "PML"]})
    assert response.status_code == 303
    now = drafts.store.get_subscriber(id=sub["id"])
    assert (now["segment"], now["cadence"], now["topics"]) == ("clinicians", "monthly", ["MOGAD", "PML"])
    assert "Your preferences are saved." in client.get(f"/p/{ptok}").get_data(as_text=True)


def test_preferences_with_a_bad_choice_or_no_csrf_change_nothing(client, drafts, reader):
    sub, ptok, _ = reader
    before = drafts.store.get_subscriber(id=sub["id"])
    csrf = form_token(client, f"/p/{ptok}")
    bad = client.post(f"/p/{ptok}", data={"csrf_token": csrf, "segment": "robots", "cadence": "weekly"})
    assert bad.status_code == 400 and "Choose who the digest is for" in bad.get_data(as_text=True)
    assert client.post(f"/p/{ptok}", data={"segment": "clinicians", "cadence": "weekly"}).status_code == 400
    assert drafts.store.get_subscriber(id=sub["id"]) == before


def test_pause_and_resume(client, drafts, reader):
    sub, ptok, _ = reader
    csrf = form_token(client, f"/p/{ptok}")
    assert client.post(f"/p/{ptok}/pause").status_code == 400
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"
    client.post(f"/p/{ptok}/pause", data={"csrf_token": csrf})
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "unsubscribed"
    assert "Resume the digest" in client.get(f"/p/{ptok}").get_data(as_text=True)
    client.post(f"/p/{ptok}/resume", data={"csrf_token": csrf})
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"


def access_link(client, drafts, sub, ptok) -> str:
    """The fresh link mailed to the subscriber's own address from the data page (the digest's link cannot)."""
    page = client.get(f"/p/{ptok}/delete")
    assert page.status_code == 200 and "one hour" in page.get_data(as_text=True)
    sent = client.post(f"/p/{ptok}/access", data={"csrf_token": csrf_from(page)})
    assert sent.status_code == 200 and "Check your inbox" in sent.get_data(as_text=True)
    msg = [m for m in mails_to(drafts, sub["email"]) if "Your data" in m["Subject"]][-1]
    return re.search(r"https://digest\.example\.org(/a/\S+)", text_of(msg)).group(1)


def test_data_download_holds_this_subscriber_only(client, drafts, reader):
    sub, ptok, _ = reader
    drafts.store.set_issue_status(1, "approved")
    drafts.store.plan_deliveries(1)
    assert client.get(f"/p/{ptok}/data.json").status_code == 404  # a forwarded digest's link cannot read it
    link = access_link(client, drafts, sub, ptok)
    response = client.get(f"{link}/data.json")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Cache-Control"] == "no-store"
    data = json.loads(response.get_data(as_text=True))
    assert data["subscriber"]["email"] == sub["email"]
    expected = [d for d in drafts.store.deliveries(issue_id=1) if d["subscriber_id"] == sub["id"]]
    assert [d["issue_id"] for d in data["tables"]["deliveries"]] == [d["issue_id"] for d in expected]
    others = {s["email"] for s in drafts.store.subscribers()} - {sub["email"]}
    assert not any(other in response.get_data(as_text=True) for other in others)


def test_delete_me_removes_the_subscriber_and_forgets_their_events(client, drafts, reader):
    sub, ptok, utok = reader
    drafts.store.record_event("sendgrid", {"event_id": "e1", "type": "open", "email": sub["email"],
                                           "subscriber_id": sub["id"], "payload": {"email": sub["email"]}})
    csrf = form_token(client, f"/p/{ptok}")
    assert client.post(f"/p/{ptok}/delete", data={"csrf_token": csrf}).status_code == 405  # a digest's link: no
    link = access_link(client, drafts, sub, ptok)
    page = client.get(link)
    assert page.status_code == 200 and "Delete my data" in page.get_data(as_text=True)
    assert drafts.store.get_subscriber(id=sub["id"]) is not None  # the GET deletes nothing
    assert client.post(f"{link}/delete").status_code == 400
    done = client.post(f"{link}/delete", data={"csrf_token": csrf_from(page)})
    assert done.status_code == 200 and "Your data is deleted" in done.get_data(as_text=True)
    assert drafts.store.get_subscriber(sub["email"]) is None
    assert drafts.store.is_suppressed(sub["email"])
    leftover = drafts.store.query("SELECT * FROM events WHERE event_id = 'e1'")[0]
    assert leftover["email"] is None and sub["email"] not in leftover["payload"]
    assert client.get(f"/p/{ptok}").status_code == 404
    assert client.post(f"/u/{utok}", data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_the_access_link_expires_after_an_hour(client, drafts, reader):
    sub, ptok, _ = reader
    link = access_link(client, drafts, sub, ptok)
    with time_machine.travel(time.time() + 3601):
        expired = client.get(link)
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)


def test_fresh_data_links_to_one_subscriber_are_limited_per_hour(client, drafts, reader, clock):
    """Whoever holds a forwarded digest cannot make it mail its owner again and again."""
    sub, ptok, _ = reader
    for _ in range(3):
        access_link(client, drafts, sub, ptok)
    sent_before = len(mails_to(drafts, sub["email"]))
    page = client.get(f"/p/{ptok}/delete")
    refused = client.post(f"/p/{ptok}/access", data={"csrf_token": csrf_from(page)})
    assert refused.status_code == 429 and "several times" in refused.get_data(as_text=True)
    assert len(mails_to(drafts, sub["email"])) == sent_before
    clock.now += 3601  # the app's clock: the counters it keeps in SQLite
    assert access_link(client, drafts, sub, ptok).startswith("/a/")  # the next hour, again


@pytest.mark.parametrize("kind", ["forged signature", "other subscriber", "wrong purpose", "another secret",
                                  "garbage"])
@pytest.mark.parametrize("action", ["", "/pause", "/access"])
def test_bad_preferences_tokens_get_an_error_page_and_change_nothing(client, drafts, reader, kind, action):
    sub, ptok, _ = reader
    token = bad_tokens(drafts, sub["id"], "preferences")[kind]
    before = {s["id"]: s for s in drafts.store.subscribers()}
    assert client.get(f"/p/{token}").status_code == 400
    assert client.get(f"/p/{token}/delete").status_code == 400
    csrf = form_token(client, f"/p/{ptok}")
    response = client.post(f"/p/{token}{action}", data={"csrf_token": csrf, "segment": "clinicians",
                                                        "cadence": "monthly"})
    assert response.status_code == 400
    assert {s["id"]: s for s in drafts.store.subscribers()} == before


def test_links_of_the_web_copy_explain_themselves(client):
    for path in ("/p/web-copy", "/u/web-copy"):
        response = client.get(path)
        assert response.status_code == 404
        assert "web copy" in response.get_data(as_text=True)


# -- unsubscribe ----------------------------------------------------------------------------------

def test_unsubscribe_get_shows_one_button_and_changes_nothing(client, drafts, reader):
    sub, _, utok = reader
    response = client.get(f"/u/{utok}")
    assert response.status_code == 200
    page = check_page(response.get_data(as_text=True))
    assert page.buttons == 1
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"


@pytest.mark.parametrize("multipart", [False, True])
def test_one_click_post_unsubscribes_at_once_without_a_session(app, drafts, reader, multipart):
    sub, _, utok = reader
    client = app.test_client()  # a mail client: no cookie, no CSRF token
    kwargs = {"content_type": "multipart/form-data"} if multipart else {}
    response = client.post(f"/u/{utok}", data={"List-Unsubscribe": "One-Click"}, **kwargs)
    assert response.status_code == 200
    now = drafts.store.get_subscriber(id=sub["id"])
    assert now["status"] == "unsubscribed" and now["unsubscribed_at"]
    again = client.post(f"/u/{utok}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert drafts.store.get_subscriber(id=sub["id"])["unsubscribed_at"] == now["unsubscribed_at"]


def test_unsubscribe_button_posts_with_its_csrf_token(client, drafts, reader):
    sub, _, utok = reader
    page = client.get(f"/u/{utok}")
    assert client.post(f"/u/{utok}", data={"List-Unsubscribe": "Other"}).status_code == 400
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"
    done = client.post(f"/u/{utok}", data={"csrf_token": csrf_from(page)})
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "unsubscribed"


def test_one_click_keeps_a_stronger_suppression(client, drafts, reader):
    sub, _, utok = reader
    drafts.store.set_subscriber_status(sub["id"], "bounced")
    client.post(f"/u/{utok}", data={"List-Unsubscribe": "One-Click"})
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "bounced"


@pytest.mark.parametrize("kind", ["forged signature", "other subscriber", "wrong purpose", "another secret",
                                  "garbage"])
def test_bad_unsubscribe_tokens_get_an_error_page_and_change_nothing(client, drafts, reader, kind):
    sub, _, _ = reader
    token = bad_tokens(drafts, sub["id"], "unsubscribe")[kind]
    before = {s["id"]: s for s in drafts.store.subscribers()}
    assert client.get(f"/u/{token}").status_code == 400
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 400
    assert {s["id"]: s for s in drafts.store.subscribers()} == before


# -- archive ----------------------------------------------------------------------------------------

def test_view_in_browser_link_of_a_sent_email_shows_that_email(sent):
    client = create_app(sent.config, TESTING=True).test_client()
    checked = 0
    for msg in messages(sent):
        text = text_of(msg)
        url = re.search(r"View in your browser: (\S+)", text) or re.search(r"(https://\S+/archive/\S+)", text)
        assert url, text[:400]
        response = client.get(path_of(url.group(1)))
        assert response.status_code == 200, url.group(1)
        html = response.get_data(as_text=True)
        assert msg["Subject"] in html.replace("&#39;", "'").replace("&amp;", "&")
        assert "/u/web-copy" in html and "-nl-" not in html
        assert "sandbox" in response.headers["Content-Security-Policy"]
        checked += 1
    assert checked == len(messages(sent)) > 0
    variants = {re.search(r"/archive/\d+/(\S+)", text_of(m)).group(1) for m in messages(sent)}
    assert len(variants) > 1, "the samples should produce a topic variant as well as 'all'"


def test_archive_shows_no_subscriber_tokens(sent):
    client = create_app(sent.config, TESTING=True).test_client()
    issue = sent.store.issues(status="sent")[0]
    html = client.get(f"/archive/{issue['id']}/all").get_data(as_text=True)
    t = tokens(sent)
    for sub in sent.store.subscribers():
        assert t.sign("unsubscribe", sub["id"]) not in html
        assert t.sign("preferences", sub["id"]) not in html


def test_archive_of_unsent_unknown_or_absent_variants_is_404(drafts, sent):
    client = create_app(drafts.config, TESTING=True).test_client()
    assert client.get("/archive/1/all").status_code == 404  # a draft
    assert client.get("/archive/999/all").status_code == 404
    client = create_app(sent.config, TESTING=True).test_client()
    issue = sent.store.issues(status="sent")[0]
    assert client.get(f"/archive/{issue['id']}/astrology").status_code == 404
    topics = sorted({t for s in sent.store.issue_summaries(issue["id"]) for t in s["topics"]})
    if len(topics) == 1:  # the one topic covers every summary: that variant is "all"
        assert client.get(f"/archive/{issue['id']}/{topic_key(topics)}").status_code == 404


# -- SendGrid event webhook -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(key) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def signed(key, body: bytes, timestamp: str | None = None) -> dict[str, str]:
    """What SendGrid sends: base64 DER ECDSA-SHA256 over timestamp (now, by default) + raw body."""
    timestamp = timestamp or str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIG: base64.b64encode(signature).decode(), TS: timestamp}


@pytest.fixture
def planned(drafts):
    """Issue 1 approved and planned: a pending delivery row per active subscriber of its audience."""
    drafts.store.set_issue_status(1, "approved")
    assert drafts.store.plan_deliveries(1) > 0
    return drafts


@pytest.fixture
def hook(planned, make_app, signing_key):
    client = make_app(planned, webhook_public_key=public_key_b64(signing_key)).test_client()

    def post(events, key=signing_key, headers=None, body=None):
        raw = body if body is not None else json.dumps(events).encode()
        return client.post("/webhooks/sendgrid", data=raw, content_type="application/json",
                           headers=headers if headers is not None else signed(key, raw))
    return post


def event(kind: str, sub: dict, n: int = 1, **extra) -> dict:
    return {"email": sub["email"], "timestamp": 1767225600 + n, "event": kind, "sg_event_id": f"{kind}-{sub['id']}-{n}",
            "sg_message_id": "abc.filter0001", "issue_id": "1", "subscriber_id": str(sub["id"]), **extra}


def recipients(ctx) -> list[dict]:
    ids = [d["subscriber_id"] for d in ctx.store.deliveries(issue_id=1)]
    return [ctx.store.get_subscriber(id=i) for i in ids]


def test_webhook_suppresses_on_bounce_spam_report_and_unsubscribes(hook, planned):
    subs = active = [s for s in planned.store.subscribers(status="active")][:6]
    assert len(active) == 6
    events = [event("bounce", subs[0], type="bounce"), event("spamreport", subs[1]),
              event("unsubscribe", subs[2]), event("group_unsubscribe", subs[3], asm_group_id=7),
              event("dropped", subs[4], reason="Bounced Address"), event("processed", subs[5])]
    response = hook(events)
    assert response.status_code == 200
    assert response.get_json() == {"received": 6, "stored": 6, "replayed": 0, "ignored": 0, "applied": 5}
    status = {s["id"]: planned.store.get_subscriber(id=s["id"])["status"] for s in subs}
    assert [status[s["id"]] for s in subs] == ["bounced", "complained", "unsubscribed", "unsubscribed",
                                               "bounced", "active"]
    stored = planned.store.query("SELECT * FROM events ORDER BY id")
    assert [e["type"] for e in stored] == ["bounce", "spamreport", "unsubscribe", "group_unsubscribe", "dropped",
                                           "processed"]
    assert stored[0]["subscriber_id"] == subs[0]["id"] and stored[0]["issue_id"] == 1
    assert stored[0]["occurred_at"] == "2026-01-01T00:00:01+00:00"
    assert json.loads(stored[0]["payload"])["sg_event_id"] == events[0]["sg_event_id"]


def test_webhook_ignores_blocks_and_drops_that_are_not_bounces(hook, planned):
    subs = planned.store.subscribers(status="active")[:2]
    hook([event("bounce", subs[0], type="blocked"), event("dropped", subs[1], reason="Invalid SMTPAPI header")])
    assert [planned.store.get_subscriber(id=s["id"])["status"] for s in subs] == ["active", "active"]


def test_webhook_never_weakens_a_suppression(hook, planned):
    sub = planned.store.subscribers(status="active")[0]
    planned.store.set_subscriber_status(sub["id"], "complained")
    hook([event("unsubscribe", sub), event("bounce", sub, n=2)])
    assert planned.store.get_subscriber(id=sub["id"])["status"] == "complained"


def test_webhook_finds_the_subscriber_by_address_when_custom_args_disagree(hook, planned):
    a, b = planned.store.subscribers(status="active")[:2]
    hook([event("spamreport", a, subscriber_id=str(b["id"]))])
    assert planned.store.get_subscriber(id=a["id"])["status"] == "complained"
    assert planned.store.get_subscriber(id=b["id"])["status"] == "active"


def test_webhook_marks_delivered_opened_and_clicked(hook, planned):
    sub = recipients(planned)[0]
    response = hook([event("delivered", sub), event("open", sub, n=2), event("click", sub, n=3),
                     event("open", sub, n=9)])
    assert response.get_json()["applied"] == 4
    row = [d for d in planned.store.deliveries(issue_id=1) if d["subscriber_id"] == sub["id"]][0]
    assert row["delivered_at"] == "2026-01-01T00:00:01+00:00"
    assert row["opened_at"] == "2026-01-01T00:00:02+00:00"  # the first open, not the last
    assert row["clicked_at"] == "2026-01-01T00:00:03+00:00"
    others = [d for d in planned.store.deliveries(issue_id=1) if d["subscriber_id"] != sub["id"]]
    assert all(d["opened_at"] is None for d in others)


def test_replayed_events_are_stored_once_and_applied_once(hook, planned):
    sub = recipients(planned)[0]
    body = json.dumps([event("unsubscribe", sub), event("open", sub, n=2)]).encode()
    first = hook(None, body=body)
    assert first.get_json()["stored"] == 2
    planned.store.set_subscriber_status(sub["id"], "active")  # they came back since
    again = hook(None, body=body)  # SendGrid retries the same batch
    assert again.status_code == 200
    assert again.get_json() == {"received": 2, "stored": 0, "replayed": 2, "ignored": 0, "applied": 0}
    assert planned.store.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 2
    assert planned.store.get_subscriber(id=sub["id"])["status"] == "active"


def test_events_without_an_id_are_ignored(hook, planned):
    sub = recipients(planned)[0]
    response = hook([{k: v for k, v in event("unsubscribe", sub).items() if k != "sg_event_id"}])
    assert response.get_json()["ignored"] == 1
    assert planned.store.get_subscriber(id=sub["id"])["status"] == "active"


def test_odd_but_signed_events_are_stored_without_a_500(hook, planned):
    sub = recipients(planned)[0]
    odd = [event("open", sub, email=["a@example.org"], timestamp="yesterday", issue_id="x", subscriber_id=None),
           event("bounce", sub, n=2, email=None, subscriber_id="-5"), event("click", sub, n=3, timestamp=1e30)]
    response = hook(odd)
    assert response.status_code == 200
    assert response.get_json()["stored"] == 3
    assert planned.store.get_subscriber(id=sub["id"])["status"] == "active"


def bad_signature_cases(key, other_key, body: bytes) -> dict[str, dict]:
    good = signed(key, body)
    return {
        "no headers": {},
        "no timestamp": {SIG: good[SIG]},
        "no signature": {TS: good[TS]},
        "other key": signed(other_key, body),
        "other timestamp": {SIG: good[SIG], TS: str(int(good[TS]) + 1)},
        "not base64": {SIG: "%%%not base64%%%", TS: good[TS]},
        "bad padding": {SIG: "abc", TS: good[TS]},
        "not DER": {SIG: base64.b64encode(b"\x00" * 70).decode(), TS: good[TS]},
        "empty": {SIG: "", TS: ""},
    }


@pytest.mark.parametrize("case", ["no headers", "no timestamp", "no signature", "other key", "other timestamp",
                                  "not base64", "bad padding", "not DER", "empty"])
def test_webhook_with_a_missing_wrong_or_malformed_signature_is_403(hook, planned, signing_key, case):
    sub = recipients(planned)[0]
    body = json.dumps([event("unsubscribe", sub)]).encode()
    headers = bad_signature_cases(signing_key, ec.generate_private_key(ec.SECP256R1()), body)[case]
    response = hook(None, body=body, headers=headers)
    assert response.status_code == 403
    assert planned.store.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0
    assert planned.store.get_subscriber(id=sub["id"])["status"] == "active"


def test_webhook_with_a_tampered_body_is_403(hook, planned, signing_key):
    a, b = recipients(planned)[:2]
    body = json.dumps([event("unsubscribe", a)]).encode()
    headers = signed(signing_key, body)
    tampered = body.replace(a["email"].encode(), b["email"].encode())
    assert hook(None, body=tampered, headers=headers).status_code == 403
    assert hook(None, body=body + b" ", headers=headers).status_code == 403  # raw bytes, not re-serialised JSON
    assert planned.store.get_subscriber(id=b["id"])["status"] == "active"


def test_webhook_with_non_utf8_body_is_403(hook, signing_key):
    body = b"\xff\xfe[]"
    assert hook(None, body=body, headers=signed(signing_key, body)).status_code == 403


@pytest.mark.parametrize("body", [b"not json", b'{"event": "open"}', b'"[1, 2]"'])
def test_webhook_with_a_signed_body_that_is_not_a_list_of_events_is_400(hook, signing_key, body):
    assert hook(None, body=body, headers=signed(signing_key, body)).status_code == 400


@pytest.mark.parametrize("key", ["", "bm90IGEga2V5", "%%%"])
def test_webhook_without_a_usable_key_rejects_everything(planned, make_app, signing_key, key):
    client = make_app(planned, webhook_public_key=key).test_client()
    body = b"[]"
    response = client.post("/webhooks/sendgrid", data=body, headers=signed(signing_key, body))
    assert response.status_code == 403
    assert client.get("/").status_code == 200  # the rest of the site still works


def test_webhook_needs_no_csrf_but_only_accepts_post(hook, planned, make_app, signing_key):
    assert hook([]).status_code == 200
    client = make_app(planned, webhook_public_key=public_key_b64(signing_key)).test_client()
    assert client.get("/webhooks/sendgrid").status_code == 405


# -- commands -----------------------------------------------------------------------------------------

def test_editors_add_writes_a_hash_under_the_editors_table_and_nothing_else(site, runner):
    path = Path(site.config.source)
    original = path.read_bytes()
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "bob"],
                           input="a long enough password\na long enough password\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "added editor bob" in result.output
    assert "a long enough password" not in result.output  # hidden input
    data = path.read_bytes()
    assert data.startswith(original)
    added = data[len(original):].decode()
    assert re.fullmatch(r'bob = \{hash = "(scrypt|pbkdf2)[^"\n]+", role = "author"\}\n', added)
    stored = load_config(path).editors["bob"]["hash"]
    assert check_password_hash(stored, "a long enough password")
    assert not check_password_hash(stored, "another password")

    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "carol"],
                           input="carols password!\ncarols password!\n", catch_exceptions=False)
    assert result.exit_code == 0
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "bob"],
                           input="bob changed it now\nbob changed it now\n", catch_exceptions=False)
    assert "changed the password of editor bob" in result.output
    lines = path.read_text().splitlines()
    assert path.read_bytes().startswith(original)
    assert [line.split(" = ")[0] for line in lines if line.startswith(("bob", "carol"))] == ["bob", "carol"]
    editors = load_config(path).editors
    assert check_password_hash(editors["bob"]["hash"], "bob changed it now")
    assert check_password_hash(editors["carol"]["hash"], "carols password!")


def test_editors_add_asks_again_when_the_two_passwords_differ(site, runner):
    path = Path(site.config.source)
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "dana"],
                           input="first try password\nsecond try password\nthird try password\n"
                                 "third try password\n", catch_exceptions=False)
    assert result.exit_code == 0
    assert "do not match" in result.output
    assert check_password_hash(load_config(path).editors["dana"]["hash"], "third try password")


@pytest.mark.parametrize("name,password,message", [("bad name!", "long enough password", "letters, digits"),
                                                   ("erin", "short", "at least 12")])
def test_editors_add_refuses_bad_names_and_short_passwords(site, runner, name, password, message):
    path = Path(site.config.source)
    original = path.read_bytes()
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", name], input=f"{password}\n{password}\n")
    assert result.exit_code != 0 and message in result.output
    assert path.read_bytes() == original


def test_editors_add_keeps_other_tables_and_crlf_line_ends(tmp_path, runner):
    path = tmp_path / "newsletter.toml"
    original = 'site_name = "X"\r\n\r\n[editors]\r\nzed = "pbkdf2:sha256:1$a$b"\r\n\r\n# the end\r\n'
    path.write_bytes(original.encode())
    Store(tmp_path / "newsletter.db", create=True).close()
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "amy"],
                           input="amys password!!\namys password!!\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = path.read_bytes().decode()
    assert text.startswith('site_name = "X"\r\n\r\n[editors]\r\nzed = "pbkdf2:sha256:1$a$b"\r\namy = {hash = "')
    assert text.endswith('", role = "author"}\r\n\r\n# the end\r\n')
    assert set(tomllib.loads(text)["editors"]) == {"zed", "amy"}


def test_editors_add_creates_the_table_when_the_file_has_none(tmp_path, runner):
    path = tmp_path / "newsletter.toml"
    path.write_text('site_name = "X"')  # no final newline
    Store(tmp_path / "newsletter.db", create=True).close()
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "amy"],
                           input="amys password!!\namys password!!\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert text.startswith('site_name = "X"\n\n[editors]\namy = {hash = "')
    assert check_password_hash(load_config(path).editors["amy"]["hash"], "amys password!!")


def test_editors_add_refuses_a_site_without_its_database_and_changes_nothing(tmp_path, runner):
    path = tmp_path / "newsletter.toml"
    path.write_text('site_name = "X"\n')
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", "amy"],
                           input="amys password!!\namys password!!\n")
    assert result.exit_code == 1 and "newsletter init" in result.output
    assert path.read_text() == 'site_name = "X"\n' and not (tmp_path / "newsletter.db").exists()


def test_editors_add_needs_a_config_file(tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["editors", "add", "amy"], input="amys password!!\namys password!!\n")
    assert result.exit_code != 0 and "newsletter init" in result.output


def test_an_editor_added_by_the_command_can_log_in(site, runner):
    path = Path(site.config.source)
    runner.invoke(cli, ["--config", str(path), "editors", "add", "fay"],
                  input="fays password 123\nfays password 123\n", catch_exceptions=False)
    client = create_app(path, TESTING=True).test_client()
    assert login(client, "fay", "fays password 123").status_code == 303
    assert logged_in(client)


@pytest.fixture
def serve(drafts):
    """`newsletter serve` in a child process on a free port; yields a function that starts it."""
    procs = []

    def start(*args: str) -> str:
        port = free_port()
        env = {"NEWSLETTER_SECRET": drafts.config.require_secret(), "PATH": "/usr/bin:/bin",
               "NEWSLETTER_SITE_URL": f"http://127.0.0.1:{port}"}  # plain http: cookies are not Secure
        proc = subprocess.Popen([str(Path(sys.executable).parent / "newsletter"), "--config",
                                 str(drafts.config.source), "serve", "--port", str(port), *args],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(proc)
        assert wait_for_port(port, 20, alive=lambda: proc.poll() is None), proc.stdout.read().decode()
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def fetch(opener, url: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener.open(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_serve_runs_the_app_under_waitress(serve):
    base = serve()
    with urllib.request.urlopen(f"{base}/") as response:
        assert response.status == 200
        assert response.headers["Server"] == "newsletter"
        assert b"Subscribe" in response.read()


def test_serve_behind_a_trusted_proxy_tells_clients_apart(serve):
    base = serve("--trusted-proxy", "127.0.0.1")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    client_a, client_b = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "198.51.100.2"}
    status, page = fetch(opener, f"{base}/", headers=client_a)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def sign_up(n: int, headers: dict) -> int:
        return fetch(opener, f"{base}/", {"email": f"r{n}@example.org", "segment": "patients", "cadence": "weekly",
                                          "consent": "yes", "consent_health": "yes", "csrf_token": token}, headers)[0]

    assert [sign_up(n, client_a) for n in range(30)] == [200] * 30  # SUBSCRIBE_MAX_PER_IP
    assert sign_up(30, client_a) == 429
    assert sign_up(31, client_b) == 200


def test_serve_without_a_secret_fails_with_a_clear_message(drafts, runner, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    result = runner.invoke(cli, ["--config", str(drafts.config.source), "serve"])
    assert result.exit_code == 1 and "NEWSLETTER_SECRET" in result.output


def test_editors_added_and_removed_by_the_command_count_at_once_in_a_running_app(site, runner):
    """The app reads [editors] from newsletter.toml when it changes: no restart between `editors add`/`remove`
    and who may log in."""
    path = Path(site.config.source)
    client = create_app(path, TESTING=True).test_client()
    assert login(client, "gus", "guss password 123").status_code == 401
    runner.invoke(cli, ["--config", str(path), "editors", "add", "gus"],
                  input="guss password 123\nguss password 123\n", catch_exceptions=False)
    assert login(client, "gus", "guss password 123").status_code == 303
    client.post("/editor/logout", data={"csrf_token": form_token(client, "/editor/")})
    result = runner.invoke(cli, ["--config", str(path), "editors", "remove", "gus"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert login(client, "gus", "guss password 123").status_code == 401
    path.write_text(path.read_text() + "\n[editors\n")  # a broken edit: refused, never a 500
    assert login(client, "gus", "guss password 123").status_code == 401
