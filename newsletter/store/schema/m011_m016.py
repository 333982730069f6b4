"""Consent records, the audit log and roles, welcome issues, privacy, send times (m011 on)."""

from __future__ import annotations

import json

from sqlite_utils import Database

from .registry import migrations


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
