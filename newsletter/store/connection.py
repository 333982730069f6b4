"""The database file: one connection, WAL, a busy timeout, transactions that queue, migrations applied on open.

`Tables` is what every table group builds on; `Store` (in __init__) composes
the groups on one connection, so one transaction can span them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlite_utils import Database

from .migrations import migrations


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def decode_topics(row: dict[str, Any]) -> dict[str, Any]:
    """Summaries and subscribers keep their topics as a JSON list."""
    row = dict(row)
    row["topics"] = json.loads(row.get("topics") or "[]")
    return row


def conditions(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    """" AND <clause>" for each (clause with one ?, value) whose value is given; the values as params."""
    chosen = [(clause, value) for clause, value in pairs if value is not None and value != ""]
    return "".join(f" AND {clause}" for clause, _ in chosen), [value for _, value in chosen]


class Tables:
    conn: sqlite3.Connection
    db: Database
    path: Path
    write_seconds: float

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.conn = conn
        self.db = Database(conn)
        self.write_seconds = 0.0  # time spent in write transactions (the benchmark reports it)
        migrations.apply(self.db)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE so writers queue on the busy timeout instead of failing mid-way.

        Inside an open transaction it joins it: the outer one commits or rolls back everything."""
        if self.conn.in_transaction:
            yield self.conn
            return
        started = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        self.write_seconds += time.perf_counter() - started

    def query(self, sql: str, params: Sequence[Any] | dict = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.conn.execute(sql, params)]

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self.db)]
