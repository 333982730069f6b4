"""`digest run --workers N`: worker processes split each issue by id range on one ledger, as one process would.

Real parts only: the CLI in this process starting real worker processes, a real SQLite file shared by
them, the Maildir messenger and aiosmtpd. Killing workers and the parent is in test_crash.py.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter

import pytest
from hypothesis import given, strategies as st

from newsletter import bench, bootstrap
from newsletter.cli import cli
from newsletter.sources.summaries import read_sources
from tests.conftest import POSTAL, SAMPLE_NOW, SECRET, read_maildir
from tests.fixtures_servers import free_port

SEGMENTS = ("patients", "caregivers", "clinicians")
AUDIENCE = 300


def fill(ctx, count: int = AUDIENCE) -> None:
    """The bundled summaries and `count` readers over the segments with the benchmark's topic choices, one in
    ten monthly (not in a weekly issue); one in seven without a consent record (smtp skips them)."""
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    readers = [{"email": f"reader{i:04d}@example.org", "name": f"Reader {i}", "segment": SEGMENTS[i % 3],
                "cadence": "monthly" if i % 10 == 9 else "weekly", "status": "active",
                "topics": bench.TOPIC_SETS[i % len(bench.TOPIC_SETS)]} for i in range(count)]
    ctx.store.upsert_subscribers_with_consent([{**r, "consent": {"method": "import", "basis": "test"}}
                                               for i, r in enumerate(readers) if i % 7])
    ctx.store.upsert_subscribers([r for i, r in enumerate(readers) if not i % 7])


def digest_run(runner, ctx, *extra: str):
    return runner.invoke(cli, ["--config", str(ctx.config.source), "digest", "run", "--now", SAMPLE_NOW.isoformat(),
                               *extra], catch_exceptions=False)


@given(done=st.lists(st.sampled_from(["pending", "sent", "skipped", "deferred"]), min_size=60, max_size=60),
       parts=st.integers(min_value=1, max_value=5))
def test_pending_ranges_cover_each_pending_delivery_once_in_runs_of_about_equal_size(ledger_site, done, parts):
    """Whatever rows are still pending, the ranges hold each once, in order, sizes within one of each other;
    pending_batches over a range yields exactly the pending rows in it."""
    store, issue_id, ids = ledger_site
    for status in ("pending", "sent", "skipped", "deferred"):
        store.mark_deliveries([i for i, s in zip(ids, done) if s == status], status)
    pending = [i for i, s in zip(ids, done) if s == "pending"]
    ranges = store.pending_ranges(issue_id, parts)
    assert len(ranges) == min(parts, len(pending))
    assert all(a <= b < c for (a, b), (c, _) in zip(ranges, ranges[1:]))
    shares = [[i for i in pending if first <= i <= last] for first, last in ranges]
    assert sum(shares, []) == pending
    assert not shares or max(map(len, shares)) - min(map(len, shares)) <= 1
    for (first, last), share in zip(ranges, shares):
        assert [row[0] for rows in store.pending_batches(issue_id, 7, (first, last)) for row in rows] == share


@pytest.fixture(scope="module")
def ledger_site(tmp_path_factory):
    """One issue of 60 planned deliveries; each example sets their statuses afresh."""
    from newsletter.context import Context
    from newsletter.settings import load_config
    result = bootstrap.init(tmp_path_factory.mktemp("ledger") / "site",
                            {"postal_address": POSTAL, "require_approval": "no", "site_url": "https://d.example.org"},
                            env={"NEWSLETTER_SECRET": SECRET})
    ctx = Context(load_config(result.config_path, env={"NEWSLETTER_SECRET": SECRET}))
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers([{"email": f"r{i:03d}@example.org", "segment": "patients", "cadence": "weekly",
                                   "status": "active"} for i in range(60)])
    issue_id, _ = ctx.store.create_issue("patients", "weekly", "2026-W47", [1], "approved")
    ctx.store.plan_deliveries(issue_id)
    yield ctx.store, issue_id, [r["id"] for r in ctx.store.deliveries(issue_id=issue_id)]
    ctx.close()


def test_workers_zero_or_negative_are_refused_with_a_clear_error(site, runner):
    for value in ("0", "-1", "two"):
        result = runner.invoke(cli, ["--config", str(site.config.source), "digest", "run", "--workers", value])
        assert result.exit_code == 2
        assert "Invalid value for '--workers'" in result.output and value in result.output
        result = runner.invoke(cli, ["bench", "--workers", value])
        assert result.exit_code == 2 and "Invalid value for '--workers'" in result.output
    assert site.store.delivery_counts() == {} and site.store.issues() == []


def test_two_workers_to_maildir_send_everyone_once_and_count_as_one_process_does(make_site, runner):
    one, two = make_site("one"), make_site("two")
    fill(one)
    fill(two)
    first = digest_run(runner, one)
    second = digest_run(runner, two, "--workers", "2")
    assert first.exit_code == second.exit_code == 0, (first.output, second.output)
    last = second.output.strip().splitlines()[-1]
    assert last == first.output.strip().splitlines()[-1]
    assert re.fullmatch(r"sent \d+, failed 0, unknown 0, deferred 0, skipped \d+", last)
    assert one.store.delivery_counts() == two.store.delivery_counts() == {
        "sent": sum(1 for i in range(AUDIENCE) if i % 10 != 9)}

    def received(ctx):
        return Counter(str(m["To"]).rsplit("<", 1)[-1].rstrip(">") for m in read_maildir(ctx.config.outbox))

    got = received(two)
    assert got == received(one)
    assert set(got.values()) == {1}
    sent = {r["email"] for r in two.store.deliveries(status="sent")}
    assert set(got) == sent
    assert {i["status"] for i in two.store.issues()} == {"sent"}
    # each issue really was split: its first half went out through one worker process, the rest through
    # another (a Maildir key names the process that wrote it: "<time>.M<usec>P<pid>Q<n>.<host>")
    for issue in two.store.issues():
        rows = two.store.deliveries(issue_id=issue["id"])
        half = len(rows) // 2
        pids = [{re.search(r"P(\d+)Q", r["provider_id"])[1] for r in part if r["status"] == "sent"}
                for part in (rows[:half], rows[half:])]
        assert all(len(p) == 1 for p in pids) and pids[0] != pids[1] and str(os.getpid()) not in pids[0] | pids[1]


def test_issues_send_with_two_workers_sends_one_issue_to_everyone_once_and_leaves_the_others(make_site, runner):
    """`issues send N --workers 2`: the one issue through two worker processes, each reader of it once; the
    period's other issues stay as they were."""
    ctx = make_site("send")
    fill(ctx)
    built = digest_run(runner, ctx, "--no-send")
    assert built.exit_code == 0, built.output
    issues = ctx.store.issues()
    chosen = next(i for i in issues if i["segment"] == "caregivers")
    for value in ("0", "x"):
        refused = runner.invoke(cli, ["--config", str(ctx.config.source), "issues", "send", str(chosen["id"]),
                                      "--workers", value])
        assert refused.exit_code == 2 and "Invalid value for '--workers'" in refused.output
    assert ctx.store.delivery_counts() == {}
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "issues", "send", str(chosen["id"]),
                                 "--workers", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = Counter(str(m["To"]).rsplit("<", 1)[-1].rstrip(">") for m in read_maildir(ctx.config.outbox))
    wanted = {f"reader{i:04d}@example.org" for i in range(AUDIENCE) if i % 3 == 1 and i % 10 != 9}
    assert set(got) == wanted and set(got.values()) == {1}
    assert {r["email"] for r in ctx.store.deliveries(status="sent")} == wanted
    pids = {re.search(r"P(\d+)Q", r["provider_id"])[1] for r in ctx.store.deliveries(status="sent")}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert {i["id"]: i["status"] for i in ctx.store.issues()} == {
        i["id"]: "sent" if i["id"] == chosen["id"] else i["status"] for i in issues}


