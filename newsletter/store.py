"""The only module that writes the database.

Everything else reads through the query methods here or receives plain dicts.
Migrations are named, recorded in the database and applied on open; the file
runs in WAL mode with a busy timeout so cron jobs and the web app can share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

SUMMARY_FIELDS = ("title", "published", "teaser", "findings", "patients", "caregivers", "clinicians",
                  "limitations", "source_url", "journal", "doi", "topics", "url")
SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
SUPPRESSED = ("unsubscribed", "bounced", "complained")
ISSUE_STATUSES = ("draft", "approved", "sending", "sent", "cancelled")
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "unknown", "skipped")

migrations = Migrations("newsletter")

#: SET clause (params: new segment, new cadence, now) stamping a change of audience; SET reads old values.
AUDIENCE_CHANGED = ("audience_changed_at = CASE WHEN segment != ? OR cadence != ? THEN ? "
                    "ELSE audience_changed_at END")


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
    db.execute("""
        CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY,
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
        )""")
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
    db.execute("""
        CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
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
        )""")
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


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def content_hash(record: dict[str, Any]) -> str:
    data = json.dumps({k: record.get(k) for k in SUMMARY_FIELDS}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass
class ImportCounts:
    inserted: int = 0
    updated: int = 0
    revised: int = 0
    unchanged: int = 0


class Store:
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
        """BEGIN IMMEDIATE so writers queue on the busy timeout instead of failing mid-way."""
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

    # -- summaries -------------------------------------------------------

    def upsert_summaries(self, records: Iterable[dict[str, Any]]) -> ImportCounts:
        """Insert or update by slug (else source URL), all or nothing.

        A summary that already went out in an issue is immutable: a changed
        import becomes a new revision that selection treats as an update.
        """
        counts = ImportCounts()
        now = now_iso()
        with self.transaction() as conn:
            for record in records:
                slug = record.get("slug")
                if not slug and record.get("source_url"):
                    row = conn.execute("SELECT slug FROM summaries WHERE source_url = ? ORDER BY revision DESC",
                                       (record["source_url"],)).fetchone()
                    slug = row["slug"] if row else None
                slug = slug or record["derived_slug"]
                values = {k: record.get(k) or "" for k in SUMMARY_FIELDS}
                values["topics"] = json.dumps(list(record.get("topics") or []), ensure_ascii=False)
                values["content_hash"] = content_hash(values)
                current = conn.execute("SELECT * FROM summaries WHERE slug = ? ORDER BY revision DESC LIMIT 1",
                                       (slug,)).fetchone()
                if current is None:
                    self._insert_summary(conn, slug, 1, values, now)
                    counts.inserted += 1
                elif current["content_hash"] == values["content_hash"]:
                    counts.unchanged += 1
                elif self._summary_was_sent(conn, current["id"]):
                    self._insert_summary(conn, slug, current["revision"] + 1, values, now)
                    counts.revised += 1
                else:
                    sets = ", ".join(f"{k} = :{k}" for k in values)
                    conn.execute(f"UPDATE summaries SET {sets}, imported_at = :now WHERE id = :id",
                                 {**values, "now": now, "id": current["id"]})
                    counts.updated += 1
        return counts

    @staticmethod
    def _insert_summary(conn: sqlite3.Connection, slug: str, revision: int, values: dict, now: str) -> None:
        cols = ["slug", "revision", *values, "imported_at"]
        conn.execute(f"INSERT INTO summaries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [slug, revision, *values.values(), now])

    @staticmethod
    def _summary_was_sent(conn: sqlite3.Connection, summary_id: int) -> bool:
        row = conn.execute("""SELECT 1 FROM issue_summaries s JOIN issues i ON i.id = s.issue_id
                              WHERE s.summary_id = ? AND i.status IN ('sending', 'sent') LIMIT 1""",
                           (summary_id,)).fetchone()
        return row is not None

    def summaries(self, since: str | None = None, until: str | None = None,
                  topic: str | None = None) -> list[dict[str, Any]]:
        """Latest revision of each summary, newest first."""
        sql = """SELECT s.* FROM summaries s
                 WHERE s.revision = (SELECT MAX(revision) FROM summaries WHERE slug = s.slug)"""
        params: list[Any] = []
        if since:
            sql += " AND s.published >= ?"
            params.append(since)
        if until:
            sql += " AND s.published <= ?"
            params.append(until)
        sql += " ORDER BY s.published DESC, s.id DESC"
        rows = [decode_topics(r) for r in self.query(sql, params)]
        if topic:
            rows = [r for r in rows if topic.lower() in (t.lower() for t in r["topics"])]
        return rows

    def sent_slugs(self, segment: str, cadence: str) -> set[str]:
        """Slugs already carried by a live issue of this segment and cadence (any revision)."""
        rows = self.conn.execute("""
            SELECT DISTINCT s.slug FROM issue_summaries x
            JOIN issues i ON i.id = x.issue_id JOIN summaries s ON s.id = x.summary_id
            WHERE i.segment = ? AND i.cadence = ? AND i.status != 'cancelled'""", (segment, cadence))
        return {r["slug"] for r in rows}

    # -- subscribers -----------------------------------------------------

    def get_subscriber(self, email: str | None = None, id: int | None = None) -> dict[str, Any] | None:
        if id is not None:
            rows = self.query("SELECT * FROM subscribers WHERE id = ?", (id,))
        else:
            rows = self.query("SELECT * FROM subscribers WHERE email = ?", (email,))
        return decode_topics(rows[0]) if rows else None

    def is_suppressed(self, email: str) -> bool:
        return bool(self.query("SELECT 1 FROM suppressions WHERE email_hash = ?", (email_hash(email),)))

    def upsert_subscribers(self, records: Iterable[dict[str, Any]]) -> dict[str, int]:
        """Add or update subscribers in one transaction.

        An address that unsubscribed, bounced, complained or was removed is never
        made active again by an import: only its own confirmation can do that.
        """
        counts = {"added": 0, "updated": 0, "kept_suppressed": 0}
        now = now_iso()
        with self.transaction() as conn:
            for rec in records:
                topics = json.dumps(list(rec.get("topics") or []), ensure_ascii=False)
                existing = conn.execute("SELECT id, status FROM subscribers WHERE email = ?",
                                        (rec["email"],)).fetchone()
                status = rec.get("status") or (existing["status"] if existing else "pending")
                suppressed = existing["status"] in SUPPRESSED if existing else bool(conn.execute(
                    "SELECT 1 FROM suppressions WHERE email_hash = ?", (email_hash(rec["email"]),)).fetchone())
                if suppressed and status not in SUPPRESSED:
                    status = existing["status"] if existing else "unsubscribed"
                    counts["kept_suppressed"] += 1
                if existing is None:
                    conn.execute("""INSERT INTO subscribers (email, name, segment, cadence, topics, status,
                                    created_at, updated_at, confirmed_at, unsubscribed_at)
                                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                                 (rec["email"], rec.get("name") or "", rec["segment"], rec.get("cadence") or "weekly",
                                  topics, status, now, now, now if status == "active" else None,
                                  now if status in SUPPRESSED else None))
                    counts["added"] += 1
                else:
                    conn.execute(f"""UPDATE subscribers SET {AUDIENCE_CHANGED}, name = ?, segment = ?, cadence = ?,
                                    topics = ?, status = ?, updated_at = ?,
                                    confirmed_at = COALESCE(confirmed_at, CASE WHEN ? = 'active' THEN ? END),
                                    unsubscribed_at = CASE WHEN ? IN ('unsubscribed','bounced','complained')
                                                      THEN COALESCE(unsubscribed_at, ?) END
                                    WHERE id = ?""",
                                 (rec["segment"], rec.get("cadence") or "weekly", now,
                                  rec.get("name") or "", rec["segment"], rec.get("cadence") or "weekly", topics,
                                  status, now, status, now, status, now, existing["id"]))
                    counts["updated"] += 1
        return counts

    def bulk_add_subscribers(self, rows: Iterable[tuple[str, str, str, str, str]], chunk: int = 10_000) -> int:
        """Fast path for the benchmark: (email, name, segment, cadence, topics_json) rows, active, streamed."""
        now = now_iso()
        total = 0
        batch: list[tuple] = []

        def flush() -> None:
            with self.transaction() as conn:
                conn.executemany("""INSERT INTO subscribers (email, name, segment, cadence, topics, status,
                                    created_at, updated_at, confirmed_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?)""",
                                 batch)

        for row in rows:
            batch.append((*row, now, now, now))
            if len(batch) >= chunk:
                flush()
                total += len(batch)
                batch = []
        if batch:
            flush()
            total += len(batch)
        return total

    def set_subscriber_status(self, subscriber_id: int, status: str) -> None:
        if status not in SUBSCRIBER_STATUSES:
            raise ValueError(f"status: unknown subscriber status {status!r}")
        now = now_iso()
        with self.transaction() as conn:
            conn.execute("""UPDATE subscribers SET status = ?, updated_at = ?,
                            confirmed_at = CASE WHEN ? = 'active' THEN COALESCE(confirmed_at, ?) ELSE confirmed_at END,
                            unsubscribed_at = CASE WHEN ? IN ('unsubscribed','bounced','complained') THEN ? END
                            WHERE id = ?""", (status, now, status, now, status, now, subscriber_id))
            if status == "active":
                row = conn.execute("SELECT email FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
                if row:
                    conn.execute("DELETE FROM suppressions WHERE email_hash = ?", (email_hash(row["email"]),))

    def update_preferences(self, subscriber_id: int, segment: str, cadence: str, topics: list[str]) -> None:
        now = now_iso()
        with self.transaction() as conn:
            conn.execute(f"""UPDATE subscribers SET {AUDIENCE_CHANGED}, segment = ?, cadence = ?, topics = ?,
                             updated_at = ? WHERE id = ?""",
                         (segment, cadence, now, segment, cadence, json.dumps(topics), now, subscriber_id))

    def remove_subscriber(self, email: str, reason: str = "removed") -> bool:
        """Delete the person's data (events anonymised), keeping only a hash so no import re-adds them."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM subscribers WHERE email = ?", (email,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM deliveries WHERE subscriber_id = ? AND status = 'pending'", (row["id"],))
            conn.execute("UPDATE deliveries SET subscriber_id = -subscriber_id WHERE subscriber_id = ?",
                         (row["id"],))
            conn.execute("DELETE FROM subscribers WHERE id = ?", (row["id"],))
            # Provider events stay (so a webhook retry is still a replay) but lose who they were about.
            conn.execute("UPDATE events SET email = NULL, subscriber_id = NULL, payload = '{}' "
                         "WHERE lower(email) = lower(?) OR subscriber_id = ?", (email, row["id"]))
            conn.execute("INSERT OR REPLACE INTO suppressions (email_hash, reason, created_at) VALUES (?, ?, ?)",
                         (email_hash(email), reason, now_iso()))
        return True

    def subscribers(self, segment: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM subscribers WHERE 1=1", []
        if segment:
            sql += " AND segment = ?"
            params.append(segment)
        if status:
            sql += " AND status = ?"
            params.append(status)
        return [decode_topics(r) for r in self.query(sql + " ORDER BY id", params)]

    # -- issues ----------------------------------------------------------

    def create_issue(self, segment: str, cadence: str, period: str, summary_ids: Sequence[int],
                     status: str = "draft") -> tuple[int, bool]:
        """Create the issue for (segment, cadence, period) unless one exists; returns (id, created)."""
        now = now_iso()
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM issues WHERE segment = ? AND cadence = ? AND period = ?",
                               (segment, cadence, period)).fetchone()
            if row:
                return row["id"], False
            cur = conn.execute("""INSERT INTO issues (segment, cadence, period, status, created_at, approved_at)
                                  VALUES (?, ?, ?, ?, ?, ?)""",
                               (segment, cadence, period, status, now, now if status == "approved" else None))
            issue_id = cur.lastrowid
            conn.executemany("INSERT INTO issue_summaries (issue_id, summary_id, position) VALUES (?, ?, ?)",
                             [(issue_id, sid, pos) for pos, sid in enumerate(summary_ids)])
        return issue_id, True

    def get_issue(self, issue_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM issues WHERE id = ?", (issue_id,))
        return rows[0] if rows else None

    def issues(self, status: str | None = None) -> list[dict[str, Any]]:
        if status:
            return self.query("SELECT * FROM issues WHERE status = ? ORDER BY id", (status,))
        return self.query("SELECT * FROM issues ORDER BY id")

    def issue_summaries(self, issue_id: int) -> list[dict[str, Any]]:
        rows = self.query("""SELECT s.*, (s.revision > 1) AS is_update FROM issue_summaries x
                             JOIN summaries s ON s.id = x.summary_id
                             WHERE x.issue_id = ? ORDER BY x.position""", (issue_id,))
        return [decode_topics(r) for r in rows]

    def set_issue_status(self, issue_id: int, status: str, expect: Sequence[str] | None = None) -> bool:
        """Move an issue along its lifecycle; with `expect`, only from those states."""
        if status not in ISSUE_STATUSES:
            raise ValueError(f"status: unknown issue status {status!r}")
        stamp = {"approved": "approved_at", "sent": "sent_at"}.get(status)
        sql = "UPDATE issues SET status = ?" + (f", {stamp} = ?" if stamp else "") + " WHERE id = ?"
        params: list[Any] = [status] + ([now_iso()] if stamp else []) + [issue_id]
        if expect:
            sql += f" AND status IN ({', '.join('?' * len(expect))})"
            params += list(expect)
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount == 1

    def add_summary_to_issue(self, issue_id: int, slug: str) -> dict[str, Any]:
        """Put a summary's latest revision (a correction, say) into a draft issue."""
        with self.transaction() as conn:
            issue = conn.execute("SELECT status FROM issues WHERE id = ?", (issue_id,)).fetchone()
            if issue is None:
                raise LookupError(f"issue {issue_id}: no such issue")
            if issue["status"] != "draft":
                raise LookupError(f"issue {issue_id}: is {issue['status']}; only a draft can change")
            row = conn.execute("SELECT * FROM summaries WHERE slug = ? ORDER BY revision DESC LIMIT 1",
                               (slug,)).fetchone()
            if row is None:
                raise LookupError(f"slug: no summary {slug!r}")
            position = conn.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM issue_summaries WHERE issue_id = ?",
                                    (issue_id,)).fetchone()[0]
            conn.execute("INSERT OR IGNORE INTO issue_summaries (issue_id, summary_id, position) VALUES (?, ?, ?)",
                         (issue_id, row["id"], position))
            return decode_topics(dict(row))

    def find_issue(self, segment: str, cadence: str, period: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM issues WHERE segment = ? AND cadence = ? AND period = ?",
                          (segment, cadence, period))
        return rows[0] if rows else None

    def issues_to_send(self, retry: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Approved and interrupted issues, plus sent ones holding deliveries in a `retry` status."""
        rows = self.query("SELECT * FROM issues WHERE status IN ('approved', 'sending') ORDER BY id")
        if retry:
            rows += self.query(f"""SELECT * FROM issues WHERE status = 'sent' AND id IN
                                   (SELECT issue_id FROM deliveries WHERE status IN ({', '.join('?' * len(retry))}))
                                   ORDER BY id""", list(retry))
        return rows

    def deliveries_needing_attention(self) -> list[dict[str, Any]]:
        return self.query("""SELECT issue_id, status, COUNT(*) AS n, MAX(error) AS example FROM deliveries
                             WHERE status IN ('unknown', 'failed') GROUP BY issue_id, status ORDER BY issue_id""")

    def subscriber_history(self, subscriber_id: int, email: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What a subscriber's data download holds besides their row: deliveries and provider events."""
        deliveries = self.query("""SELECT d.issue_id, i.segment, i.cadence, i.period, d.status, d.created_at,
                                          d.updated_at, d.delivered_at, d.opened_at, d.clicked_at
                                   FROM deliveries d JOIN issues i ON i.id = d.issue_id
                                   WHERE d.subscriber_id = ? ORDER BY d.id""", (subscriber_id,))
        events = self.query("""SELECT provider, type, occurred_at, received_at, payload FROM events
                               WHERE subscriber_id = ? OR email = ? ORDER BY id""", (subscriber_id, email))
        return deliveries, events

    def already_received(self, issue_id: int) -> dict[int, frozenset[str]]:
        """For readers of this issue who changed segment or cadence: the slugs other issues brought them."""
        found: dict[int, set[str]] = {}
        for row in self.conn.execute("""
                SELECT sub.id, s.slug FROM subscribers sub
                JOIN deliveries d ON d.issue_id = ? AND d.subscriber_id = sub.id AND d.status = 'pending'
                JOIN deliveries d2 ON d2.subscriber_id = sub.id AND d2.issue_id != d.issue_id
                                  AND d2.status IN ('sent', 'sending', 'unknown')
                JOIN issue_summaries x ON x.issue_id = d2.issue_id JOIN summaries s ON s.id = x.summary_id
                WHERE sub.audience_changed_at IS NOT NULL""", (issue_id,)):
            found.setdefault(row[0], set()).add(row[1])
        return {sid: frozenset(slugs) for sid, slugs in found.items()}

    def has_event(self, provider: str, event_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM events WHERE provider = ? AND event_id = ?", (provider, event_id)))

    def latest_issues(self) -> list[dict[str, Any]]:
        """The newest issue of each segment and cadence."""
        return self.query("""SELECT i.* FROM issues i
                             WHERE i.id = (SELECT MAX(id) FROM issues WHERE segment = i.segment AND cadence = i.cadence)
                             ORDER BY i.segment, i.cadence""")

    def subscriber_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self.query("SELECT status, COUNT(*) AS n FROM subscribers GROUP BY status")}

    # -- the delivery ledger ---------------------------------------------

    def plan_deliveries(self, issue_id: int) -> int:
        """Write a pending row for every active subscriber of the issue's audience.

        Only when the issue leaves `approved`, in the same transaction: a resumed
        run sends to the audience as it was planned, not to later sign-ups.
        """
        now = now_iso()
        with self.transaction() as conn:
            issue = conn.execute("SELECT * FROM issues WHERE id = ?", (issue_id,)).fetchone()
            if issue is None or issue["status"] != "approved":
                return 0
            cur = conn.execute("""INSERT OR IGNORE INTO deliveries (issue_id, subscriber_id, status, created_at, updated_at)
                                  SELECT ?, id, 'pending', ?, ? FROM subscribers
                                  WHERE segment = ? AND cadence = ? AND status = 'active' ORDER BY id""",
                               (issue_id, now, now, issue["segment"], issue["cadence"]))
            conn.execute("UPDATE issues SET status = 'sending' WHERE id = ?", (issue_id,))
            return cur.rowcount

    def resolve_interrupted(self, issue_id: int, retry_unknown: bool = False,
                            retry_failed: bool = False) -> dict[str, int]:
        """Deliveries left in `sending` by a dead run may have gone out: mark them unknown.

        With retry_unknown (the operator's explicit choice) unknown rows go back to
        pending; with retry_failed, failed ones (a provider refused them: safe to retry).
        """
        now = now_iso()
        with self.transaction() as conn:
            interrupted = conn.execute("""UPDATE deliveries SET status = 'unknown', updated_at = ?,
                                          error = 'interrupted while sending: may or may not have been delivered'
                                          WHERE issue_id = ? AND status = 'sending'""", (now, issue_id)).rowcount
            retried = 0
            for status, wanted in (("unknown", retry_unknown), ("failed", retry_failed)):
                if wanted:
                    retried += conn.execute("""UPDATE deliveries SET status = 'pending', updated_at = ?, error = NULL
                                               WHERE issue_id = ? AND status = ?""", (now, issue_id, status)).rowcount
            if retried:
                conn.execute("UPDATE issues SET status = 'sending' WHERE id = ? AND status = 'sent'", (issue_id,))
        return {"interrupted": interrupted, "retried": retried}

    def pending_batches(self, issue_id: int, size: int) -> Iterator[list[dict[str, Any]]]:
        """Stream pending deliveries with their subscriber, by keyset pages: never all in memory.

        The unary `+` keeps SQLite on the rowid range (an issue's rows are
        contiguous by id) instead of re-reading the issue's whole index per page.
        """
        after = 0
        while True:
            rows = self.conn.execute("""
                SELECT d.id AS delivery_id, d.subscriber_id, s.email, s.name, s.topics, s.status
                FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
                WHERE +d.issue_id = ? AND +d.status = 'pending' AND d.id > ?
                ORDER BY d.id LIMIT ?""", (issue_id, after, size)).fetchall()
            if not rows:
                return
            after = rows[-1]["delivery_id"]
            yield [dict(r) for r in rows]

    def mark_deliveries(self, ids: Sequence[int], status: str, *, provider_id: str | None = None,
                        error: str | None = None, expect: str | None = None) -> int:
        """One statement per batch (ids passed as a JSON array): the ledger is written per batch, not per row."""
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"status: unknown delivery status {status!r}")
        if not ids:
            return 0
        sql = ("UPDATE deliveries SET status = ?, updated_at = ?, provider_id = COALESCE(?, provider_id), error = ? "
               "WHERE id IN (SELECT value FROM json_each(?))")
        params: list[Any] = [status, now_iso(), provider_id, error, json.dumps(list(ids))]
        if expect:
            sql += " AND status = ?"
            params.append(expect)
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def claim_for_sending(self, ids: Sequence[int], batch_id: str) -> set[int]:
        """pending -> sending for rows whose subscriber is still active, checked at the last moment;
        the others (unsubscribed, bounced, deleted while buffered) become skipped. Returns the claimed ids."""
        now = now_iso()
        id_list = json.dumps(list(ids))
        with self.transaction() as conn:
            moved = conn.execute(
                """UPDATE deliveries SET status = 'sending', batch_id = ?, updated_at = ?
                   WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'
                   AND (SELECT status FROM subscribers s WHERE s.id = deliveries.subscriber_id) = 'active'""",
                (batch_id, now, id_list)).rowcount
            if moved == len(ids):  # the usual case: no need to read back which ones
                return set(ids)
            claimed = {row[0] for row in conn.execute(
                "SELECT id FROM deliveries WHERE id IN (SELECT value FROM json_each(?)) AND batch_id = ? "
                "AND status = 'sending'", (id_list, batch_id))}
            conn.execute("""UPDATE deliveries SET status = 'skipped', updated_at = ?,
                            error = 'subscriber no longer active' WHERE id IN (SELECT value FROM json_each(?))
                            AND status = 'pending'""", (now, id_list))
        return claimed

    def finish_issue_if_done(self, issue_id: int) -> bool:
        """An issue is sent once nothing of it is pending or sending."""
        with self.transaction() as conn:
            open_rows = conn.execute("""SELECT COUNT(*) FROM deliveries WHERE issue_id = ?
                                        AND status IN ('pending', 'sending')""", (issue_id,)).fetchone()[0]
            if open_rows:
                return False
            conn.execute("UPDATE issues SET status = 'sent', sent_at = COALESCE(sent_at, ?) "
                         "WHERE id = ? AND status = 'sending'", (now_iso(), issue_id))
            return True

    def delivery_counts(self, issue_id: int | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) AS n FROM deliveries"
        params: tuple = ()
        if issue_id is not None:
            sql += " WHERE issue_id = ?"
            params = (issue_id,)
        return {r["status"]: r["n"] for r in self.query(sql + " GROUP BY status", params)}

    def deliveries(self, issue_id: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        sql = """SELECT d.*, s.email FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE 1=1"""
        params: list[Any] = []
        if issue_id is not None:
            sql += " AND d.issue_id = ?"
            params.append(issue_id)
        if status:
            sql += " AND d.status = ?"
            params.append(status)
        return self.query(sql + " ORDER BY d.id", params)

    # -- provider events -------------------------------------------------

    def record_event(self, provider: str, event: dict[str, Any]) -> bool:
        """Store a webhook event once; returns False for a replay."""
        with self.transaction() as conn:
            cur = conn.execute("""INSERT OR IGNORE INTO events (provider, event_id, type, email, issue_id,
                                  subscriber_id, occurred_at, payload, received_at)
                                  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                               (provider, event["event_id"], event["type"], event.get("email"),
                                event.get("issue_id"), event.get("subscriber_id"), event.get("occurred_at"),
                                json.dumps(event.get("payload", {}), sort_keys=True), now_iso()))
            return cur.rowcount == 1

    def mark_delivery_event(self, issue_id: int, subscriber_id: int, column: str, when: str) -> None:
        if column not in ("delivered_at", "opened_at", "clicked_at"):
            raise ValueError(f"column: not a delivery event column: {column}")
        with self.transaction() as conn:
            conn.execute(f"UPDATE deliveries SET {column} = COALESCE({column}, ?) "
                         "WHERE issue_id = ? AND subscriber_id = ?", (when, issue_id, subscriber_id))


def decode_topics(row: dict[str, Any]) -> dict[str, Any]:
    """Summaries and subscribers keep their topics as a JSON list."""
    row = dict(row)
    row["topics"] = json.loads(row.get("topics") or "[]")
    return row
