"""The store: migrations applied to an older database, WAL and busy timeout, one transaction per import."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from newsletter.store import Store, migrations

#: Every migration the code knows, in order (what a fresh database gets).
def _all_migrations() -> list[str]:
    db = Database(memory=True)
    try:
        return [m.name for m in migrations.pending(db)]
    finally:
        db.close()


ALL_MIGRATIONS = _all_migrations()

OLD_SUBSCRIBER = ("old.reader@example.org", "Old Reader", "patients", "weekly", '["MS"]', "active",
                  "2025-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00")


def make_older_database(path) -> None:
    """A database as the first release left it: only m001 applied, one subscriber, one delivery."""
    db = Database(path)
    migrations.apply(db, stop_before="m002_suppressions_and_delivery_events")
    db.execute("""INSERT INTO subscribers (email, name, segment, cadence, topics, status,
                  created_at, updated_at, confirmed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""", OLD_SUBSCRIBER)
    db.execute("""INSERT INTO issues (segment, cadence, period, status, created_at)
                  VALUES ('patients', 'weekly', '2025-W01', 'sent', '2025-01-06T07:00:00+00:00')""")
    db.execute("""INSERT INTO deliveries (issue_id, subscriber_id, status, created_at, updated_at)
                  VALUES (1, 1, 'sent', '2025-01-06T07:00:00+00:00', '2025-01-06T07:00:01+00:00')""")
    db.conn.commit()
    db.close()


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def test_older_database_is_migrated_on_open_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    make_older_database(path)
    raw = sqlite3.connect(path)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "suppressions" not in tables  # really an older database
    assert "delivered_at" not in columns(raw, "deliveries")
    raw.close()

    store = Store(path)  # an existing database: no `create` needed
    try:
        assert store.applied_migrations() == ALL_MIGRATIONS
        assert "m002_suppressions_and_delivery_events" in store.applied_migrations()
        assert {"delivered_at", "opened_at", "clicked_at"} <= columns(store.conn, "delivery_rows")
        old = store.get_subscriber("old.reader@example.org")
        assert old is not None
        assert (old["name"], old["segment"], old["status"], old["topics"]) == ("Old Reader", "patients", "active", ["MS"])
        assert store.deliveries(issue_id=1)[0]["status"] == "sent"
        # The new table works on the migrated file.
        assert store.remove_subscriber("old.reader@example.org")
        assert store.is_suppressed("old.reader@example.org")
    finally:
        store.close()


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "site.db"
    Store(path, create=True).close()
    Store(path, create=True).close()
    raw = sqlite3.connect(path)
    names = [r[0] for r in raw.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'newsletter'")]
    raw.close()
    assert names == ALL_MIGRATIONS
    assert len(names) == len(set(names)) >= 2


def test_required_tables_and_uniqueness(tmp_path):
    store = Store(tmp_path / "site.db", create=True)
    try:
        tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"summaries", "subscribers", "issues", "deliveries", "events"} <= tables
        store.upsert_subscribers([{"email": "a@example.org", "segment": "patients", "status": "active"}])
        issue_id, created = store.create_issue("patients", "weekly", "2026-W47", [])
        assert created
        assert store.create_issue("patients", "weekly", "2026-W47", []) == (issue_id, False)
        store.set_issue_status(issue_id, "approved")
        assert store.plan_deliveries(issue_id) == 1
        assert store.plan_deliveries(issue_id) == 0  # one delivery per issue and subscriber
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute("INSERT INTO deliveries (issue_id, subscriber_id, updated_at) "
                               "SELECT issue_id, subscriber_id, 0 FROM deliveries")
        event = {"event_id": "evt-1", "type": "delivered", "email": "a@example.org", "payload": {"n": 1}}
        assert store.record_event("sendgrid", event) is True
        assert store.record_event("sendgrid", event) is False  # unique by the provider's event id
        assert store.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 1
    finally:
        store.close()


def test_planned_deliveries_are_contiguous_per_topic_choice(tmp_path):
    """The dispatcher batches by the variant the topics choose: each choice's rows are one run of ids,
    in subscriber order within it, so a batch claims and records a few adjacent pages."""
    import json
    choices = ([], ["MS"], ["NMOSD", "MOGAD"])
    store = Store(tmp_path / "site.db", create=True)
    try:
        store.bulk_add_subscribers((f"r{i}@example.org", "", "patients", "weekly", json.dumps(choices[i % 3]))
                                   for i in range(30))
        issue_id, _ = store.create_issue("patients", "weekly", "2026-W47", [])
        store.set_issue_status(issue_id, "approved")
        assert store.plan_deliveries(issue_id) == 30
        rows = store.query("SELECT d.id, d.subscriber_id, s.topics FROM deliveries d "
                           "JOIN subscribers s ON s.id = d.subscriber_id ORDER BY d.id")
        runs = [r["topics"] for i, r in enumerate(rows) if i == 0 or r["topics"] != rows[i - 1]["topics"]]
        assert len(runs) == len(set(runs)) == 3
        for topics in runs:
            ids = [r["subscriber_id"] for r in rows if r["topics"] == topics]
            assert ids == sorted(ids)
    finally:
        store.close()


def test_wal_mode_and_busy_timeout(tmp_path):
    store = Store(tmp_path / "site.db", create=True)
    try:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    finally:
        store.close()
    # WAL is a property of the file: a plain connection sees it too.
    raw = sqlite3.connect(tmp_path / "site.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_two_stores_share_one_file(tmp_path):
    """Cron and the web app open the same file: a write by one is seen by the other."""
    a, b = Store(tmp_path / "site.db", create=True), Store(tmp_path / "site.db", create=True)
    try:
        a.upsert_subscribers([{"email": "shared@example.org", "segment": "clinicians", "status": "active"}])
        assert b.get_subscriber("shared@example.org")["segment"] == "clinicians"
    finally:
        a.close()
        b.close()


def summary(title: str, **extra) -> dict:
    from newsletter.sources.summaries import slugify
    return {"title": title, "published": "2026-11-01", "findings": "Text.", "topics": ["MS"],
            "slug": None, "derived_slug": slugify(title), **extra}


def test_a_failing_summary_upsert_stores_nothing(tmp_path):
    store = Store(tmp_path / "site.db", create=True)
    try:
        store.upsert_summaries([summary("Kept before")])
        broken = {"title": "No slug of any kind", "published": "2026-11-02"}  # no slug, no derived_slug
        with pytest.raises(KeyError):
            store.upsert_summaries([summary("Would be new"), summary("Kept before", findings="Changed."), broken])
        rows = store.summaries()
        assert [r["title"] for r in rows] == ["Kept before"]
        assert rows[0]["findings"] == "Text."
    finally:
        store.close()


def test_a_failing_subscriber_upsert_stores_nothing(tmp_path):
    store = Store(tmp_path / "site.db", create=True)
    try:
        with pytest.raises(KeyError):
            store.upsert_subscribers([{"email": "first@example.org", "segment": "patients"},
                                      {"email": "second@example.org"}])  # no segment
        assert store.subscribers() == []
    finally:
        store.close()
