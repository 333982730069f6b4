"""The benchmark at CI scale: compiles independent of N, memory bounded by streaming, in one process and
with two workers (memory bounded in each process).

Speed targets are shown by `newsletter bench` (docs/benchmarks.md), never by timing a test;
these assert the counts that make those figures possible.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, strategies as st

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


def test_the_ledger_costs_at_most_50_bytes_a_recipient(counting_runs):
    """A byte count of the file (SQLite's dbstat over every ledger table and index), not a time."""
    for n, result in counting_runs.items():
        assert 0 < result.ledger_bytes_per_recipient <= 50, (n, result.ledger_bytes_per_recipient)


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
            assert json.dumps(own)[1:-1] in body  # as JSON text, without the quotes around it
    result = bench.run_isolated(10_000, "json")
    assert result.recipients == 9_000 and result.floor_s and result.json_encode_s
    assert 0 < result.ledger_bytes_per_recipient < 1000


def test_the_run_floor_writes_the_messengers_own_bodies():
    """The whole-run floor is a valid send, not a cheaper imitation: its request bytes are encode_payload's."""
    from hypothesis import given, strategies as st

    from newsletter.bench_run_floor import request_body
    from newsletter.messengers.sendgrid import encode_payload
    from newsletter.model import Envelope, Rendered, Sender, recipient_values
    from newsletter.tokens import Tokens

    tokens, sender = Tokens("s"), Sender("d@example.org", "D")
    rendered = Rendered(issue_id=7, segment="patients", cadence="weekly", variant="all", subject="s", preheader="",
                        html="<p>h</p>", text="t", summary_ids=[1], full_cards=1)
    base = "https://x.example/u/"

    @given(st.lists(st.tuples(st.emails(), st.text(max_size=20)), min_size=1, max_size=5,
                    unique_by=lambda person: person[0].lower()))  # addresses are unique in a list
    def same(people):
        rows = [(10 + i, 100 + i, email, name) for i, (email, name) in enumerate(people)]
        envelopes = []
        for did, sid, email, name in rows:
            utok = tokens.sign("unsubscribe", sid)
            envelopes.append(Envelope(did, sid, email, name,
                                      recipient_values(utok, tokens.sign("preferences", sid), name), base + utok))
        assert request_body(rendered, rows, tokens, sender, base) == encode_payload(rendered, envelopes, sender)

    same()


def test_the_run_floor_sends_every_recipient_once_and_records_it():
    result = bench.run_isolated(10_000, "floor")
    assert result.recipients == result.sink_recipients == 9_000
    assert result.requests >= 9 and result.mjml_compiles == expected_variants()
    assert 0 < result.ledger_bytes_per_recipient < 1000


def test_the_run_floor_with_two_workers_sends_every_recipient_once():
    """The floor beside `--workers 2`: two worker processes, each its own part of every issue, each
    rendering what it meets; the sink counted every recipient once, and each worker reported itself."""
    result = bench.run_isolated(10_000, "floor", workers=2)
    assert result.recipients == result.sink_recipients == 9_000
    assert result.workers == 2 and len(result.worker_peak_rss_mb) == 2
    assert expected_variants() <= result.mjml_compiles <= 2 * expected_variants()


@given(first=st.integers(1, 10**6), count=st.integers(0, 5000), parts=st.integers(1, 8))
def test_the_floors_split_covers_every_id_once_in_order(first, count, parts):
    from newsletter.bench_run_floor import split

    last = first + count - 1
    runs = split(first, last, parts)
    assert len(runs) == parts
    ids = [i for low, high in runs for i in range(low, high + 1)]
    assert ids == list(range(first, last + 1))


# -- the SMTP sink that only reads -------------------------------------------------------------------------

@pytest.mark.parametrize("security", ["none", "starttls"])
def test_smtp_path_delivers_every_recipient_to_the_reading_sink(security):
    """The client at its own ceiling (one connection, the sink only reads), and the sink counted every one."""
    result = bench.run_isolated(2_000, "smtp", "sink", security)
    assert result.recipients == result.sink_recipients == 1_800
    assert result.server == f"sink, {security}"


MESSAGE = st.lists(st.sampled_from([b"a", b".", b"\n", b"\r\n", b"..", b"\n.", b".\r\n", b"\r\n.\r", b"x y"]),
                   max_size=40).map(b"".join)


@given(messages=st.lists(MESSAGE, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_the_reading_sink_finds_each_end_of_data_however_the_bytes_arrive(messages, cuts):
    """Messages as the client writes them (dot-stuffed, CRLF.CRLF at the end), cut into reads anywhere:
    the sink ends each message at its own terminator, never inside it, and keeps what follows."""
    from newsletter.bench_sinks import read_data
    from newsletter.messengers.mime import wire_bytes

    stream = b"".join(wire_bytes(m) + b"RSET\r\n" for m in messages) + b"QUIT\r\n"
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = iter(stream[a:b] for a, b in zip(points, points[1:]))
    rest = next(chunks, b"")
    for message in messages:
        rest = read_data(lambda size: next(chunks, b""), rest)
        assert rest is not None
        while not rest.startswith(b"RSET\r\n"):  # what came after the terminator starts the next command
            more = next(chunks, b"")
            assert more, "the sink read past the end of a message"
            rest += more
        rest = rest[len(b"RSET\r\n"):]
    assert rest + b"".join(chunks) == b"QUIT\r\n"


def test_the_import_case_adds_every_row_then_updates_every_row():
    from newsletter import bench_import

    new, again = bench_import.run(3000)
    assert (new.case, new.added, new.updated, new.rejected) == ("new", 3000, 0, 0)
    assert (again.case, again.added, again.updated, again.rejected) == ("again", 0, 3000, 0)
    assert new.peak_rss_mb > 0 and new.cpu_s > 0
