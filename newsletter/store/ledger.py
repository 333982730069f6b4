"""The delivery ledger: a row per (issue, subscriber), written before anything is sent.

pending -> sending (claimed, committed, only while the subscriber is active)
-> sent | failed | unknown | deferred; skipped for readers gone or with nothing left.
deferred -> pending again once its next attempt is due, or failed once it has
waited longer than the run allows.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Sequence

from ..model import DELIVERY_STATUSES, OPEN_DELIVERY
from .connection import Tables, conditions, now_iso

LAST_ID = 2 ** 63 - 1  # SQLite's largest rowid


class Ledger(Tables):
    def plan_deliveries(self, issue_id: int) -> int:
        """Write a pending row for every active subscriber of the issue's audience.

        Only when the issue leaves `approved`, in the same transaction: a resumed
        run sends to the audience as it was planned, not to later sign-ups.
        Rows are numbered by topics, then subscriber: the dispatcher batches by
        the variant the topics choose, so each batch it claims and records is a
        contiguous run of ids (a few pages) instead of ids spread over the issue.
        """
        now = now_iso()
        with self.transaction() as conn:
            issue = conn.execute("SELECT * FROM issues WHERE id = ?", (issue_id,)).fetchone()
            if issue is None or issue["status"] != "approved":
                return 0
            cur = conn.execute("""INSERT OR IGNORE INTO deliveries (issue_id, subscriber_id, status, created_at, updated_at)
                                  SELECT ?, id, 'pending', ?, ? FROM subscribers
                                  WHERE segment = ? AND cadence = ? AND status = 'active'
                                  ORDER BY topics, id""",
                               (issue_id, now, now, issue["segment"], issue["cadence"]))
            conn.execute("UPDATE issues SET status = 'sending' WHERE id = ?", (issue_id,))
            return cur.rowcount

    def resolve_interrupted(self, issue_id: int, retry_unknown: bool = False,
                            retry_failed: bool = False, failed_matching: str = "") -> dict[str, int]:
        """Deliveries left in `sending` by a dead run may have gone out: mark them unknown.

        With retry_unknown (the operator's explicit choice) unknown rows go back to
        pending; with retry_failed, failed ones (a provider refused them: safe to retry),
        only those whose error contains `failed_matching` when it is given.
        """
        now = now_iso()
        with self.transaction() as conn:
            interrupted = conn.execute("""UPDATE deliveries SET status = 'unknown', updated_at = ?,
                                          error = 'interrupted while sending: may or may not have been delivered'
                                          WHERE issue_id = ? AND status = 'sending'""", (now, issue_id)).rowcount
            retried = 0
            for status, wanted, matching in (("unknown", retry_unknown, ""), ("failed", retry_failed, failed_matching)):
                if wanted:
                    retried += conn.execute("""UPDATE deliveries SET status = 'pending', updated_at = ?, error = NULL,
                                               attempts = NULL, next_attempt_at = NULL, deferred_since = NULL
                                               WHERE issue_id = ? AND status = ? AND (? = '' OR instr(error, ?) > 0)""",
                                            (now, issue_id, status, matching, matching)).rowcount
            if retried:
                conn.execute("UPDATE issues SET status = 'sending' WHERE id = ? AND status = 'sent'", (issue_id,))
        return {"interrupted": interrupted, "retried": retried}

    def pending_batches(self, issue_id: int, size: int,
                        id_range: tuple[int, int] | None = None) -> Iterator[list[tuple]]:
        """Stream pending deliveries with their subscriber, by keyset pages: never all in memory.

        Each row a plain tuple (delivery_id, subscriber_id, email, name, topics, status, consented): this runs
        once per recipient. The unary `+` keeps SQLite on the rowid range (an issue's rows are
        contiguous by id) instead of re-reading the issue's whole index per page. With `id_range`
        (first, last delivery id, both included) only that part of the issue: a worker's share.
        """
        after, last = (id_range[0] - 1, id_range[1]) if id_range else (0, LAST_ID)
        cursor = self.conn.cursor()
        cursor.row_factory = None
        while True:
            rows = cursor.execute("""
                SELECT d.id, d.subscriber_id, s.email, s.name, s.topics, s.status,
                       EXISTS (SELECT 1 FROM consent_records c WHERE c.subscriber_id = d.subscriber_id)
                FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
                WHERE +d.issue_id = ? AND +d.status = 'pending' AND d.id > ? AND d.id <= ?
                ORDER BY d.id LIMIT ?""", (issue_id, after, last, size)).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield rows

    def pending_ranges(self, issue_id: int, parts: int) -> list[tuple[int, int]]:
        """The issue's pending deliveries cut into at most `parts` runs of adjacent ids with about as many
        rows each, as (first id, last id): what `digest run --workers` hands each worker."""
        cursor = self.conn.cursor()
        cursor.row_factory = None
        low, high = cursor.execute("SELECT MIN(id), MAX(id) FROM deliveries WHERE issue_id = ?", (issue_id,)).fetchone()
        if low is None:
            return []
        span = "FROM deliveries WHERE id BETWEEN ? AND ? AND +issue_id = ? AND +status = 'pending'"
        count, first, last = cursor.execute(f"SELECT COUNT(*), MIN(id), MAX(id) {span}",
                                            (low, high, issue_id)).fetchone()
        parts = max(1, min(parts, count))
        starts = [first] + [cursor.execute(f"SELECT id {span} ORDER BY id LIMIT 1 OFFSET ?",
                                           (low, high, issue_id, count * k // parts)).fetchone()[0]
                            for k in range(1, parts)] if count else []
        return [(start, (starts[k + 1] - 1) if k + 1 < len(starts) else last) for k, start in enumerate(starts)]

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

    def defer_deliveries(self, ids: Sequence[int], error: str | None, delay: Callable[[int], float],
                         expect: str = "sending") -> int:
        """A transient failure: tried once more, waiting `delay(attempts)` seconds before the next try."""
        if not ids:
            return 0
        now = datetime.fromisoformat(now_iso())
        id_list = json.dumps(list(ids))
        with self.transaction() as conn:
            rows = conn.execute("SELECT id, COALESCE(attempts, 0) + 1 FROM deliveries "
                                "WHERE id IN (SELECT value FROM json_each(?)) AND status = ?", (id_list, expect))
            changes = [((now + timedelta(seconds=delay(attempts))).isoformat(), attempts, error, now.isoformat(),
                        now.isoformat(), row_id) for row_id, attempts in rows.fetchall()]
            conn.executemany("""UPDATE deliveries SET status = 'deferred', next_attempt_at = ?, attempts = ?, error = ?,
                                updated_at = ?, deferred_since = COALESCE(deferred_since, ?) WHERE id = ?""", changes)
        return len(changes)

    def defer_pending(self, issue_id: int, error: str, wait: float) -> int:
        """The run stopped (the relay is unreachable): what it did not try waits `wait` seconds like the rest."""
        now = datetime.fromisoformat(now_iso())
        with self.transaction() as conn:
            return conn.execute("""UPDATE deliveries SET status = 'deferred', next_attempt_at = ?, error = ?,
                                   updated_at = ?, deferred_since = COALESCE(deferred_since, ?)
                                   WHERE issue_id = ? AND status = 'pending'""",
                                ((now + timedelta(seconds=wait)).isoformat(), error, now.isoformat(), now.isoformat(),
                                 issue_id)).rowcount

    def release_deferred(self, issue_id: int, retry_for: float) -> dict[str, int]:
        """Deferred deliveries waiting longer than `retry_for` seconds fail; those whose time has come are pending."""
        now = datetime.fromisoformat(now_iso())
        give_up_before = (now - timedelta(seconds=retry_for)).isoformat()
        with self.transaction() as conn:
            expired = conn.execute("""UPDATE deliveries SET status = 'failed', updated_at = ?,
                                      error = 'gave up after ' || COALESCE(attempts, 0) || ' attempts since '
                                              || deferred_since || ': ' || COALESCE(error, '')
                                      WHERE issue_id = ? AND status = 'deferred' AND deferred_since < ?""",
                                   (now.isoformat(), issue_id, give_up_before)).rowcount
            due = conn.execute("""UPDATE deliveries SET status = 'pending', updated_at = ?
                                  WHERE issue_id = ? AND status = 'deferred' AND next_attempt_at <= ?""",
                               (now.isoformat(), issue_id, now.isoformat())).rowcount
        return {"expired": expired, "due": due}

    def finish_issue_if_done(self, issue_id: int) -> bool:
        """An issue is sent once none of its deliveries is pending, sending, deferred or unknown."""
        with self.transaction() as conn:
            open_rows = conn.execute(f"""SELECT COUNT(*) FROM deliveries WHERE issue_id = ?
                                         AND status IN ({', '.join('?' * len(OPEN_DELIVERY))})""",
                                     (issue_id, *OPEN_DELIVERY)).fetchone()[0]
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
        where, params = conditions(("d.issue_id = ?", issue_id), ("d.status = ?", status))
        return self.query(f"""SELECT d.*, s.email FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
                              WHERE 1=1{where} ORDER BY d.id""", params)

    def next_attempt_at(self, issue_id: int) -> str | None:
        """When the issue's earliest deferred delivery may be tried again."""
        return self.conn.execute("SELECT MIN(next_attempt_at) FROM deliveries WHERE issue_id = ? AND status = 'deferred'",
                                 (issue_id,)).fetchone()[0]

    def deliveries_needing_attention(self) -> list[dict[str, Any]]:
        """Unknown and failed deliveries per digest issue; all welcomes together (issue_id None, kind 'welcome')."""
        return self.query("""SELECT CASE i.kind WHEN 'digest' THEN d.issue_id END AS issue_id, i.kind, d.status,
                                    COUNT(*) AS n, MAX(d.error) AS example
                             FROM deliveries d JOIN issues i ON i.id = d.issue_id
                             WHERE d.status IN ('unknown', 'failed')
                             GROUP BY i.kind, 1, d.status ORDER BY i.kind, 1""")

    def ledger_bytes(self) -> int:
        """Bytes the deliveries table and its indexes take in the database file (SQLite's dbstat)."""
        return self.conn.execute("""SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN
                                    (SELECT name FROM sqlite_master WHERE tbl_name = 'deliveries')""").fetchone()[0]

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
