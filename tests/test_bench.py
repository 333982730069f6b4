"""The benchmark at CI scale: compiles independent of N, memory bounded by streaming, in one process and
with two workers (memory bounded in each process).

Speed targets are shown by `newsletter bench` (docs/benchmarks.md), never by timing a test;
these assert the counts that make those figures possible.
"""

from __future__ import annotations

import itertools

import pytest

from newsletter import bench
from newsletter.select import matching


def expected_variants() -> int:
    """Distinct (segment, summary subset) pairs the generated audience can produce."""
    summaries = bench.recent_summaries()
    subsets = {tuple(s["slug"] for s in matching(summaries, topics)) for topics in bench.TOPIC_SETS}
    return len(bench.SEGMENTS) * len({s for s in subsets if s})


@pytest.fixture(scope="module")
def counting_runs():
    return {n: bench.run_isolated(n, "counting") for n in (10_000, 100_000)}


def test_every_weekly_subscriber_is_sent_one_message(counting_runs):
    for n, result in counting_runs.items():
        weekly = sum(1 for row in itertools.islice(bench.subscriber_rows(n), n) if row[3] == "weekly")
        assert result.recipients == weekly


def test_compiles_do_not_depend_on_the_number_of_subscribers(counting_runs):
    small, large = counting_runs[10_000], counting_runs[100_000]
    assert small.mjml_compiles == large.mjml_compiles == expected_variants()
    assert small.premailer_compiles == large.premailer_compiles == expected_variants()


def test_peak_memory_is_bounded_by_streaming(counting_runs):
    small, large = counting_runs[10_000], counting_runs[100_000]
    assert large.peak_rss_mb <= 1.5 * small.peak_rss_mb, (small.peak_rss_mb, large.peak_rss_mb)


def test_sendgrid_path_delivers_every_recipient_to_the_loopback_sink():
    result = bench.run_isolated(10_000, "sendgrid")
    assert result.recipients == result.sink_recipients == 9_000
    assert result.requests >= 9  # at most 1000 personalizations per request
    assert result.mjml_compiles == expected_variants()


@pytest.fixture(scope="module")
def worker_runs():
    return {n: bench.run_isolated(n, "counting", workers=2) for n in (10_000, 100_000)}


def test_two_workers_send_every_weekly_subscriber_one_message_with_memory_bounded_per_process(worker_runs):
    for n, result in worker_runs.items():
        weekly = sum(1 for row in bench.subscriber_rows(n) if row[3] == "weekly")
        assert result.workers == 2 and len(result.worker_peak_rss_mb) == 2
        assert result.recipients == result.sink_recipients == weekly  # recorded sent, and counted by the messengers
        # each worker renders the variants its ranges need: at least once each, at most once per worker
        assert expected_variants() <= result.mjml_compiles <= 2 * expected_variants()
        assert result.premailer_compiles == result.mjml_compiles
    small, large = worker_runs[10_000], worker_runs[100_000]
    assert large.peak_rss_mb <= 1.5 * small.peak_rss_mb, (small.peak_rss_mb, large.peak_rss_mb)
    assert max(large.worker_peak_rss_mb) <= 1.5 * min(small.worker_peak_rss_mb), (small.worker_peak_rss_mb,
                                                                                  large.worker_peak_rss_mb)


def test_two_workers_deliver_every_recipient_to_the_sendgrid_sink():
    result = bench.run_isolated(10_000, "sendgrid", workers=2)
    assert result.recipients == result.sink_recipients == 9_000
    assert result.requests >= 9 and len(result.worker_peak_rss_mb) == 2


def test_the_floor_quotes_every_recipients_own_strings_and_the_json_case_reports_it():
    """The floor is not a no-op: each recipient's strings are in it, quoted, and the json case times it."""
    import json

    from newsletter.bench_floor import floor_body
    from newsletter.model import PLACEHOLDERS, Envelope, Rendered, Sender

    rendered = Rendered(issue_id=3, segment="patients", cadence="weekly", variant="all", subject="s", preheader="",
                        html="<p>h</p>", text="t", summary_ids=[1], full_cards=1)
    envelopes = [Envelope(i, 100 + i, f"r{i}@example.org", f'Ré "{i}"', {k: f"{k}{i}" for k in PLACEHOLDERS},
                          f"https://x.example/u/{i}") for i in range(3)]
    body = floor_body(rendered, envelopes, Sender("d@example.org", "D"))
    for e in envelopes:
        for own in (e.email, e.name, *e.values.values(), e.unsubscribe_url):
            assert json.dumps(own) in body
    result = bench.run_isolated(10_000, "json")
    assert result.recipients == 9_000 and result.floor_s and result.json_encode_s
    assert 0 < result.ledger_bytes_per_recipient < 1000
