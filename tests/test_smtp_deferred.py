"""Transient, permanent and lost: how SMTP answers become deferred, failed or unknown, against aiosmtpd.

Also the circuit breaker, the retry schedule of deferred deliveries (moved
through time with time-machine), the "partly sent" lines of `status` and
`issues list`, TCP_NODELAY on every kind of connection, and trust through
smtp_ca_file.
"""

from __future__ import annotations

import re
import socket
import ssl
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from hypothesis import given, strategies as st

from newsletter import bootstrap
from newsletter.cli import cli
from newsletter.digest import DigestRunner
from newsletter.dispatch import BREAKER_AFTER, retry_delay
from newsletter.messengers import sender_from_config
from newsletter.messengers.smtp import SmtpMessenger, tls_context, wire_bytes
from newsletter.model import FatalSendError, Sender
from newsletter.sources.summaries import read_sources
from tests.conftest import SAMPLE_NOW
from tests.fixtures_postfix import make_private_ca
from tests.fixtures_servers import SmtpSink, free_port


class FaultySink(SmtpSink):
    """The tests' aiosmtpd sink with the answers a real relay gives when it is busy or strict."""

    def __init__(self):
        super().__init__()
        self.say_451_at_rcpt: set[str] = set()    # "451 try again later" (greylisting), every time
        self.say_452_after_data: set[str] = set()  # "452 insufficient storage" to the final dot, every time
        self.refuse_sender = False                 # "553" to MAIL FROM

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refuse_sender:
            return "553 5.7.1 Sender address rejected: not owned by user"
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.say_451_at_rcpt:
            return "451 4.7.1 Greylisted, try again later"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if set(envelope.rcpt_tos) & self.say_452_after_data:
            return "452 4.3.1 Insufficient system storage"
        return await super().handle_DATA(server, session, envelope)


def start(handler, **options):
    from aiosmtpd.controller import Controller
    handler.port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port, ready_timeout=10, **options)
    controller.start()
    return controller


@pytest.fixture
def faulty():
    sink = FaultySink()
    controller = start(sink)
    yield sink
    controller.stop()


def site_for(make_site, port, count, name="site", **overrides):
    ctx = make_site(name, **{"backend": "smtp", "legacy_consent": True, "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none",
                             "smtp_batch_size": 5, **overrides})
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers([{"email": f"r{i:03d}@example.org", "segment": "patients", "cadence": "weekly",
                                   "status": "active"} for i in range(count)])
    return ctx


def run(ctx, sleeps=None, **kw):
    def factory():
        return SmtpMessenger("127.0.0.1", ctx.config.smtp_port, sender_from_config(ctx.config), security="none",
                             batch_size=ctx.config.smtp_batch_size, sleep=(sleeps if sleeps is not None else []).append)
    return DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=factory).run(
        kw.pop("cadence", "weekly"), SAMPLE_NOW, **kw)


def statuses(ctx) -> dict[str, str]:
    return {r["email"]: r["status"] for r in ctx.store.deliveries()}


def test_4xx_defers_5xx_fails_and_each_outcome_stays_with_its_reader(make_site, faulty):
    ctx = site_for(make_site, faulty.port, 10)
    grey, full, gone, refused = "r002@example.org", "r004@example.org", "r006@example.org", "r008@example.org"
    faulty.say_451_at_rcpt = {grey}
    faulty.say_452_after_data = {full}
    faulty.refuse_rcpt = {gone}      # 550 at RCPT TO
    faulty.refuse_data = {refused}   # 554 after the message
    report = run(ctx)
    st_ = statuses(ctx)
    assert (st_[grey], st_[full], st_[gone], st_[refused]) == ("deferred", "deferred", "failed", "failed")
    assert [e for e, s in st_.items() if s == "sent"] == sorted(set(st_) - {grey, full, gone, refused})
    assert (report.tally.sent, report.tally.deferred, report.tally.failed) == (6, 2, 2)
    assert not report.tally.stopped  # two transient failures, not in a row
    rows = {r["email"]: r for r in ctx.store.deliveries()}
    assert "451" in rows[grey]["error"] and rows[grey]["attempts"] == 1 and rows[grey]["next_attempt_at"]
    assert ctx.store.get_issue(1)["status"] == "sending"  # not sent while two wait


def test_a_5xx_to_the_sender_stops_the_run_with_one_line_and_loses_nobody(make_site, faulty, runner):
    ctx = site_for(make_site, faulty.port, 7)
    faulty.refuse_sender = True
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "digest", "run", "--now", SAMPLE_NOW.isoformat()])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: smtp: 127.0.0.1:{faulty.port} refuses mail from digest@example.org: 553 5.7.1 Sender address "
        "rejected: not owned by user (check sender_email and what the relay lets it send)"]
    assert set(statuses(ctx).values()) == {"pending"}


