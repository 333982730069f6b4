"""Throttles and editor sessions, rejected events, deferred deliveries, bounce reports, feeds (m006-m010)."""

from __future__ import annotations

from sqlite_utils import Database

from .registry import migrations


@migrations()
def m006_throttles_and_editor_sessions(db: Database) -> None:
    # Sign-up and login counters outlive a restart; keys are keyed hashes (no address or IP in clear),
    # and each row says when it may be forgotten.
    db.execute("""
        CREATE TABLE throttle_hits (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""")
    db.execute("CREATE INDEX throttle_hits_key ON throttle_hits (scope, key, at)")
    db.execute("CREATE INDEX throttle_hits_expiry ON throttle_hits (expires_at)")
    # An editor's cookie holds only a random id; its hash finds the row, so logout, a password change or
    # removal ends the session at once. The fingerprint of the password hash ends it when the config changes.
    db.execute("""
        CREATE TABLE editor_sessions (
            id_hash TEXT PRIMARY KEY,
            editor TEXT NOT NULL,
            password_fingerprint TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""")
    db.execute("CREATE INDEX editor_sessions_editor ON editor_sessions (editor)")


@migrations()
def m007_rejected_events(db: Database) -> None:
    # A provider event that cannot be used (no id, wrong types, too big or too deep) is kept
    # here for the operator, once per payload, instead of failing its whole batch.
    db.execute("""
        CREATE TABLE rejected_events (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            reason TEXT NOT NULL,
            payload TEXT NOT NULL,
            digest TEXT NOT NULL,
            received_at TEXT NOT NULL,
            UNIQUE (provider, digest)
        )""")


@migrations()
def m008_deferred_deliveries(db: Database) -> None:
    # A delivery the relay could not take for now (down, 4xx) waits as `deferred`: how many times it
    # was tried, when it may be tried again, and since when it waits (it fails after retry_deferred_days).
    db.execute("ALTER TABLE deliveries ADD COLUMN attempts INTEGER")
    db.execute("ALTER TABLE deliveries ADD COLUMN next_attempt_at TEXT")
    db.execute("ALTER TABLE deliveries ADD COLUMN deferred_since TEXT")


@migrations()
def m009_bounce_reports(db: Database) -> None:
    # Each bounce or complaint, by its source (bounce mail, SendGrid) and its own id, so a report read
    # twice counts once; soft bounces per (subscriber, issue), so three issues in a row can be told apart
    # from one issue retried three times. Neither keeps an address or a report's text.
    db.execute("""
        CREATE TABLE bounce_reports (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            ref TEXT NOT NULL,
            verdict TEXT NOT NULL,
            status_code TEXT,
            issue_id INTEGER,
            delivery_id INTEGER,
            subscriber_id INTEGER,
            created_at TEXT NOT NULL,
            UNIQUE (source, ref)
        )""")
    db.execute("CREATE INDEX bounce_reports_issue ON bounce_reports (issue_id)")
    db.execute("""
        CREATE TABLE soft_bounces (
            subscriber_id INTEGER NOT NULL,
            issue_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (subscriber_id, issue_id)
        )""")
    # A removed subscriber leaves nothing here that points at them.
    db.execute("""
        CREATE TRIGGER bounces_forget_subscriber AFTER DELETE ON subscribers BEGIN
            DELETE FROM soft_bounces WHERE subscriber_id = OLD.id;
            UPDATE bounce_reports SET subscriber_id = NULL WHERE subscriber_id = OLD.id;
        END""")


@migrations()
def m010_feeds(db: Database) -> None:
    # `summaries pull` polls each configured feed: what the server said last time
    # (for a conditional GET) and how many polls in a row failed (for one notice).
    db.execute("""
        CREATE TABLE feeds (
            url TEXT PRIMARY KEY,
            etag TEXT,
            last_modified TEXT,
            checked_at TEXT,
            ok_at TEXT,
            failures INTEGER NOT NULL DEFAULT 0,
            failing_since TEXT,
            last_error TEXT,
            notified_at TEXT
        )""")
    # A feed item is known by its guid/id first, so a retitled item with a new
    # permalink updates its summary instead of adding a second one.
    db.execute("ALTER TABLE summaries ADD COLUMN guid TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX summaries_guid ON summaries (guid) WHERE guid != ''")
    db.execute("CREATE INDEX summaries_url ON summaries (url) WHERE url != ''")
    # Items of a feed marked `drafts = true` wait for an editor before any digest selects them.
    db.execute("ALTER TABLE summaries ADD COLUMN draft INTEGER NOT NULL DEFAULT 0")
