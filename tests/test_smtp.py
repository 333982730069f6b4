"""The smtp messenger against a real aiosmtpd server on loopback.

Every active subscriber gets exactly one message with a text and an HTML part
and one-click unsubscribe headers; a connection dropped before the message's
end reconnects and goes on; a lost answer after DATA is unknown, never resent.
"""

from __future__ import annotations

import re

import pytest

from newsletter import bootstrap, dispatch
from newsletter.digest import DigestRunner
from newsletter.sources.summaries import read_sources
from newsletter.messengers import messenger_from_config, sender_from_config
from newsletter.model import Envelope
from newsletter.messengers.smtp import SmtpMessenger
from newsletter.model import PLACEHOLDERS
from newsletter.tokens import Tokens
from tests.conftest import SAMPLE_NOW, SECRET, delivery_of
from tests.fixtures_servers import free_port

SEGMENTS = ("patients", "caregivers", "clinicians")


def readers(count: int, start: int = 0, **fields) -> list[dict]:
    return [{"email": f"reader{i:04d}@example.org", "name": f"Reader {i}" if i % 3 else "",
             "segment": SEGMENTS[i % 3], "cadence": "weekly", "topics": [], "status": "active", **fields}
            for i in range(start, start + count)]


@pytest.fixture
def smtp_site(make_site, smtp_server):
    """A site sending to the test's SMTP server, with the bundled summaries and no subscribers yet."""
    ctx = make_site(backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                    smtp_batch_size=4)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    return ctx


def run_with(ctx, messenger=None):
    factory = (lambda: messenger) if messenger is not None else (lambda: messenger_from_config(ctx.config))
    return DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=factory).run("weekly", SAMPLE_NOW)


def ledger(ctx) -> dict[str, dict]:
    """email -> its one delivery row (each test address is in exactly one issue)."""
    rows = ctx.store.deliveries()
    emails = [r["email"] for r in rows]
    assert len(emails) == len(set(emails)), "a subscriber has two deliveries"
    return {r["email"]: r for r in rows}


def test_every_active_subscriber_gets_one_message_with_both_parts_and_unsubscribe_headers(smtp_site, smtp_server):
    ctx = smtp_site
    active = readers(21)
    others = (readers(2, start=100, status="pending") + readers(2, start=200, status="unsubscribed")
              + readers(2, start=300, cadence="monthly"))
    ctx.store.upsert_subscribers(active + others)

    report = run_with(ctx)

    expected = {r["email"] for r in active}
    received = smtp_server.by_recipient()
    assert set(received) == expected  # nobody pending, unsubscribed or monthly
    assert all(len(msgs) == 1 for msgs in received.values())
    assert (report.tally.sent, report.tally.failed, report.tally.unknown) == (len(expected), 0, 0)

    tokens = Tokens(SECRET)
    rows = ledger(ctx)
    for address, (msg,) in received.items():
        subscriber = ctx.store.get_subscriber(address)
        assert msg.rcpt_tos == [address]
        assert msg.mail_from == ctx.config.sender_email
        assert address in msg["To"]
        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        text, html = (p.get_content() for p in parts)
        match = re.fullmatch(r"<(https://digest\.example\.org/u/([^>]+))>", msg["List-Unsubscribe"].strip())  # may be folded
        assert match, msg["List-Unsubscribe"]
        assert tokens.verify("unsubscribe", match.group(2)) == subscriber["id"]
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert match.group(1) in text and match.group(1) in html
        assert not any(p in text or p in html for p in PLACEHOLDERS)
        if subscriber["name"]:
            assert subscriber["name"] in text
        # RFC 5321: CRLF line ends on the wire, never a bare LF.
        assert re.search(rb"(?<!\r)\n", msg.raw) is None
        assert rows[address]["status"] == "sent"
        assert rows[address]["provider_id"]
        assert delivery_of(msg) == rows[address]["id"]

    again = run_with(ctx)
    assert again.tally.sent == 0
    assert smtp_server.count() == len(expected)


