"""The first schema: summaries, subscribers, issues, the ledger, events, suppressions (m001-m005)."""

from __future__ import annotations

from sqlite_utils import Database

from .registry import migrations


#: The subscribers table as m001 made it; m004 rebuilt it with the same columns and an AUTOINCREMENT key.
SUBSCRIBERS_V1 = """
        CREATE TABLE subscribers (
            id {key},
            email TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            segment TEXT NOT NULL,
            cadence TEXT NOT NULL DEFAULT 'weekly',
            topics TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL DEFAULT 'pending',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            confirmed_at TEXT,
            unsubscribed_at TEXT
        )"""


@migrations()
def m001_initial(db: Database) -> None:
    db.execute("""
        CREATE TABLE summaries (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL,
            revision INTEGER NOT NULL DEFAULT 1,
            title TEXT NOT NULL,
            published TEXT NOT NULL,
            teaser TEXT NOT NULL DEFAULT '',
            findings TEXT NOT NULL DEFAULT '',
            patients TEXT NOT NULL DEFAULT '',
            caregivers TEXT NOT NULL DEFAULT '',
            clinicians TEXT NOT NULL DEFAULT '',
            limitations TEXT NOT NULL DEFAULT '',
            source_url TEXT NOT NULL DEFAULT '',
            journal TEXT NOT NULL DEFAULT '',
            doi TEXT NOT NULL DEFAULT '',
            topics TEXT NOT NULL DEFAULT '[]',
            url TEXT NOT NULL DEFAULT '',
            content_hash TEXT NOT NULL,
            imported_at TEXT NOT NULL,
            UNIQUE (slug, revision)
        )""")
    db.execute("CREATE INDEX summaries_published ON summaries (published)")
    db.execute(SUBSCRIBERS_V1.format(key="INTEGER PRIMARY KEY"))
    db.execute("CREATE INDEX subscribers_audience ON subscribers (segment, cadence, status)")
    db.execute("""
        CREATE TABLE issues (
            id INTEGER PRIMARY KEY,
            segment TEXT NOT NULL,
            cadence TEXT NOT NULL,
            period TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'draft',
            created_at TEXT NOT NULL,
            approved_at TEXT,
            sent_at TEXT,
            UNIQUE (segment, cadence, period)
        )""")
    db.execute("""
        CREATE TABLE issue_summaries (
            issue_id INTEGER NOT NULL REFERENCES issues(id),
            summary_id INTEGER NOT NULL REFERENCES summaries(id),
            position INTEGER NOT NULL,
            PRIMARY KEY (issue_id, summary_id)
        )""")
    db.execute("""
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            issue_id INTEGER NOT NULL REFERENCES issues(id),
            subscriber_id INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            batch_id TEXT,
            provider_id TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (issue_id, subscriber_id)
        )""")
    db.execute("CREATE INDEX deliveries_status ON deliveries (issue_id, status)")
    db.execute("""
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            email TEXT,
            issue_id INTEGER,
            subscriber_id INTEGER,
            occurred_at TEXT,
            payload TEXT NOT NULL,
            received_at TEXT NOT NULL,
            UNIQUE (provider, event_id)
        )""")


@migrations()
def m002_suppressions_and_delivery_events(db: Database) -> None:
    # Removed addresses are kept only as a hash, so a later import cannot
    # quietly re-subscribe someone who asked to be removed.
    db.execute("""
        CREATE TABLE suppressions (
            email_hash TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("ALTER TABLE deliveries ADD COLUMN delivered_at TEXT")
    db.execute("ALTER TABLE deliveries ADD COLUMN opened_at TEXT")
    db.execute("ALTER TABLE deliveries ADD COLUMN clicked_at TEXT")


@migrations()
def m003_ledger_without_status_index(db: Database) -> None:
    # Every delivery changes status twice; an index on status doubled the cost of
    # each change. Deliveries of an issue are contiguous by id, and the
    # (issue_id, subscriber_id) index already finds an issue's rows.
    db.execute("DROP INDEX IF EXISTS deliveries_status")


@migrations()
def m004_subscriber_ids_never_reused(db: Database) -> None:
    # Link tokens name a subscriber by id: after a deletion SQLite would hand the
    # highest id to the next sign-up, and the old links would act on them.
    db.execute("ALTER TABLE subscribers RENAME TO subscribers_old")
    db.execute("DROP INDEX IF EXISTS subscribers_audience")
    db.execute(SUBSCRIBERS_V1.format(key="INTEGER PRIMARY KEY AUTOINCREMENT"))
    db.execute("INSERT INTO subscribers SELECT * FROM subscribers_old")
    db.execute("DROP TABLE subscribers_old")
    db.execute("CREATE INDEX subscribers_audience ON subscribers (segment, cadence, status)")
    # Ids already handed out to people since deleted are known from the ledger.
    db.execute("""INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('subscribers',
                  (SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM subscribers
                                       UNION ALL SELECT MAX(ABS(subscriber_id)) FROM deliveries)))""")


@migrations()
def m005_remember_audience_changes(db: Database) -> None:
    # A reader who changes segment or cadence must not get again what an issue of
    # their old audience already brought them; only those readers are checked.
    db.execute("ALTER TABLE subscribers ADD COLUMN audience_changed_at TEXT")
    db.execute("CREATE INDEX subscribers_audience_changed ON subscribers (id) WHERE audience_changed_at IS NOT NULL")
    db.execute("CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id)")
