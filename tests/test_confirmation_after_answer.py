"""The sign-up answer goes before the confirmation does: from outside, a held-back confirmation (bounced,
complained, over its limit), one that went and one the relay refused look alike, in content and in time."""

from __future__ import annotations

import http.cookiejar
import re
import threading
import urllib.parse
import urllib.request

import pytest
from werkzeug.serving import make_server

from tests.fixtures_servers import free_port
from tests.test_web import clock, drafts, invoke_cli, mails_to, make_app, subscribe  # noqa: F401 - fixtures

FORM = {"segment": "patients", "cadence": "weekly", "consent": "yes", "consent_health": "yes"}


@pytest.fixture
def live(drafts, make_app):
    """The app under Werkzeug's own threaded server on loopback; yields a function that starts it."""
    servers = []

    def start(**overrides) -> str:
        port = free_port()  # plain http on loopback: the site URL must say so, or the cookies are Secure
        server = make_server("127.0.0.1", port, make_app(drafts, site_url=f"http://127.0.0.1:{port}", **overrides),
                             threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def post_signup(base: str, email: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(base + "/", timeout=10) as page:
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.read().decode()).group(1)
    body = urllib.parse.urlencode({**FORM, "email": email, "csrf_token": token}).encode()
    with opener.open(urllib.request.Request(base + "/", data=body), timeout=10) as answer:
        return answer.status, answer.read()


def test_the_answer_is_complete_while_the_relay_still_holds_the_confirmation(drafts, live, smtp_server):
    arrived, release = threading.Event(), threading.Event()

    def hold(message) -> None:  # the relay has the message and has not answered yet
        arrived.set()
        release.wait(30)

    smtp_server.on_message = hold
    base = live(backend="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none")
    try:
        status, page = post_signup(base, "waiting@example.org")
        assert status == 200 and b"Check your inbox" in page
        assert arrived.wait(10), "the confirmation never reached the relay"
        assert not release.is_set()  # the whole answer was read while the relay still held the mail
    finally:
        release.set()
    assert smtp_server.wait_for(1, 10)
    [message] = smtp_server.messages
    assert message.rcpt_tos == ["waiting@example.org"] and "/confirm/" in message.get_body(("plain",)).get_content()
    assert drafts.store.queued_notices() == []


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_with_the_relay_down_a_held_back_address_gets_the_same_answer(drafts, make_app, tmp_path, status):
    sub = drafts.store.sign_up(f"{status}@example.org", "patients", "weekly", [])
    drafts.store.set_subscriber_status(sub["id"], status)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    client = make_app(drafts, outbox=str(blocker / "outbox")).test_client()
    fresh = subscribe(client, email="fresh@example.org")
    held = subscribe(client, email=f"{status}@example.org")
    assert (held.status_code, held.get_data()) == (fresh.status_code, fresh.get_data()) and fresh.status_code == 200
    assert [n["recipient"] for n in drafts.store.queued_notices()] == ["fresh@example.org"]  # held back: never


def test_an_erased_reader_leaves_no_queued_confirmation(drafts, make_app, tmp_path, runner):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    subscribe(make_app(drafts, outbox=str(blocker / "outbox")).test_client(), email="gone@example.org")
    assert len(drafts.store.queued_notices()) == 1
    result = invoke_cli(runner, drafts, "subscribers", "remove", "gone@example.org")
    assert result.exit_code == 0, result.output
    assert drafts.store.queued_notices() == [] and mails_to(drafts, "gone@example.org") == []


def test_a_queued_confirmation_is_dropped_after_the_retry_period(drafts, make_app, tmp_path, runner):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    subscribe(make_app(drafts, outbox=str(blocker / "outbox")).test_client(), email="late@example.org")
    result = invoke_cli(runner, drafts, "notices", "send", "--now", "2099-01-01T00:00:00+00:00")
    assert (result.exit_code, result.stdout.strip()) == (0, "sent 0, unknown 0, waiting 0, dropped 1")
    assert drafts.store.queued_notices() == [] and mails_to(drafts, "late@example.org") == []