def test_two_workers_to_aiosmtpd_send_everyone_once_over_a_connection_each(make_site, smtp_server, runner):
    settings = dict(backend="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                    smtp_security="none", smtp_batch_size=10)
    one, two = make_site("one", **settings), make_site("two", **settings)
    fill(one)
    fill(two)
    first = digest_run(runner, one)
    assert first.exit_code == 0, first.output
    before, connections = smtp_server.count(), smtp_server.connections
    second = digest_run(runner, two, "--workers", "2")
    assert second.exit_code == 0, second.output
    assert second.output.strip().splitlines()[-1] == first.output.strip().splitlines()[-1]
    by_one = Counter(r for m in smtp_server.messages[:before] for r in m.rcpt_tos)
    by_two = Counter(r for m in smtp_server.messages[before:] for r in m.rcpt_tos)
    assert by_two == by_one and set(by_two.values()) == {1}
    assert set(by_two) == {r["email"] for r in two.store.deliveries(status="sent")}
    assert smtp_server.connections - connections >= 2  # each worker its own connection
    counts = two.store.delivery_counts()
    assert counts == one.store.delivery_counts() and counts["skipped"]  # no consent record: skipped by the workers


def test_with_workers_the_breaker_stops_the_run_and_defers_the_rest_as_one_process_does(make_site, runner):
    port = free_port()  # nothing listens there
    settings = dict(backend="smtp", legacy_consent=True, smtp_host="127.0.0.1", smtp_port=port,
                    smtp_security="none", smtp_batch_size=5)
    ctx = make_site(**settings)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers([{"email": f"r{i:03d}@example.org", "segment": "patients", "cadence": "weekly",
                                   "status": "active"} for i in range(60)])
    result = digest_run(runner, ctx, "--workers", "2")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-2:] == [
        f"relay unreachable: smtp: 127.0.0.1:{port}: cannot connect: [Errno 111] Connection refused (after 3 "
        "attempts); 60 deferred, will retry", "sent 0, failed 0, unknown 0, deferred 60, skipped 0"]
    assert ctx.store.delivery_counts() == {"deferred": 60}
    tried = [r for r in ctx.store.deliveries() if r["attempts"]]
    assert 3 <= len(tried) <= 2 * 3  # each worker tried a few batches' first message at most
    # the cron line within the first delay tries nobody
    again = digest_run(runner, ctx, "--send-only", "--workers", "2")
    assert again.exit_code == 0 and "sent 0, failed 0, unknown 0, deferred 0" in again.output


