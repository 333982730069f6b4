"""The narrow ledger (m017): old rows migrated exactly, every per-issue and per-subscriber query on an index,
times read back as they were written; and compaction (ledger_retention_days) that leaves the report, status,
selection and erasure as they were."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st
from sqlite_utils import Database

from newsletter.cli import cli
from newsletter.digest import DigestRunner
from newsletter.messengers.counting import CountingMessenger
from newsletter.report import issue_rows
from newsletter.store import Store, migrations
from newsletter.tokens import Tokens

from .conftest import SAMPLE_NOW, SECRET

OLD_COLUMNS = ("id", "issue_id", "subscriber_id", "status", "batch_id", "provider_id", "error", "created_at",
               "updated_at", "delivered_at", "opened_at", "clicked_at", "attempts", "next_attempt_at", "deferred_since")
T0 = "2026-01-05T07:00:00+00:00"


def at(seconds: int) -> str:
    return (datetime.fromisoformat(T0) + timedelta(seconds=seconds)).isoformat()


#: (issue, subscriber, status, batch_id, provider_id, error, created_at, updated_at, delivered_at, opened_at,
#:  clicked_at, attempts, next_attempt_at, deferred_since): every shape the ledger could hold before m017.
OLD_ROWS = [
    (1, 1, "sent", "b1", "sg-1", None, T0, at(5), at(60), at(600), at(700), None, None, None),
    (1, 2, "sent", "b1", "sg-1", None, T0, at(5), None, None, None, None, None, None),
    (1, 3, "failed", "b1", "sg-2", "550 5.1.1 <c@example.org> unknown", T0, at(6), None, None, None, None, None, None),
    (1, 4, "skipped", None, None, "no summaries left", T0, at(1), None, None, None, None, None, None),
    (1, -5, "sent", "b1", None, None, T0, "2026-01-05 07:00:05", None, None, None, None, None, None),  # erased
    (1, -(2**40 + 6), "sent", None, None, None, T0, at(5), None, None, None, None, None, None),  # unlinked
    (1, 7, "unknown", "b2", None, "interrupted while sending", at(3600), at(3700),  # planned again later
     "2026-01-05T09:00:00.250000+00:00", None, "2026-01-05T10:00:00+02:00", None, None, None),
    (2, 1, "deferred", "b3", None, "421 4.7.0 try later", at(86400), at(86460), None, None, None, 2,
     at(87000), at(86400)),
    (2, 2, "pending", None, None, None, at(86400), at(86400), None, None, None, None, None, None),
    (2, 3, "sending", "b4", "p-old", None, at(86400), at(86410), None, None, None, 1, None, None),
    (3, 1, "sent", "w1", "mx-1", None, at(50), at(51), None, None, None, None, None, None),  # welcomes
    (3, 2, "failed", "w2", None, "made to fail", at(90), at(91), None, None, None, None, None, None),
]


def old_database(path) -> list[dict]:
    """A file as m016 left it, with OLD_ROWS in its ledger; returns those rows as the old table gave them."""
    db = Database(path)
    migrations.apply(db, stop_before="m017_narrow_ledger")
    for n in range(1, 8):
        db.execute("INSERT INTO subscribers (email, segment, status, created_at, updated_at) "
                   "VALUES (?, 'patients', 'active', ?, ?)", (f"r{n}@example.org", T0, T0))
    for period, status, kind in (("2026-W02", "sent", "digest"), ("2026-W03", "sending", "digest"),
                                 ("welcome", "sent", "welcome")):
        db.execute("INSERT INTO issues (segment, cadence, period, status, created_at, kind) "
                   "VALUES ('patients', 'weekly', ?, ?, ?, ?)", (period, status, T0, kind))
    db.conn.executemany(f"INSERT INTO deliveries ({', '.join(OLD_COLUMNS[1:])}) VALUES ({', '.join('?' * 14)})",
                        OLD_ROWS)
    db.conn.commit()
    rows = [dict(zip(OLD_COLUMNS, r)) for r in db.execute(f"SELECT {', '.join(OLD_COLUMNS)} FROM deliveries ORDER BY id")]
    db.close()
    return rows


def test_m017_keeps_every_old_row_exactly(tmp_path):
    path = tmp_path / "old.db"
    before = old_database(path)
    store = Store(path)
    try:
        after = [{k: r[k] for k in OLD_COLUMNS} for r in store.deliveries()]
        assert after == before
        assert [[type(v) for v in r.values()] for r in after] == [[type(v) for v in r.values()] for r in before]
        # The narrow table: one index, times as unix seconds where they read back the same.
        indexes = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                  "AND tbl_name = 'deliveries'")}
        assert indexes == {"deliveries_subscriber_issue"}
        kinds = {r["updated_at"] for r in store.query("SELECT typeof(updated_at) AS updated_at FROM deliveries")}
        assert kinds == {"integer", "text"}  # the one naive time stays text
        spans = {i["id"]: (i["first_delivery"], i["last_delivery"], i["planned_at"]) for i in store.query(
            "SELECT * FROM issues")}
        assert spans == {1: (1, 7, T0), 2: (8, 10, at(86400)), 3: (11, 12, None)}
        assert store.delivery_counts(1) == {"sent": 4, "failed": 1, "skipped": 1, "unknown": 1}
        assert store.next_attempt_at(2) == at(87000)
        # Ids are never handed out again, even once the newest row is gone.
        store.conn.execute("DELETE FROM deliveries WHERE id = 12")
        planned = store.plan_welcome(4)
        assert planned and planned["delivery_id"] == 13
        assert store.deliveries()[-1]["created_at"] == store.deliveries()[-1]["updated_at"]
    finally:
        store.close()


@given(st.one_of(st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
                 st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5))]))
                 .map(lambda d: d.replace(microsecond=0).isoformat()),
                 st.text(max_size=40)))
def test_a_time_from_outside_reads_back_exactly_as_it_came(stamped, when):
    store, issue_id, subscriber_id, email = stamped
    store.conn.execute("DELETE FROM delivery_details")
    assert store.mark_delivery_event(issue_id, subscriber_id, email, "opened_at", when)
    [row] = [d for d in store.deliveries(issue_id) if d["subscriber_id"] == subscriber_id]
    assert row["opened_at"] == when


@pytest.fixture
def stamped(site):
    site.store.upsert_subscribers([{"email": "one@example.org", "segment": "patients", "status": "active"}])
    issue_id, _ = site.store.create_issue("patients", "weekly", "2026-W47", [])
    site.store.set_issue_status(issue_id, "approved")
    site.store.plan_deliveries(issue_id)
    sid = site.store.get_subscriber("one@example.org")["id"]
    return site.store, issue_id, sid, "one@example.org"


def digest_run(ctx, now=SAMPLE_NOW):
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=CountingMessenger,
                          tokens=Tokens(SECRET))
    return runner.run("weekly", now)


#: Statements that read the whole ledger on purpose: `status` totals and failures, and erasure looking for the
#: address in every step's error (as it does in events and the audit log).
WHOLE_LEDGER = ("SELECT status, COUNT(*) FROM deliveries GROUP BY status",
                "SELECT CASE i.kind WHEN 'digest' THEN d.issue_id END",
                "UPDATE delivery_batches SET error = NULL WHERE instr(")
LEDGER = ("deliveries", "delivery_batches", "delivery_details", "compacted_recipients", "d", "d2", "x", "b", "r", "v")


def test_per_batch_per_issue_and_per_subscriber_queries_stay_on_indexes(loaded):
    ctx = loaded
    seen: list[str] = []
    ctx.store.conn.set_trace_callback(seen.append)
    digest_run(ctx)
    [issue] = [i for i in ctx.store.issues() if i["status"] == "sent"][:1]
    sub = ctx.store.deliveries(issue["id"])[0]
    store, iid, sid = ctx.store, issue["id"], sub["subscriber_id"]
    store.mark_delivery_event(iid, sid, sub["email"], "opened_at", "2026-11-20T08:00:00+00:00")
    store.defer_deliveries([sub["id"]], "421 later", lambda n: 60, expect="sent")
    store.release_deferred(iid, 3600)
    store.resolve_interrupted(iid, retry_unknown=True, retry_failed=True, failed_matching="x")
    store.defer_pending(iid, "relay down", 60)
    for call in (store.delivery_counts, store.deliveries, store.next_attempt_at, store.finish_issue_if_done,
                 store.already_received, store.tracked_counts):
        call(iid)
    store.reported_issues(), store.status_counts_by_issue(), store.issues_to_send(retry=("failed",))
    store.issue_events(iid, "2026", "2027"), store.recipients_who_left(iid, "2026", "2027")
    store.subscriber_history(sid, sub["email"]), store.person_data(sid, sub["email"])
    store.delivery_counts(), store.deliveries_needing_attention()
    store.conn.set_trace_callback(None)
    store.conn.execute("UPDATE issues SET status = 'sent'")
    store.conn.execute("UPDATE deliveries SET status = 'sent'")
    store.conn.set_trace_callback(seen.append)
    assert store.compact_deliveries("2100-01-01") > 0
    store.already_received(iid), store.recipients_who_left(iid, "2026", "2027"), store.subscriber_history(sid, "")
    store.remove_subscriber(sub["email"])
    store.unlink_erased_deliveries("2100-01-01")
    store.conn.set_trace_callback(None)

    scans = []
    for sql in seen:
        text = re.sub(r"\s+", " ", sql).strip()
        if not re.search(r"deliver|compacted_recipients|issue_counts", text) or not re.match(
                r"(WITH|SELECT|INSERT|UPDATE|DELETE)\b", text, re.I) or text.startswith(WHOLE_LEDGER):
            continue
        for *_, detail in store.conn.execute("EXPLAIN QUERY PLAN " + sql):
            words = detail.split()
            if "AUTOMATIC" in words or (words[0] == "SCAN" and words[1] in LEDGER):
                scans.append(f"{detail} :: {text[:160]}")
    assert not scans, "\n".join(scans)
    assert any(s.lstrip().startswith("UPDATE deliveries SET status = 'sending'") for s in seen)  # the hot path too


def sent_issue(ctx) -> dict:
    return next(i for i in ctx.store.issues() if i["status"] == "sent")