def test_dropped_connection_before_data_reconnects_and_continues(smtp_site, smtp_server):
    ctx = smtp_site
    people = readers(12)
    ctx.store.upsert_subscribers(people)
    emails = [p["email"] for p in people]
    smtp_server.drop_at_mail = {3}                      # EOF instead of an answer to MAIL FROM
    smtp_server.drop_at_rcpt = {emails[7]}              # EOF instead of an answer to RCPT TO
    smtp_server.say_421_at_rcpt = {emails[10]}          # "421 closing channel" at RCPT TO
    sleeps: list[float] = []
    messenger = SmtpMessenger(smtp_server.host, smtp_server.port, sender_from_config(ctx.config), security="none",
                              batch_size=5, sleep=sleeps.append)

    report = run_with(ctx, messenger)

    received = smtp_server.by_recipient()
    assert sorted(received) == sorted(emails)
    assert all(len(msgs) == 1 for msgs in received.values())
    assert {r["status"] for r in ledger(ctx).values()} == {"sent"}
    assert report.tally.sent == 12
    assert messenger.connections == smtp_server.connections == 4  # the first and one after each drop
    assert sleeps == [0.2, 0.2, 0.2]  # one short pause before each retry, none after success


def test_lost_answer_after_data_is_unknown_and_refusals_fail(smtp_site, smtp_server):
    ctx = smtp_site
    people = readers(10)
    ctx.store.upsert_subscribers(people)
    emails = [p["email"] for p in people]
    lost, refused, no_user = emails[4], emails[6], emails[8]
    smtp_server.drop_after_data = {lost}   # queued, then the connection closes before "250"
    smtp_server.refuse_data = {refused}    # 554 after the message
    smtp_server.refuse_rcpt = {no_user}    # 550 at RCPT TO

    report = run_with(ctx, SmtpMessenger(smtp_server.host, smtp_server.port, sender_from_config(ctx.config),
                                         security="none", batch_size=4, sleep=lambda s: None))

    rows = ledger(ctx)
    received = smtp_server.by_recipient()
    assert rows[lost]["status"] == "unknown" and len(received[lost]) == 1
    assert rows[refused]["status"] == "failed" and "554" in rows[refused]["error"] and refused not in received
    assert rows[no_user]["status"] == "failed" and "550" in rows[no_user]["error"] and no_user not in received
    rest = set(emails) - {lost, refused, no_user}
    assert all(rows[e]["status"] == "sent" and len(received[e]) == 1 for e in rest)
    assert (report.tally.sent, report.tally.failed, report.tally.unknown) == (7, 2, 1)

    # Another run sends nothing again: the unknown one may already have its copy.
    before = smtp_server.count()
    again = run_with(ctx, SmtpMessenger(smtp_server.host, smtp_server.port, sender_from_config(ctx.config),
                                        security="none", sleep=lambda s: None))
    assert again.tally.sent == 0 and smtp_server.count() == before
    assert ledger(ctx)[lost]["status"] == "unknown"


def test_non_ascii_addresses_never_stop_the_run(smtp_site, smtp_server):
    """email-validator accepts internationalised addresses; each is sent over SMTPUTF8 (aiosmtpd offers it)
    or, when its message cannot be written, fails alone: the run and the rest of its batch go on."""
    ctx = smtp_site
    odd = ["zoë@example.org", "jürgen@example.org"]
    ctx.store.upsert_subscribers(readers(2) + [{"email": odd[0], "name": "Zoë", "segment": "patients",
                                                 "cadence": "weekly", "topics": [], "status": "active"},
                                                {"email": odd[1], "name": "", "segment": "patients",
                                                 "cadence": "weekly", "topics": [], "status": "active"}]
                                 + readers(2, start=10))
    report = run_with(ctx)
    rows = ledger(ctx)
    received = smtp_server.by_recipient()
    for address in odd:
        if rows[address]["status"] == "sent":
            assert len(received[address]) == 1 and received[address][0].rcpt_tos == [address]
        else:
            assert rows[address]["status"] == "failed" and "cannot build the message" in rows[address]["error"]
            assert address not in received
    plain = [e for e in rows if e not in odd]
    assert all(rows[e]["status"] == "sent" and len(received[e]) == 1 for e in plain)
    assert report.tally.sent + report.tally.failed == len(rows) and report.tally.unknown == 0