def test_drops_before_the_end_of_data_are_retried_and_never_deferred_when_the_retry_works(make_site, faulty):
    ctx = site_for(make_site, faulty.port, 6)
    faulty.drop_at_rcpt = {"r001@example.org"}
    faulty.say_421_at_rcpt = {"r003@example.org"}
    report = run(ctx)
    assert set(statuses(ctx).values()) == {"sent"} and report.tally.sent == 6
    assert len(faulty.by_recipient()["r001@example.org"]) == 1


def test_the_breaker_stops_an_unreachable_relay_after_a_few_tries(make_site, runner):
    ctx = site_for(make_site, free_port(), 40)  # nothing listens there
    sleeps: list[float] = []
    report = run(ctx, sleeps)
    counts = ctx.store.delivery_counts()
    assert counts == {"deferred": 40}
    # Three batches tried their first message three times each; nobody else was tried.
    assert len(sleeps) == BREAKER_AFTER * 2
    tried = [r for r in ctx.store.deliveries() if r["attempts"]]
    assert len(tried) == BREAKER_AFTER
    assert report.tally.stopped == (f"relay unreachable: smtp: 127.0.0.1:{ctx.config.smtp_port}: cannot connect: "
                                    "[Errno 111] Connection refused (after 3 attempts); 40 deferred, will retry")
    assert report.tally.needs_attention

    result = runner.invoke(cli, ["--config", str(ctx.config.source), "digest", "run", "--send-only"])
    # Within the first delay the cron line tries nobody: it says so and exits 0.
    assert result.exit_code == 0 and "sent 0, failed 0, unknown 0, deferred 0" in result.output


def test_deferred_deliveries_come_back_with_growing_delays_then_fail(make_site, faulty):
    ctx = site_for(make_site, faulty.port, 3, retry_deferred_days=1.0)
    grey = "r001@example.org"
    faulty.say_451_at_rcpt = {grey}
    start_at = datetime(2026, 11, 20, 7, 0, tzinfo=timezone.utc)
    tried_at: list[datetime] = []
    with time_machine.travel(start_at, tick=False) as clock:
        run(ctx)
        minute = start_at
        while minute < start_at + timedelta(days=1, hours=2):  # the cron line, every ten minutes
            minute += timedelta(minutes=10)
            clock.move_to(minute)
            before = ctx.store.deliveries(status="deferred")
            report = run(ctx, cadence=None)
            if before and ctx.store.deliveries(status="deferred") and report.tally.deferred:
                tried_at.append(minute)
            if ctx.store.deliveries(status="failed"):
                break
    gaps = [(b - a).total_seconds() for a, b in zip([start_at] + tried_at, tried_at)]
    # Each retry waits at least twice as long as the one before, up to 4 hours (cron rounds up to 10 minutes).
    assert gaps[:5] == [600, 600, 1200, 2400, 4800] and max(gaps) <= 4 * 3600 + 600
    assert all(b >= a for a, b in zip(gaps, gaps[1:]))
    row = ctx.store.deliveries(status="failed")[0]
    assert row["email"] == grey and row["error"].startswith(f"gave up after {len(tried_at) + 1} attempts since ")
    assert "451 4.7.1 Greylisted" in row["error"]
    assert ctx.store.get_issue(1)["status"] == "sent"  # nothing waits any more
    assert len(faulty.by_recipient()) == 2 and grey not in faulty.by_recipient()


def test_retry_delay_doubles_from_five_minutes_up_to_four_hours():
    assert [retry_delay(n) for n in range(1, 9)] == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]


def test_status_and_issues_list_say_partly_sent_with_counts_and_the_command(make_site, faulty, runner):
    ctx = site_for(make_site, faulty.port, 8)
    faulty.say_451_at_rcpt = {"r003@example.org"}
    run(ctx)
    ctx.store.mark_deliveries([ctx.store.deliveries()[0]["id"]], "unknown", error="lost after DATA")
    config = str(ctx.config.source)
    listing = runner.invoke(cli, ["--config", config, "issues", "list"], catch_exceptions=False).output
    assert re.search(r"^\s+1  patients\s+weekly\s+2026-W47\s+partly sent deferred 1, sent 6, unknown 1; resumes "
                     r"with `newsletter digest run --send-only` \(the ten-minute cron line\), deferred ones from "
                     r"\S+; `newsletter issues send 1 --retry-unknown` re-sends the unknown ones", listing, re.M), listing
    status = runner.invoke(cli, ["--config", config, "status"], catch_exceptions=False).output
    assert "Partly sent: issue 1 (patients weekly 2026-W47): deferred 1, sent 6, unknown 1; resumes with" in status
    shown = runner.invoke(cli, ["--config", config, "issues", "show", "1"], catch_exceptions=False).output
    assert shown.startswith("issue 1: patients weekly 2026-W47 (partly sent)")


