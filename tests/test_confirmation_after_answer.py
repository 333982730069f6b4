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


def test_the_next_request_on_the_same_connection_does_not_wait_for_the_relay(drafts, make_app, smtp_server):
    """A keep-alive client sends the sign-up, then another request at once: it is answered while the relay still
    holds the confirmation (the send is not on the connection's thread)."""
    import http.client
    arrived, release = threading.Event(), threading.Event()
    smtp_server.on_message = lambda message: (arrived.set(), release.wait(30))
    import waitress.server  # what `newsletter serve` runs: it keeps connections alive
    port = free_port()
    server = waitress.server.create_server(
        make_app(drafts, site_url=f"http://127.0.0.1:{port}", backend="smtp", smtp_host=smtp_server.host,
                 smtp_port=smtp_server.port, smtp_security="none"), host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    conn = http.client.HTTPConnection(f"127.0.0.1:{port}", timeout=10)
    try:
        conn.request("GET", "/")
        page = conn.getresponse()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.read().decode()).group(1)
        cookie = page.getheader("Set-Cookie").split(";")[0]
        body = urllib.parse.urlencode({**FORM, "email": "kept@example.org", "csrf_token": token})
        conn.request("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        answer = conn.getresponse()
        assert answer.status == 200 and b"Check your inbox" in answer.read()
        assert arrived.wait(10)
        conn.request("GET", "/privacy", headers={"Cookie": cookie})  # the same connection, the relay still holding
        follow = conn.getresponse()
        assert follow.status == 200 and follow.read() and not release.is_set()
        assert conn.sock is not None  # it was the same connection
    finally:
        release.set()
        conn.close()
        server.close()
    assert smtp_server.wait_for(1, 10)


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


def test_a_queued_confirmation_is_sent_once_by_overlapping_runs_and_never_to_a_complained_address(
        drafts, make_app, tmp_path, runner):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    client = make_app(drafts, outbox=str(blocker / "outbox")).test_client()
    subscribe(client, email="twice@example.org")
    subscribe(client, email="since@example.org")
    [first, second] = drafts.store.queued_notices()
    assert drafts.store.claim_notice(first["id"], first["next_attempt_at"])  # another run is sending this one
    sub = drafts.store.get_subscriber("since@example.org")
    drafts.store.set_subscriber_status(sub["id"], "complained")  # and this address reported us since
    result = invoke_cli(runner, drafts, "notices", "send", "--now", "2026-12-02T12:00:00+00:00")
    assert mails_to(drafts, "twice@example.org") == [] and mails_to(drafts, "since@example.org") == []
    assert [n["id"] for n in drafts.store.queued_notices()] == [first["id"]], result.output


def test_a_queued_confirmation_is_in_the_readers_data_and_purge_drops_it_after_its_retry_period(
        drafts, make_app, tmp_path):
    from datetime import datetime, timedelta, timezone

    from newsletter.retention import purge
    from newsletter.web.privacy import person_export
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    subscribe(make_app(drafts, outbox=str(blocker / "outbox")).test_client(), email="waiting@example.org")
    sub = drafts.store.get_subscriber("waiting@example.org")
    [queued] = person_export(drafts.config, drafts.store, sub)["tables"]["queued_notices"]
    assert queued["recipient"] == "waiting@example.org"
    now = datetime.now(timezone.utc)
    assert dict(purge(drafts.config, drafts.store, now))["confirmations queued longer than retry_deferred_days"] == 0
    later = now + timedelta(days=drafts.config.retry_deferred_days, hours=1)
    assert dict(purge(drafts.config, drafts.store, later))["confirmations queued longer than retry_deferred_days"] == 1
    assert drafts.store.queued_notices() == []