def test_unreachable_server_defers_one_message_after_bounded_retries_and_gives_the_rest_back(loaded):
    sleeps: list[float] = []
    messenger = SmtpMessenger("127.0.0.1", free_port(), sender_from_config(loaded.config), security="none",
                              timeout=2, sleep=sleeps.append)  # nothing listens on that port
    rendered = DigestRunner(loaded.config, loaded.store, loaded.segments).renderer.render(
        issue_id=1, segment=loaded.segments["patients"], cadence="weekly", period_label="Week of 16 November 2026",
        summaries=loaded.store.summaries()[:3])
    envelopes = [Envelope(i, i, f"r{i}@example.org", "", {p: "x" for p in PLACEHOLDERS}, "https://x/u/x")
                 for i in range(1, 8)]
    outcomes = messenger.send(rendered, envelopes)
    assert [(o.status, o.delivery_ids) for o in outcomes] == [("deferred", [1]), ("pending", list(range(2, 8)))]
    assert all("cannot connect" in o.error for o in outcomes)
    assert sleeps == [0.2, 0.4]  # three attempts for the first message, none for the rest of the batch
    assert messenger.connections == 0


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_batches_by_messages_per_second():
    fake = FakeClock()
    limiter = dispatch.RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    for count in (5, 5, 5, 5):
        limiter.wait(count)
    assert fake.sleeps == pytest.approx([0.5, 0.5, 0.5])
    fake.now += 10  # idle time is not banked into a later burst
    limiter.wait(5)
    assert len(fake.sleeps) == 3
    limiter.wait(5)
    assert fake.sleeps[-1] == pytest.approx(0.5)
    unlimited = dispatch.RateLimiter(0, clock=fake.clock, sleep=fake.sleep)
    unlimited.wait(1000)
    unlimited.wait(1000)
    assert len(fake.sleeps) == 4


def test_rate_limit_setting_paces_smtp_sending(make_site, smtp_server, monkeypatch):
    ctx = make_site(backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                    smtp_batch_size=5, rate_limit=4.0)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers(readers(20, segment="patients"))
    fake = FakeClock()
    seen_at_sleep: list[int] = []

    def sleep(seconds: float) -> None:
        seen_at_sleep.append(smtp_server.count())
        fake.sleep(seconds)

    real = dispatch.RateLimiter
    monkeypatch.setattr(dispatch, "RateLimiter", lambda rate: real(rate, clock=fake.clock, sleep=sleep))

    report = run_with(ctx)

    assert report.tally.sent == 20
    # 20 messages at 4 per second in batches of 5: a pause of 5/4 s before each batch after the first.
    assert fake.sleeps == pytest.approx([1.25, 1.25, 1.25])
    assert seen_at_sleep == [5, 10, 15]  # the server had only the earlier batches when each pause began


def test_a_pool_of_connections_sends_each_reader_exactly_one_message(make_site, smtp_server):
    ctx = make_site("pool", backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                    smtp_security="none", smtp_batch_size=12, smtp_connections=3)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    active = readers(40)
    ctx.store.upsert_subscribers(active + readers(3, start=100, status="unsubscribed"))
    messenger = messenger_from_config(ctx.config)
    assert len(messenger.workers) == 3

    report = run_with(ctx, messenger)

    received = smtp_server.by_recipient()
    assert set(received) == {r["email"] for r in active}
    assert all(len(msgs) == 1 for msgs in received.values())
    assert (report.tally.sent, report.tally.failed, report.tally.unknown) == (len(active), 0, 0)
    assert all(worker.connections >= 1 for worker in messenger.workers)  # every connection carried mail
    assert smtp_server.connections >= 3
    assert {r["status"] for r in ledger(ctx).values()} == {"sent"}