def test_retry_failed_resends_only_what_the_operator_picks(make_site, faulty, runner):
    ctx = site_for(make_site, faulty.port, 6)
    faulty.refuse_rcpt = {"r001@example.org", "r002@example.org"}
    faulty.refuse_data = {"r004@example.org"}
    run(ctx)
    faulty.refuse_rcpt, faulty.refuse_data = set(), set()
    config = str(ctx.config.source)
    lone = runner.invoke(cli, ["--config", config, "digest", "run", "--send-only", "--failed-matching", "x"])
    assert lone.exit_code == 2 and "--failed-matching goes with --retry-failed" in lone.output
    result = runner.invoke(cli, ["--config", config, "issues", "send", "1", "--retry-failed",
                                 "--failed-matching", "554 5.7.1"], catch_exceptions=False)
    assert "sent 1, failed 0" in result.output
    assert statuses(ctx)["r004@example.org"] == "sent"
    assert [e for e, s in statuses(ctx).items() if s == "failed"] == ["r001@example.org", "r002@example.org"]


# -- connections ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_private_ca(tmp_path_factory.mktemp("tls"))


def server_context(files) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_every_connection_sets_tcp_nodelay_and_tls_trusts_smtp_ca_file(security, tls_files, rendered_one):
    sink = SmtpSink()
    options = {"ssl_context": server_context(tls_files)} if security == "ssl" else (
        {"tls_context": server_context(tls_files), "require_starttls": True} if security == "starttls" else {})
    controller = start(sink, **options)
    try:
        messenger = SmtpMessenger("127.0.0.1", sink.port, Sender("digest@example.org"), security=security,
                                  ca_file=str(tls_files.ca))
        conn = messenger._ensure()
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert isinstance(conn.sock, ssl.SSLSocket) == (security != "none")
        outcomes = messenger.send(*rendered_one)
        messenger.close()
        assert [o.status for o in outcomes] == ["sent"] and sink.count() == 1
    finally:
        controller.stop()


def test_tls_trust_and_name_errors_are_one_clear_line(tmp_path, tls_files, rendered_one):
    other = make_private_ca(tmp_path / "other", names=("relay.invalid",), ip=False)
    for files, ca_file, expected in (
            (tls_files, "", "TLS certificate not trusted: unable to get local issuer certificate (set smtp_ca_file"),
            (other, str(other.ca), "TLS certificate is for another name: IP address mismatch, certificate is not "
                                   "valid for '127.0.0.1'. (set smtp_host to a name the certificate carries)")):
        sink = SmtpSink()
        controller = start(sink, tls_context=server_context(files), require_starttls=True)
        try:
            messenger = SmtpMessenger("127.0.0.1", sink.port, Sender("digest@example.org"), ca_file=ca_file)
            with pytest.raises(FatalSendError) as caught:
                messenger.send(*rendered_one)
            assert str(caught.value).startswith(f"smtp: 127.0.0.1:{sink.port}: {expected}")
            assert "\n" not in str(caught.value) and sink.count() == 0
        finally:
            controller.stop()
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for path in (tmp_path / "missing.pem", tmp_path / "junk.pem"):
        with pytest.raises(FatalSendError, match=rf"^smtp_ca_file: {re.escape(str(path))}: cannot be used as a CA "
                                                 r"bundle: [^\n]+$"):
            tls_context(str(path))


@pytest.fixture
def rendered_one(loaded):
    from newsletter.model import PLACEHOLDERS, Envelope
    rendered = DigestRunner(loaded.config, loaded.store, loaded.segments).renderer.render(
        issue_id=1, segment=loaded.segments["patients"], cadence="weekly", period_label="Week of 16 November 2026",
        summaries=loaded.store.summaries()[:2])
    return rendered, [Envelope(1, 1, "one@example.org", "", {p: "x" for p in PLACEHOLDERS}, "https://x/u/x")]


# -- the bytes on the wire ---------------------------------------------------------------------------------------

def reference_wire_bytes(data: bytes) -> bytes:
    """What wire_bytes did with regular expressions before it used bytes.replace."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"\n", b"\r", b"\r\n", b"..", b"\n.", b"x y", b"\xc3\xa9"]),
                max_size=40).map(b"".join))
def test_wire_bytes_matches_the_reference_and_never_ends_the_message_early(data):
    wire = wire_bytes(data)
    assert wire == reference_wire_bytes(data)
    assert wire.endswith(b"\r\n.\r\n") and b"\r\n.\r\n" not in wire[:-3]
    assert re.search(rb"(?<!\r)\n", wire) is None
