"""Every schema change, named and applied in order on open (sqlite-utils migrations); never edit one, add one."""

from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("newsletter")

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


@migrations()
def m011_consent_records(db: Database) -> None:
    # How and when each person agreed to receive the digest, one row per act of consent, for every path
    # (the sign-up form, an import, the CLI, an editor). Erasing the person erases these rows with them.
    db.execute("""
        CREATE TABLE consent_records (
            id INTEGER PRIMARY KEY,
            subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
            method TEXT NOT NULL,  -- form, import, cli, editor (store/consent.py checks; a new path adds a word)
            basis TEXT NOT NULL,
            wording_version TEXT,
            recorded_at TEXT NOT NULL,
            opted_in_at TEXT,
            ip TEXT
        )""")
    db.execute("CREATE INDEX consent_records_subscriber ON consent_records (subscriber_id)")


@migrations()
def m012_audit_log_and_editor_roles(db: Database) -> None:
    # Who did what and when. `target` names what was acted on ("issue:12", "subscriber:345", "editor:bob"),
    # never a reader's address; an erasure empties the details of its subscriber's rows.
    db.execute("""
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}'
        )""")
    for column in ("actor", "action", "target"):
        db.execute(f"CREATE INDEX audit_log_{column} ON audit_log ({column}, id)")
    db.execute("CREATE INDEX audit_log_at ON audit_log (at)")
    # TOTP secrets, encrypted with a key derived from NEWSLETTER_SECRET; `last_step` makes each code work once.
    db.execute("""
        CREATE TABLE editor_secrets (
            editor TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            created_at TEXT NOT NULL,
            confirmed_at TEXT,
            last_step INTEGER NOT NULL DEFAULT 0
        )""")
    db.execute("""
        CREATE TABLE editor_recovery_codes (
            editor TEXT NOT NULL,
            code_hash TEXT NOT NULL,
            used_at TEXT,
            PRIMARY KEY (editor, code_hash)
        )""")
    # Whether a session passed the second factor (require_2fa_for_admins lets the others only enrol).
    db.execute("ALTER TABLE editor_sessions ADD COLUMN second_factor INTEGER NOT NULL DEFAULT 0")
    # Suppressions an editor made, so only those can be lifted (never the reader's own unsubscribe): any later
    # change of status (their own unsubscribe link, an import, a provider event) forgets the row.
    db.execute("""
        CREATE TABLE manual_suppressions (
            subscriber_id INTEGER PRIMARY KEY,
            reason TEXT NOT NULL,
            editor TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("""CREATE TRIGGER manual_suppressions_forget AFTER UPDATE OF status, unsubscribed_at ON subscribers
                  BEGIN DELETE FROM manual_suppressions WHERE subscriber_id = new.id; END""")
    # Substring search of addresses for the editors' subscriber list (store/directory.py says why trigrams).
    # A migration that rebuilds the subscribers table must create these triggers again.
    db.execute("""CREATE VIRTUAL TABLE subscriber_search USING fts5(email, content='subscribers', content_rowid='id',
                  tokenize='trigram case_sensitive 1')""")
    db.execute("""CREATE TRIGGER subscriber_search_insert AFTER INSERT ON subscribers BEGIN
                  INSERT INTO subscriber_search (rowid, email) VALUES (new.id, new.email); END""")
    db.execute("""CREATE TRIGGER subscriber_search_delete AFTER DELETE ON subscribers BEGIN
                  INSERT INTO subscriber_search (subscriber_search, rowid, email) VALUES ('delete', old.id, old.email);
                  END""")
    db.execute("""CREATE TRIGGER subscriber_search_update AFTER UPDATE OF email ON subscribers BEGIN
                  INSERT INTO subscriber_search (subscriber_search, rowid, email) VALUES ('delete', old.id, old.email);
                  INSERT INTO subscriber_search (rowid, email) VALUES (new.id, new.email); END""")
    db.execute("INSERT INTO subscriber_search (subscriber_search) VALUES ('rebuild')")


@migrations()
def m013_welcome_issues(db: Database) -> None:
    # A welcome is a delivery like any other: a row in the ledger against an issue of its own kind, one per
    # (segment, cadence), so the digest's lists, sends and retries can leave those issues out.
    db.execute("ALTER TABLE issues ADD COLUMN kind TEXT NOT NULL DEFAULT 'digest'")


#: What m014 keeps of a stored provider event (model.EVENT_FIELDS as it was then; frozen with the migration).
_M014_EVENT_FIELDS = ("event", "sg_event_id", "sg_message_id", "timestamp", "type", "reason", "status",
                      "classification", "bounce_classification", "issue_id", "subscriber_id", "delivery_id")


def _m014_kept(value: object) -> object:
    if isinstance(value, list):
        return [_m014_kept(item) for item in value]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in _M014_EVENT_FIELDS}
    return value


def _m014_stripped(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return "{}"  # a truncated excerpt of a rejected event: nothing of it can be kept safely
    return json.dumps(_m014_kept(value), sort_keys=True)


@migrations()
def m014_privacy(db: Database) -> None:
    # Stored provider events keep only the fields we use: the reader's IP and user agent go.
    for table in ("events", "rejected_events"):
        rows = db.execute(f"SELECT id, payload FROM {table}").fetchall()
        db.conn.executemany(f"UPDATE {table} SET payload = ? WHERE id = ?",
                            [(_m014_stripped(payload), row_id) for row_id, payload in rows])
    # Suppression hashes become keyed (HMAC with a key derived from NEWSLETTER_SECRET, which the database never
    # holds); the key is not known here, so each plain hash is keyed the first time the store has the secret.
    db.execute("ALTER TABLE suppressions ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0")
    # Every wording of the sign-up consent ever shown, so the exact text a reader agreed to can be produced.
    db.execute("""
        CREATE TABLE consent_wordings (
            version TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            first_shown_at TEXT NOT NULL
        )""")


@migrations()
def m016_issue_schedule(db: Database) -> None:
    # When an approved issue may go out (UTC ISO 8601; NULL: with the next run, as before).
    db.execute("ALTER TABLE issues ADD COLUMN send_at TEXT")