@contextlib.contextmanager
def sender_refused(make_site):
    """A site of 20 weekly patients whose relay (on loopback) answers 553 to the sender: (site, relay)."""
    from tests.test_smtp_deferred import FaultySink, start

    sink = FaultySink()
    sink.refuse_sender = True
    controller = start(sink)
    try:
        ctx = make_site(backend="smtp", legacy_consent=True, smtp_host="127.0.0.1", smtp_port=sink.port,
                        smtp_security="none", smtp_batch_size=5)
        ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
        ctx.store.upsert_subscribers([{"email": f"r{i:03d}@example.org", "segment": "patients", "cadence": "weekly",
                                       "status": "active"} for i in range(20)])
        yield ctx, sink
    finally:
        controller.stop()


def test_with_workers_a_5xx_to_the_sender_stops_the_run_with_one_line_and_loses_nobody(make_site, runner):
    with sender_refused(make_site) as (ctx, sink):
        result = digest_run(runner, ctx, "--workers", "2")
    assert result.exit_code == 1
    assert re.fullmatch(
        rf"Error: worker [12] of 2 \(issue 1, deliveries \d+-\d+\): smtp: 127.0.0.1:{sink.port} refuses mail from "
        r"digest@example.org: 553 5.7.1 Sender address rejected: not owned by user \(check sender_email and what "
        r"the relay lets it send\)", result.output.strip().splitlines()[-1]), result.output
    assert ctx.store.delivery_counts() == {"pending": 20}  # each refused batch went back to pending


def test_issues_send_with_workers_says_a_workers_failure_and_exits_1(make_site, runner):
    """`issues send N --workers 2` when the relay refuses the sender: the worker's one line, exit 1, and
    nobody lost, as digest run says it."""
    with sender_refused(make_site) as (ctx, sink):
        assert digest_run(runner, ctx, "--no-send").exit_code == 0
        issue = next(i for i in ctx.store.issues() if i["segment"] == "patients")
        result = runner.invoke(cli, ["--config", str(ctx.config.source), "issues", "send", str(issue["id"]),
                                     "--workers", "2"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert re.fullmatch(rf"Error: worker [12] of 2 \(issue {issue['id']}, deliveries \d+-\d+\): smtp: 127.0.0.1:"
                        rf"{sink.port} refuses mail from digest@example.org: 553 .*", result.output.strip().splitlines()[-1]
                        ), result.output
    assert ctx.store.delivery_counts() == {"pending": 20}


def test_with_workers_the_progress_bar_hears_every_delivery_of_every_issue(make_site):
    from newsletter.digest import DigestRunner

    ctx = make_site()
    fill(ctx, 120)
    started, progress = [], []
    report = DigestRunner(ctx.config, ctx.store, ctx.segments, workers=2, on_progress=progress.append,
                          on_issue=lambda issue_id, pending: started.append((issue_id, pending))).run("weekly", SAMPLE_NOW)
    assert not report.failure and report.tally.sent == 108
    assert sorted(started) == [(i["id"], len(ctx.store.deliveries(issue_id=i["id"]))) for i in ctx.store.issues()]
    assert sum(progress) == 108
    assert len(report.worker_stats) == 2 and all(s.peak_rss_mb > 0 and s.mjml_compiles for s in report.worker_stats)


def test_with_workers_refused_and_greylisted_readers_end_failed_and_deferred_as_with_one_process(make_site, runner):
    from tests.test_smtp_deferred import FaultySink, start

    sink = FaultySink()
    controller = start(sink)
    try:
        settings = dict(backend="smtp", legacy_consent=True, smtp_host="127.0.0.1", smtp_port=sink.port,
                        smtp_security="none", smtp_batch_size=10)
        one, two = make_site("one", **settings), make_site("two", **settings)
        fill(one, 120)
        fill(two, 120)
        sink.refuse_rcpt = {f"reader{i:04d}@example.org" for i in range(0, 120, 11)}      # 550: failed
        sink.say_451_at_rcpt = {f"reader{i:04d}@example.org" for i in range(5, 120, 13)}  # 451: deferred
        first = digest_run(runner, one)
        second = digest_run(runner, two, "--workers", "2")
    finally:
        controller.stop()
    assert first.exit_code == second.exit_code == 1  # failed ones need attention
    assert first.output.strip().splitlines()[-1] == second.output.strip().splitlines()[-1]
    assert one.store.delivery_counts() == two.store.delivery_counts()
    assert {"failed", "deferred", "sent"} <= set(two.store.delivery_counts())
    assert ({(r["email"], r["status"], r["attempts"]) for r in one.store.deliveries()}
            == {(r["email"], r["status"], r["attempts"]) for r in two.store.deliveries()})
