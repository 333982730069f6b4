"""The database file: one connection, WAL, a busy timeout, transactions that queue, migrations applied on open.

`Tables` is what every table group builds on; `Store` (in __init__) composes
the groups on one connection, so one transaction can span them. Only `init`
creates a database: a missing, empty, foreign, damaged or unwritable file is
refused with one line naming it (a typo must never become a new empty list).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlite_utils import Database

from ..model import derive_key
from .schema import migrations


SQLITE_HEADER = b"SQLite format 3\x00"
#: what a raw SQLite failure is, for layers that may not import sqlite3
DatabaseError = sqlite3.Error


class StoreError(Exception):
    """The database cannot be used as it is; the message names the file, the cause and what to do."""


def describe(path: Path, exc: sqlite3.Error) -> str:
    """One line for an SQLite failure: the file, the real cause, what to do."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "disk is full" in str(exc):
        return f"{path}: the disk (or the database) is full; nothing of this change was written: free some space"
    if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return f"{path}: not writable by this user: fix the owner or mode of the file and of its folder"
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "malformed" in str(exc) or "not a database" in str(exc):
        return f"{path}: the database is damaged ({exc}): restore it from a backup"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"{path}: busy: another process held the database too long ({exc}); try again"
    return f"{path}: database error: {exc}"


FIX = "correct the `database` setting, or run `newsletter init` to create a new one"


def refusal(path: Path, create: bool) -> str | None:
    """Why this file cannot be opened as the site's database, or None."""
    fix = FIX
    if not path.exists():
        return None if create else f"{path}: no database here: {fix}"
    if not path.is_file():
        return f"{path}: not a file: {fix}"
    if path.stat().st_size == 0:
        return None if create else f"{path}: empty file (0 bytes), not a newsletter database: {fix}"
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return f"{path}: not an SQLite database (damaged, or another kind of file): restore it from a backup or {fix}"
    if not os.access(path, os.W_OK, effective_ids=True):
        return f"{path}: not writable by this user: fix the owner or mode of the file"
    if not os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True):
        return f"{path.parent}: folder not writable by this user (SQLite keeps its -wal and -shm files there)"
    return None


def _keyed(key: bytes, plain_hash: str) -> str:
    return hmac.new(key, plain_hash.encode(), hashlib.sha256).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def unix_seconds(iso: str) -> int:
    """An ISO time with its offset as unix seconds (a naive one is read as UTC)."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def unix(iso: str | None) -> int | str | None:
    """How the ledger stores a time: unix seconds when that reads back as the same ISO text (`now_iso`'s
    form), otherwise the text as given, so nothing is ever rounded or re-written."""
    if iso is None:
        return None
    try:
        seconds = unix_seconds(iso)
        return seconds if datetime.fromtimestamp(seconds, timezone.utc).isoformat() == iso else iso
    except (ValueError, OverflowError, OSError):  # not a time, or one outside what the platform counts
        return iso


def decode_topics(row: dict[str, Any]) -> dict[str, Any]:
    """Summaries and subscribers keep their topics as a JSON list."""
    row = dict(row)
    row["topics"] = json.loads(row.get("topics") or "[]")
    return row


def conditions(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    """" AND <clause>" for each (clause with one ?, value) whose value is given; the values as params."""
    chosen = [(clause, value) for clause, value in pairs if value is not None and value != ""]
    return "".join(f" AND {clause}" for clause, _ in chosen), [value for _, value in chosen]


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class Tables:
    conn: sqlite3.Connection
    db: Database
    path: Path
    write_seconds: float

    def __init__(self, path: str | Path, create: bool = False, secret: str | None = None):
        """Open the site's database; only with `create` (what `init` does) may it be new or empty.

        `secret` (NEWSLETTER_SECRET; by default the variable itself) keys the suppression list: without it the
        list cannot be read or written."""
        self.path = Path(path)
        problem = refusal(self.path, create)
        if problem:
            raise StoreError(problem)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            if existing and not conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'").fetchone():
                raise StoreError(f"{self.path}: an SQLite file, but not a newsletter database: {FIX}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.conn = conn
            self.db = Database(conn)
            self.write_seconds = 0.0  # time spent in write transactions (the benchmark reports it)
            conn.execute("PRAGMA secure_delete=ON")  # what is deleted (an erased reader) is overwritten in the file
            migrations.apply(self.db)
            self._suppression_key = self._key_suppressions(secret or os.environ.get("NEWSLETTER_SECRET"))
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(describe(self.path, exc)) from None
        except StoreError:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def _key_suppressions(self, secret: str | None) -> bytes | None:
        """The suppression list's key; plain hashes stored before m014 are keyed the same way, once."""
        if not secret:
            return None
        key = derive_key(secret, "suppression list")
        with self.transaction() as conn:
            rows = conn.execute("SELECT email_hash FROM suppressions WHERE keyed = 0").fetchall()
            conn.executemany("UPDATE OR REPLACE suppressions SET email_hash = ?, keyed = 1 WHERE email_hash = ?",
                             [(_keyed(key, plain), plain) for (plain,) in rows])
        return key

    def suppression_hash(self, email: str) -> str:
        """How the suppression list names an address: HMAC(key, sha256(address)), the key derived from
        NEWSLETTER_SECRET; so the database alone cannot tell whether an address was ever on the list."""
        if self._suppression_key is None:
            raise StoreError(f"{self.path}: the suppression list needs NEWSLETTER_SECRET: export it")
        return _keyed(self._suppression_key, email_hash(email))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE so writers queue on the busy timeout instead of failing mid-way.

        Inside an open transaction it joins it: the outer one commits or rolls back everything."""
        if self.conn.in_transaction:
            yield self.conn
            return
        started = time.perf_counter()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                # SQLite may have rolled back already (a full disk does): a second ROLLBACK would
                # replace the real cause with "cannot rollback - no transaction is active".
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise StoreError(describe(self.path, exc)) from exc
        self.write_seconds += time.perf_counter() - started

    @contextlib.contextmanager
    def rehearsal(self) -> Iterator[sqlite3.Connection]:
        """One transaction that is always rolled back: the writes inside it (store methods join it, as they
        join any outer transaction) happen and can be counted, and none is kept (`purge --dry-run`). It holds
        the write lock throughout: other writers wait for it on their busy timeout. Refused inside another
        transaction, whose writes its rollback would undo."""
        if self.conn.in_transaction:
            raise StoreError(f"{self.path}: a rehearsal cannot run inside another transaction")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(describe(self.path, exc)) from exc

    def query(self, sql: str, params: Sequence[Any] | dict = ()) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self.conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise StoreError(describe(self.path, exc)) from exc

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]
