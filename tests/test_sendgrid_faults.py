"""The sendgrid messenger against a small SendGrid stub of the tests' own.

Prism checks the contract but cannot answer 429, time out, or count recipients
across requests; this stub (http.server in a thread on loopback) plays a
script of answers and records every request it gets.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from newsletter import bootstrap, dispatch
from newsletter.digest import DigestRunner
from newsletter.sources.summaries import read_sources
from newsletter.messengers import sender_from_config
from newsletter.model import FatalSendError
from newsletter.model import Envelope
from newsletter.messengers.sendgrid import MAX_PERSONALIZATIONS, SendGridMessenger, build_payload, split_requests
from newsletter.model import PLACEHOLDERS
from tests.conftest import SAMPLE_NOW
from tests.fixtures_servers import free_port

AUDIENCE = 2500  # three requests of at most 1000


@dataclass
class Seen:
    status: int
    emails: list[str]
    personalizations: int
    recipients: int
    delivery_ids: list[int]
    message_id: str | None
    connection: int = 0  # the client's port: requests over one keep-alive connection share it
    body: dict = field(default_factory=dict)


@dataclass
class Stub:
    url: str = ""
    script: list[str] = field(default_factory=list)  # one answer per request; "202" once it runs out
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Seen]:
        return [s for s in self.seen if s.status == 202]

    def connections(self) -> int:
        return len({s.connection for s in self.seen})


class StubHandler(BaseHTTPRequestHandler):
    stub: Stub
    protocol_version = "HTTP/1.1"  # keep-alive, as SendGrid's API

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        personalizations = body.get("personalizations", [])
        emails = [a["email"] for p in personalizations for kind in ("to", "cc", "bcc") for a in p.get(kind, [])]
        with self.stub.lock:
            answer = self.stub.script.pop(0) if self.stub.script else "202"
            number = len(self.stub.seen) + 1
            seen = Seen(status=0 if answer == "slow" else int(answer.split()[0]), emails=emails,
                        personalizations=len(personalizations), recipients=len(emails),
                        delivery_ids=[int(p["custom_args"]["delivery_id"]) for p in personalizations if "custom_args" in p],
                        message_id=f"stub-msg-{number}" if answer.startswith("202") else None,
                        connection=self.client_address[1], body=body)
            self.stub.seen.append(seen)
        if answer == "slow":  # the request arrived whole; the answer never comes in time
            self.stub.release.wait(10)
            self.close_connection = True
            return
        headers = {"Content-Type": "application/json"}
        payload = b""
        if answer == "202 drop":  # accepted, then the server drops the idle connection (no Connection: close)
            self.close_connection = True
            answer = "202"
        if answer == "202":
            headers["X-Message-Id"] = seen.message_id
        elif answer == "429":
            headers["X-RateLimit-Reset"] = str(int(time.time()) + 30)
            payload = json.dumps({"errors": [{"field": None, "message": "too many requests"}]}).encode()
        elif answer == "400":
            payload = json.dumps({"errors": [{"field": "personalizations.0.to.0.email",
                                              "message": "Does not contain a valid address."}]}).encode()
        elif answer == "401":
            payload = json.dumps({"errors": [{"field": None, "message": "The provided authorization grant is "
                                              "invalid, expired, or revoked"}]}).encode()
        else:
            payload = json.dumps({"errors": [{"field": None, "message": f"stub says {answer}"}]}).encode()
        self.send_response(int(answer))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def stub():
    state = Stub()
    handler = type("Handler", (StubHandler,), {"stub": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sendgrid-stub",
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def crowd(make_site, stub):
    """A site whose 2500 active weekly patients make one issue of three requests."""
    ctx = make_site(backend="sendgrid", legacy_consent=True, sendgrid_host=stub.url)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers([{"email": f"person{i:05d}@example.org", "name": f"Person {i}" if i % 2 else "",
                                   "segment": "patients", "cadence": "weekly", "topics": [], "status": "active"}
                                  for i in range(AUDIENCE)])
    return ctx


def messenger_for(ctx, stub, **kw) -> SendGridMessenger:
    options = {"timeout": 1.0, "max_attempts": 4, "backoff_base": 0.001, "sleep": lambda s: None, **kw}
    return SendGridMessenger("SG.test", sender_from_config(ctx.config), host=stub.url, **options)


def run(ctx, messenger, **kw):
    return DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=lambda: messenger).run(
        "weekly", SAMPLE_NOW, **kw)


def audience(ctx) -> set[str]:
    return {s["email"] for s in ctx.store.subscribers(status="active")}


def assert_request_limits(seen: list[Seen]) -> None:
    for s in seen:
        assert s.personalizations <= MAX_PERSONALIZATIONS
        assert s.recipients <= 1000
        assert len({e.lower() for e in s.emails}) == len(s.emails), "an address repeats within one request"


def test_retries_on_429_and_5xx_then_every_subscriber_is_accepted_once(crowd, stub):
    stub.script = ["429", "500", "202", "502", "202", "202"]
    sleeps: list[float] = []
    report = run(crowd, messenger_for(crowd, stub, sleep=sleeps.append))

    assert [s.status for s in stub.seen] == [429, 500, 202, 502, 202, 202]
    assert_request_limits(stub.seen)
    accepted = Counter(e for s in stub.accepted() for e in s.emails)
    assert set(accepted) == audience(crowd) and set(accepted.values()) == {1}
    # A retry carries exactly the recipients of the request it repeats.
    assert stub.seen[0].emails == stub.seen[1].emails == stub.seen[2].emails
    assert stub.seen[3].emails == stub.seen[4].emails
    # X-RateLimit-Reset (30 s ahead) is honoured; otherwise short exponential backoff.
    assert len(sleeps) == 3 and sleeps[0] > 20 and max(sleeps[1:]) < 1
    assert report.tally.sent == AUDIENCE and report.tally.failed == report.tally.unknown == 0
    # Each delivery keeps the X-Message-Id of the request that carried it.
    message_of = {d: s.message_id for s in stub.accepted() for d in s.delivery_ids}
    rows = crowd.store.deliveries()
    assert len(rows) == AUDIENCE
    assert all(r["status"] == "sent" and r["provider_id"] == message_of[r["id"]] for r in rows)


def test_a_request_left_unanswered_is_unknown_and_never_retried(crowd, stub):
    stub.script = ["202", "slow", "202"]
    sleeps: list[float] = []
    report = run(crowd, messenger_for(crowd, stub, sleep=sleeps.append))

    assert [s.status for s in stub.seen] == [202, 0, 202]  # the slow one was not sent again
    assert sleeps == []
    unanswered = set(stub.seen[1].emails)
    rows = {r["email"]: r for r in crowd.store.deliveries()}
    assert {e for e, r in rows.items() if r["status"] == "unknown"} == unanswered
    assert all("no answer" in rows[e]["error"] for e in unanswered)
    assert {e for e, r in rows.items() if r["status"] == "sent"} == audience(crowd) - unanswered
    assert (report.tally.sent, report.tally.unknown) == (AUDIENCE - len(unanswered), len(unanswered))

    # Running again sends nothing: the provider may have those 1000 already.
    again = run(crowd, messenger_for(crowd, stub))
    assert len(stub.seen) == 3 and again.tally.sent == 0
    assert crowd.store.delivery_counts()["unknown"] == len(unanswered)


def test_retry_unknown_resends_the_unanswered_request_once(crowd, stub):
    stub.script = ["202", "slow", "202"]
    run(crowd, messenger_for(crowd, stub))
    unanswered = set(stub.seen[1].emails)
    # Only the operator's explicit choice re-sends them, once.
    retried = run(crowd, messenger_for(crowd, stub), retry_unknown=True)
    assert retried.tally.sent == len(unanswered)
    assert len(stub.seen) == 4 and set(stub.seen[3].emails) == unanswered
    assert {r["status"] for r in crowd.store.deliveries()} == {"sent"}


def test_defers_after_bounded_attempts_and_goes_on_with_the_rest(crowd, stub):
    stub.script = ["500"] * 4
    sleeps: list[float] = []
    report = run(crowd, messenger_for(crowd, stub, sleep=sleeps.append))

    assert [s.status for s in stub.seen] == [500] * 4 + [202, 202]
    assert len(sleeps) == 3  # between attempts, none after the last
    deferred = set(stub.seen[0].emails)  # 5xx is transient: a later run tries them again
    rows = {r["email"]: r for r in crowd.store.deliveries()}
    assert {e for e, r in rows.items() if r["status"] == "deferred"} == deferred
    error = rows[next(iter(deferred))]["error"]
    assert "sendgrid 500" in error and "stub says 500" in error and "deferred after 4 attempts" in error
    assert (report.tally.sent, report.tally.deferred, report.tally.failed) == (AUDIENCE - len(deferred),
                                                                               len(deferred), 0)
    assert report.tally.deferrals[error] == len(deferred) and not report.tally.stopped


def test_400_is_not_retried_and_keeps_the_providers_reasons(crowd, stub):
    stub.script = ["400"]
    sleeps: list[float] = []
    report = run(crowd, messenger_for(crowd, stub, sleep=sleeps.append))

    assert [s.status for s in stub.seen] == [400, 202, 202] and sleeps == []
    failed = [r for r in crowd.store.deliveries() if r["status"] == "failed"]
    assert {r["email"] for r in failed} == set(stub.seen[0].emails)
    assert failed[0]["error"] == "sendgrid 400: personalizations.0.to.0.email: Does not contain a valid address."
    assert report.tally.failed == len(failed)


def test_refused_credentials_mid_run_stop_it_without_losing_or_repeating_anyone(crowd, stub):
    stub.script = ["202", "401"]
    with pytest.raises(FatalSendError, match="sendgrid 401.*authorization grant.*SENDGRID_API_KEY"):
        run(crowd, messenger_for(crowd, stub))
    counts = crowd.store.delivery_counts()
    assert counts == {"sent": len(stub.seen[0].emails), "pending": AUDIENCE - len(stub.seen[0].emails)}
    assert len(stub.seen) == 2  # no retry of a 401

    report = run(crowd, messenger_for(crowd, stub))
    accepted = Counter(e for s in stub.accepted() for e in s.emails)
    assert set(accepted) == audience(crowd) and set(accepted.values()) == {1}
    assert report.tally.sent == AUDIENCE - len(stub.seen[0].emails)
    assert crowd.store.delivery_counts() == {"sent": AUDIENCE}


def test_refused_connection_is_retried_then_deferred(loaded):
    sleeps: list[float] = []
    messenger = SendGridMessenger("SG.test", sender_from_config(loaded.config), host=f"http://127.0.0.1:{free_port()}",
                                  timeout=2, max_attempts=3, backoff_base=0.001, sleep=sleeps.append)
    outcome = messenger.post({"personalizations": []}, [7, 8])
    assert (outcome.status, outcome.delivery_ids) == ("deferred", [7, 8])
    assert "could not connect" in outcome.error and "deferred after 3 attempts" in outcome.error
    assert messenger.requests == 3 and len(sleeps) == 2


def envelope(i: int, email: str) -> Envelope:
    return Envelope(i, i, email, "", {p: f"v{i}" for p in PLACEHOLDERS}, f"https://x/u/{i}")


def test_requests_never_exceed_1000_or_repeat_an_address(rendered):
    envs = [envelope(i, f"p{i}@example.org") for i in range(2500)]
    envs += [envelope(3000, "P7@example.org"), envelope(3001, "p7@EXAMPLE.org")]  # the same mailbox, other case
    chunks = split_requests(envs)
    assert [len(c) for c in chunks] == [1000, 1000, 501, 1]
    for chunk in chunks:
        keys = [e.email.lower() for e in chunk]
        assert len(keys) == len(set(keys))
    assert sorted(e.delivery_id for c in chunks for e in c) == sorted(e.delivery_id for e in envs)
    with pytest.raises(ValueError, match="twice"):
        build_payload(rendered, [envs[7], envs[-1]], plain_sender())
    with pytest.raises(ValueError, match="1..1000"):
        build_payload(rendered, envs[:1001], plain_sender())


def test_fatal_answer_after_part_of_a_batch_went_out_reports_that_part(loaded, stub, rendered):
    """One send() that needs two requests: the second meets 401 after the first was accepted."""
    stub.script = ["202", "401"]
    messenger = messenger_for(loaded, stub)
    envs = [envelope(i, f"p{i}@example.org") for i in range(3)] + [envelope(9, "P1@example.org")]
    outcomes = messenger.send(rendered, envs)
    assert [o.status for o in outcomes] == ["sent", "failed"]
    assert outcomes[0].delivery_ids == [0, 1, 2] and outcomes[0].provider_id == "stub-msg-1"
    assert outcomes[1].delivery_ids == [9] and "run stopped" in outcomes[1].error
    with pytest.raises(FatalSendError):  # the run stops at the next batch, before any request
        messenger.send(rendered, [envelope(20, "q@example.org")])
    assert len(stub.seen) == 2
    messenger.close()


def test_requests_share_one_keep_alive_connection(crowd, stub):
    """429 and 5xx answers keep the connection; the whole issue goes over one."""
    stub.script = ["429", "500", "202", "202", "202"]
    messenger = messenger_for(crowd, stub)
    report = run(crowd, messenger)
    assert report.tally.sent == AUDIENCE and len(stub.seen) == 5
    assert stub.connections() == 1 and messenger.transport.connections == 1


def test_a_connection_the_server_dropped_while_idle_is_reopened_not_unknown(crowd, stub):
    """The server closes the idle connection after each answer: the next request opens a new one
    before writing anything, so nobody is left unknown and nobody is sent twice."""
    stub.script = ["202 drop", "202 drop", "202 drop"]
    messenger = messenger_for(crowd, stub)
    report = run(crowd, messenger)
    accepted = Counter(e for s in stub.accepted() for e in s.emails)
    assert set(accepted) == audience(crowd) and set(accepted.values()) == {1}
    assert report.tally.sent == AUDIENCE and report.tally.unknown == 0
    assert stub.connections() == messenger.transport.connections == 3


def test_rate_limit_paces_api_requests(crowd, stub, monkeypatch):
    crowd.config = crowd.config.replace(rate_limit=500.0)
    clock = {"now": 0.0}
    sleeps: list[tuple[float, int]] = []

    def sleep(seconds: float) -> None:
        sleeps.append((seconds, len(stub.seen)))
        clock["now"] += seconds

    real = dispatch.RateLimiter
    monkeypatch.setattr(dispatch, "RateLimiter", lambda rate: real(rate, clock=lambda: clock["now"], sleep=sleep))
    report = run(crowd, messenger_for(crowd, stub))
    assert report.tally.sent == AUDIENCE
    # 1000 messages at 500 a second: 2 s before the second and the third request, none before the first.
    assert sleeps == [(pytest.approx(2.0), 1), (pytest.approx(2.0), 2)]


@pytest.fixture
def rendered(loaded):
    """A real rendered variant (placeholders left for each recipient)."""
    return DigestRunner(loaded.config, loaded.store, loaded.segments).renderer.render(
        issue_id=1, segment=loaded.segments["patients"], cadence="weekly", period_label="Week of 16 November 2026",
        summaries=loaded.store.summaries()[:2])


def plain_sender():
    from newsletter.model import Sender
    return Sender(email="digest@example.org", name="Digest")


def test_sendgrid_down_trips_the_breaker_then_a_later_run_sends_everyone_once(crowd, stub):
    """5xx and refused connections are transient on SendGrid too: the same deferral and breaker as SMTP."""
    from datetime import datetime, timedelta, timezone

    import time_machine

    from newsletter.dispatch import BREAKER_AFTER

    stub.script = ["503"] * 40
    messenger = messenger_for(crowd, stub)
    messenger.batch_size = 500  # five batches: the breaker stops after three
    report = run(crowd, messenger)
    assert len(stub.seen) == BREAKER_AFTER * 4 and not stub.accepted()  # 4 attempts per request, 3 requests
    assert crowd.store.delivery_counts() == {"deferred": AUDIENCE}
    assert report.tally.stopped.startswith("relay unreachable: sendgrid 503: stub says 503")
    assert report.tally.stopped.endswith(f"; {AUDIENCE:,} deferred, will retry")
    assert crowd.store.get_issue(1)["status"] == "sending"

    stub.script = []
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(minutes=6), tick=True):
        again = DigestRunner(crowd.config, crowd.store, crowd.segments,
                             messenger_factory=lambda: messenger_for(crowd, stub)).run(None, SAMPLE_NOW)
    accepted = Counter(e for s in stub.accepted() for e in s.emails)
    assert set(accepted) == audience(crowd) and set(accepted.values()) == {1}
    assert again.tally.sent == AUDIENCE and crowd.store.delivery_counts() == {"sent": AUDIENCE}
    assert crowd.store.get_issue(1)["status"] == "sent"
