"""Confirmations waiting for a relay that was down when they were asked for (m020); who each issue went to (m021);
the last delivery named by a bare, unsigned id (m022)."""

from __future__ import annotations

from sqlite_utils import Database

from .registry import migrations


@migrations()
def m020_queued_notices(db: Database) -> None:
    # The web app hands a confirmation over after its answer has gone; one the transport did not take waits
    # here for `newsletter notices send`, kept only until it goes or its retry period ends.
    db.execute("""
        CREATE TABLE queued_notices (
            id INTEGER PRIMARY KEY,
            recipient TEXT NOT NULL,
            subject TEXT NOT NULL,
            text TEXT NOT NULL,
            category TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            error TEXT,
            next_attempt_at TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")


@migrations()
def m021_issue_processors(db: Database) -> None:
    # Who each issue's messages were handed to (maildir, smtp:HOST, sendgrid), written with each claim: a
    # reader's data download says who received their messages from this, not from today's backend. It
    # outlives compaction. Issues sent before have no row; the download says so.
    db.execute("""
        CREATE TABLE issue_processors (
            issue_id INTEGER NOT NULL REFERENCES issues(id),
            processor TEXT NOT NULL,
            first_at TEXT NOT NULL,
            PRIMARY KEY (issue_id, processor)
        ) WITHOUT ROWID""")


@migrations()
def m022_unsigned_delivery_ids(db: Database) -> None:
    # Messages sent before delivery tags were signed name their delivery by its bare id; their bounces and
    # complaints still come back for a while. Up to this id a bare id is accepted, for UNSIGNED_GRACE_DAYS.
    db.execute("CREATE TABLE ledger_marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL, at TEXT NOT NULL)")
    db.execute("""INSERT INTO ledger_marks (name, value, at) SELECT 'unsigned_ids_upto',
                  COALESCE((SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'deliveries'), 0),
                  strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')""")
