"""Confirmations waiting for a relay that was down when they were asked for (m020)."""

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
