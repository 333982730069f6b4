"""The delivery ledger: a row per (issue, subscriber), written before anything is sent.

pending -> sending (claimed, committed, only while the subscriber is active)
-> sent | failed | unknown | deferred; skipped for readers gone or with nothing left.
deferred -> pending again once its next attempt is due, or failed once it has
waited longer than the run allows.

A row is a few integers (schema/m017_ledger.py): what a whole step (a claim, a recorded outcome, a skip) shares,
its claim id, provider id and error, is written once per step in delivery_batches and the row points at the last
step it went through; attempts, retry times, event stamps live in delivery_details, only where set. An issue's
rows are found by their id range (issues.first_delivery..last_delivery): a digest's are one run of ids.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Sequence

from ..model import DELIVERY_STATUSES, OPEN_DELIVERY
from .connection import Tables, conditions, now_iso

#: The rows of issue ? (its id range first, then the issue itself: a welcome issue's range holds others' rows).
ISSUE_ROWS = "id BETWEEN ? AND ? AND issue_id = ?"
#: Every table the ledger keeps (what `ledger_bytes` measures).
LEDGER_TABLES = ("deliveries", "delivery_batches", "delivery_details", "issue_counts", "compacted_recipients")
INTERRUPTED = "interrupted while sending: may or may not have been delivered"
NO_LONGER_ACTIVE = "subscriber no longer active"


def _clock() -> tuple[datetime, int]:
    now = datetime.fromisoformat(now_iso())
    return now, int(now.timestamp())


def issue_span(conn: Any, issue_id: int) -> tuple[int, int, int]:
    """Parameters for ISSUE_ROWS: (first id, last id, issue); an issue without rows matches none."""
    row = conn.execute("SELECT first_delivery, last_delivery FROM issues WHERE id = ?", (issue_id,)).fetchone()
    if row is None or row[0] is None:
        return 0, -1, issue_id
    return row[0], row[1], issue_id


def widen_span(conn: Any, issue_id: int, lo: int, hi: int) -> None:
    """The issue's id range (ISSUE_ROWS) widened to hold the rows lo..hi just planned for it."""
    conn.execute("""UPDATE issues SET first_delivery = MIN(COALESCE(first_delivery, ?), ?),
                    last_delivery = MAX(COALESCE(last_delivery, ?), ?) WHERE id = ?""", (lo, lo, hi, hi, issue_id))


def new_step(conn: Any, ids: Sequence[int], *, name: str | None = None, provider_id: str | None = None,
             error: str | None = None, inherit: bool = False) -> int:
    """A step row for these ids. With `inherit`, its claim id, and its provider id unless one is given, are those
    of the step the first id is in now (a batch's rows all come from one claim)."""
    lo, hi = min(ids), max(ids)
    if inherit:
        return conn.execute("""INSERT INTO delivery_batches (name, provider_id, error, first_id, last_id)
                               SELECT b.name, COALESCE(?, b.provider_id), ?, ?, ? FROM (SELECT ? AS id) f
                               LEFT JOIN deliveries d ON d.id = f.id LEFT JOIN delivery_batches b ON b.id = d.batch""",
                            (provider_id, error, lo, hi, ids[0])).lastrowid
    return conn.execute("INSERT INTO delivery_batches (name, provider_id, error, first_id, last_id) "
                        "VALUES (?, ?, ?, ?, ?)", (name, provider_id, error, lo, hi)).lastrowid


def restep(conn: Any, where: str, params: Sequence[Any], status: str, updated_at: int,
           error_sql: str = "?", error_params: Sequence[Any] = ()) -> int:
    """Move the rows matching `where` (on `deliveries`) to `status`, each with the error `error_sql` gives it and
    otherwise keeping its claim id and provider id: one new step per (old step, error) met. The rare paths only."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS step_map (old INTEGER NOT NULL, error, new INTEGER NOT NULL, "
                 "PRIMARY KEY (old, error))")
    conn.execute("DELETE FROM temp.step_map")
    groups = conn.execute(f"""SELECT COALESCE(batch, 0), {error_sql}, MIN(id), MAX(id) FROM deliveries
                              WHERE {where} GROUP BY 1, 2""", (*error_params, *params)).fetchall()
    for old, error, lo, hi in groups:
        new = conn.execute("""INSERT INTO delivery_batches (name, provider_id, error, first_id, last_id)
                              SELECT b.name, b.provider_id, ?, ?, ? FROM (SELECT ? AS id) f
                              LEFT JOIN delivery_batches b ON b.id = f.id""", (error, lo, hi, old)).lastrowid
        conn.execute("INSERT INTO temp.step_map (old, error, new) VALUES (?, ?, ?)", (old, error, new))
    if not groups:
        return 0
    return conn.execute(f"""UPDATE deliveries SET status = ?, updated_at = ?,
                            batch = (SELECT new FROM temp.step_map m WHERE m.old = COALESCE(deliveries.batch, 0)
                                     AND m.error IS {error_sql})
                            WHERE {where}""", (status, updated_at, *error_params, *params)).rowcount


class Ledger(Tables):
    def plan_deliveries(self, issue_id: int) -> int:
        """Write a pending row for every active subscriber of the issue's audience.

        Only when the issue leaves `approved`, in the same transaction: a resumed
        run sends to the audience as it was planned, not to later sign-ups.
        Rows are numbered by topics, then subscriber: the dispatcher batches by
        the variant the topics choose, so each batch it claims and records is a
        contiguous run of ids (a few pages) instead of ids spread over the issue.
        One statement, so the issue's rows are one run of ids, first_delivery..last_delivery.
        """
        now, now_s = _clock()
        with self.transaction() as conn:
            issue = conn.execute("SELECT * FROM issues WHERE id = ?", (issue_id,)).fetchone()
            if issue is None or issue["status"] != "approved":
                return 0
            before = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'deliveries'"
                                  ).fetchone()[0]
            # The rows start in a step of their own (name, provider and error empty): a row that already holds a
            # step id does not grow when a claim writes its own, so the pages planning filled stay whole.
            step = new_step(conn, [before + 1])
            cur = conn.execute("""INSERT OR IGNORE INTO deliveries (issue_id, subscriber_id, status, batch, updated_at)
                                  SELECT ?, id, 'pending', ?, ? FROM subscribers
                                  WHERE segment = ? AND cadence = ? AND status = 'active'
                                  ORDER BY topics, id""",
                               (issue_id, step, now_s, issue["segment"], issue["cadence"]))
            planned = cur.rowcount
            if not planned:
                conn.execute("DELETE FROM delivery_batches WHERE id = ?", (step,))
            else:
                lo, hi = before + 1, cur.lastrowid
                conn.execute("UPDATE delivery_batches SET last_id = ? WHERE id = ?", (hi, step))
                if issue["planned_at"] is not None:  # planned once before: these rows say when they were
                    conn.execute("INSERT INTO delivery_details (id, created_at) SELECT id, ? FROM deliveries "
                                 "WHERE id BETWEEN ? AND ?", (now_s, lo, hi))
                conn.execute("UPDATE issues SET planned_at = COALESCE(planned_at, ?) WHERE id = ?",
                             (now.isoformat(), issue_id))
                widen_span(conn, issue_id, lo, hi)
            conn.execute("UPDATE issues SET status = 'sending' WHERE id = ?", (issue_id,))
            return planned

    def resolve_interrupted(self, issue_id: int, retry_unknown: bool = False,
                            retry_failed: bool = False, failed_matching: str = "") -> dict[str, int]:
        """Deliveries left in `sending` by a dead run may have gone out: mark them unknown.

        With retry_unknown (the operator's explicit choice) unknown rows go back to
        pending; with retry_failed, failed ones (a provider refused them: safe to retry),
        only those whose error contains `failed_matching` when it is given.
        """
        _, now_s = _clock()
        with self.transaction() as conn:
            span = issue_span(conn, issue_id)
            interrupted = restep(conn, f"{ISSUE_ROWS} AND status = 'sending'", span, "unknown", now_s,
                                 error_params=(INTERRUPTED,))
            retried = 0
            for status, wanted, matching in (("unknown", retry_unknown, ""), ("failed", retry_failed, failed_matching)):
                if not wanted:
                    continue
                where = (f"{ISSUE_ROWS} AND status = ? AND (? = '' OR "
                         "instr((SELECT error FROM delivery_batches b WHERE b.id = deliveries.batch), ?) > 0)")
                params = (*span, status, matching, matching)
                conn.execute(f"""UPDATE delivery_details SET attempts = NULL, next_attempt_at = NULL,
                                 deferred_since = NULL WHERE id IN (SELECT id FROM deliveries WHERE {where})""", params)
                conn.execute(f"""DELETE FROM delivery_details WHERE id IN (SELECT id FROM deliveries WHERE {where})
                                 AND COALESCE(created_at, delivered_at, opened_at, clicked_at) IS NULL""", params)
                retried += restep(conn, where, params, "pending", now_s, error_sql="NULL")
            if retried:
                conn.execute("UPDATE issues SET status = 'sending' WHERE id = ? AND status = 'sent'", (issue_id,))
        return {"interrupted": interrupted, "retried": retried}

    def pending_batches(self, issue_id: int, size: int, id_range: tuple[int, int] | None = None, *,
                        with_consent: bool = True) -> Iterator[list[tuple]]:
        """Stream pending deliveries with their subscriber, by keyset pages: never all in memory.

        Each row a plain tuple (delivery_id, subscriber_id, email, name, topics, status, consented): this runs
        once per recipient. Pages walk the issue's id range on the rowid (the unary `+` keeps SQLite there).
        With `id_range` (first, last delivery id, both included) only that part of the issue: a worker's share.
        Without `with_consent` (a backend that does not ask for it) `consented` is 1, looked up for nobody.
        """
        consented = ("EXISTS (SELECT 1 FROM consent_records c WHERE c.subscriber_id = d.subscriber_id)"
                     if with_consent else "1")
        first, last, _ = issue_span(self.conn, issue_id)
        if id_range:
            first, last = max(first, id_range[0]), min(last, id_range[1])
        after = first - 1
        cursor = self.conn.cursor()
        cursor.row_factory = None
        while True:
            rows = cursor.execute(f"""
                SELECT d.id, d.subscriber_id, s.email, s.name, s.topics, s.status, {consented}
                FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
                WHERE d.id > ? AND d.id <= ? AND +d.issue_id = ? AND +d.status = 'pending'
                ORDER BY d.id LIMIT ?""", (after, last, issue_id, size)).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield rows

    def pending_ranges(self, issue_id: int, parts: int) -> list[tuple[int, int]]:
        """The issue's pending deliveries cut into at most `parts` runs of adjacent ids with about as many
        rows each, as (first id, last id): what `digest run --workers` hands each worker."""
        cursor = self.conn.cursor()
        cursor.row_factory = None
        low, high, _ = issue_span(self.conn, issue_id)  # the issue's id range: no scan of the ledger
        if high < low:
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
        """One step row and one statement per batch (ids passed as a JSON array): the ledger is written per batch,
        not per row. The step keeps the claim id (and the provider id, unless one is given) the rows had."""
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"status: unknown delivery status {status!r}")
        if not ids:
            return 0
        _, now_s = _clock()
        with self.transaction() as conn:
            step = new_step(conn, ids, provider_id=provider_id, error=error, inherit=True)
            sql = "UPDATE deliveries SET status = ?, updated_at = ?, batch = ? WHERE id IN (SELECT value FROM json_each(?))"
            params: list[Any] = [status, now_s, step, json.dumps(list(ids))]
            if expect:
                sql += " AND status = ?"
                params.append(expect)
            changed = conn.execute(sql, params).rowcount
            if not changed:
                conn.execute("DELETE FROM delivery_batches WHERE id = ?", (step,))
            return changed

    def claim_for_sending(self, ids: Sequence[int], batch_id: str, processor: str = "") -> set[int]:
        """pending -> sending for rows whose subscriber is still active, checked at the last moment;
        the others (unsubscribed, bounced, deleted while buffered) become skipped. Returns the claimed ids.
        `processor` (maildir, smtp:HOST, sendgrid) is noted for the issue: who its messages go to."""
        if not ids:
            return set()
        now, now_s = _clock()
        id_list = json.dumps(list(ids))
        with self.transaction() as conn:
            if processor:
                conn.execute("INSERT OR IGNORE INTO issue_processors (issue_id, processor, first_at) "
                             "SELECT issue_id, ?, ? FROM deliveries WHERE id = ?", (processor, now.isoformat(), ids[0]))
            step = new_step(conn, ids, name=batch_id)
            moved = conn.execute(
                """UPDATE deliveries SET status = 'sending', batch = ?, updated_at = ?
                   WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'
                   AND (SELECT status FROM subscribers s WHERE s.id = deliveries.subscriber_id) = 'active'""",
                (step, now_s, id_list)).rowcount
            if moved == len(ids):  # the usual case: no need to read back which ones
                return set(ids)
            claimed = {row[0] for row in conn.execute(
                "SELECT id FROM deliveries WHERE id IN (SELECT value FROM json_each(?)) AND batch = ? "
                "AND status = 'sending'", (id_list, step))}
            skip = new_step(conn, ids, error=NO_LONGER_ACTIVE)
            conn.execute("""UPDATE deliveries SET status = 'skipped', updated_at = ?, batch = ?
                            WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'""",
                         (now_s, skip, id_list))
        return claimed

    def defer_deliveries(self, ids: Sequence[int], error: str | None, delay: Callable[[int], float],
                         expect: str = "sending") -> int:
        """A transient failure: tried once more, waiting `delay(attempts)` seconds before the next try."""
        if not ids:
            return 0
        now, now_s = _clock()
        with self.transaction() as conn:
            rows = conn.execute("""SELECT d.id, COALESCE(x.attempts, 0) + 1 FROM deliveries d
                                   LEFT JOIN delivery_details x ON x.id = d.id
                                   WHERE d.id IN (SELECT value FROM json_each(?)) AND d.status = ?""",
                                (json.dumps(list(ids)), expect)).fetchall()
            if not rows:
                return 0
            step = new_step(conn, [row_id for row_id, _ in rows], error=error, inherit=True)
            conn.executemany("UPDATE deliveries SET status = 'deferred', batch = ?, updated_at = ? WHERE id = ?",
                             [(step, now_s, row_id) for row_id, _ in rows])
            conn.executemany("""INSERT INTO delivery_details (id, attempts, next_attempt_at, deferred_since)
                                VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET attempts = excluded.attempts,
                                next_attempt_at = excluded.next_attempt_at,
                                deferred_since = COALESCE(delivery_details.deferred_since, excluded.deferred_since)""",
                             [(row_id, attempts, (now + timedelta(seconds=delay(attempts))).isoformat(),
                               now.isoformat()) for row_id, attempts in rows])
        return len(rows)

    def defer_pending(self, issue_id: int, error: str, wait: float) -> int:
        """The run stopped (the relay is unreachable): what it did not try waits `wait` seconds like the rest."""
        now, now_s = _clock()
        with self.transaction() as conn:
            span = issue_span(conn, issue_id)
            conn.execute(f"""INSERT INTO delivery_details (id, next_attempt_at, deferred_since)
                             SELECT id, ?, ? FROM deliveries WHERE {ISSUE_ROWS} AND status = 'pending'
                             ON CONFLICT (id) DO UPDATE SET next_attempt_at = excluded.next_attempt_at,
                             deferred_since = COALESCE(delivery_details.deferred_since, excluded.deferred_since)""",
                         ((now + timedelta(seconds=wait)).isoformat(), now.isoformat(), *span))
            return restep(conn, f"{ISSUE_ROWS} AND status = 'pending'", span, "deferred", now_s,
                          error_params=(error,))

    def release_deferred(self, issue_id: int, retry_for: float) -> dict[str, int]:
        """Deferred deliveries waiting longer than `retry_for` seconds fail; those whose time has come are pending."""
        now, now_s = _clock()
        give_up_before = (now - timedelta(seconds=retry_for)).isoformat()
        detail = "(SELECT {} FROM delivery_details x WHERE x.id = deliveries.id)".format
        with self.transaction() as conn:
            span = issue_span(conn, issue_id)
            expired = restep(
                conn, f"{ISSUE_ROWS} AND status = 'deferred' AND {detail('deferred_since')} < ?",
                (*span, give_up_before), "failed", now_s,
                error_sql=f"""('gave up after ' || COALESCE({detail('attempts')}, 0) || ' attempts since '
                               || {detail('deferred_since')} || ': '
                               || COALESCE((SELECT error FROM delivery_batches b WHERE b.id = deliveries.batch), ''))""")
            due = conn.execute(f"""UPDATE deliveries SET status = 'pending', updated_at = ?
                                   WHERE {ISSUE_ROWS} AND status = 'deferred' AND {detail('next_attempt_at')} <= ?""",
                               (now_s, *span, now.isoformat())).rowcount
        return {"expired": expired, "due": due}

    def finish_issue_if_done(self, issue_id: int) -> bool:
        """An issue is sent once none of its deliveries is pending, sending, deferred or unknown."""
        with self.transaction() as conn:
            open_rows = conn.execute(f"""SELECT COUNT(*) FROM deliveries WHERE {ISSUE_ROWS}
                                         AND status IN ({', '.join('?' * len(OPEN_DELIVERY))})""",
                                     (*issue_span(conn, issue_id), *OPEN_DELIVERY)).fetchone()[0]
            if open_rows:
                return False
            conn.execute("UPDATE issues SET status = 'sent', sent_at = COALESCE(sent_at, ?) "
                         "WHERE id = ? AND status = 'sending'", (now_iso(), issue_id))
            return True

    def delivery_counts(self, issue_id: int | None = None) -> dict[str, int]:
        """Deliveries per status: the ledger's rows and, for compacted issues, the counts they left."""
        if issue_id is None:
            sql = """SELECT status, COUNT(*) FROM deliveries GROUP BY status
                     UNION ALL SELECT status, SUM(n) FROM issue_counts GROUP BY status"""
            params: tuple = ()
        else:
            sql = f"""SELECT status, COUNT(*) FROM deliveries WHERE {ISSUE_ROWS} GROUP BY status
                      UNION ALL SELECT status, n FROM issue_counts WHERE issue_id = ?"""
            params = (*issue_span(self.conn, issue_id), issue_id)
        counts: dict[str, int] = {}
        for status, n in self.conn.execute(sql, params):
            counts[status] = counts.get(status, 0) + n
        return counts

    def deliveries(self, issue_id: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Rows with every column the ledger ever had (the delivery_rows view) and the subscriber's address."""
        where, params = conditions(("v.status = ?", status))
        if issue_id is not None:
            where = f" AND v.id BETWEEN ? AND ? AND v.issue_id = ?{where}"
            params = [*issue_span(self.conn, issue_id), *params]
        return self.query(f"""SELECT v.*, s.email FROM delivery_rows v LEFT JOIN subscribers s ON s.id = v.subscriber_id
                              WHERE 1=1{where} ORDER BY v.id""", params)

    def next_attempt_at(self, issue_id: int) -> str | None:
        """When the issue's earliest deferred delivery may be tried again."""
        return self.conn.execute("""SELECT MIN(x.next_attempt_at) FROM deliveries d JOIN delivery_details x
                                    ON x.id = d.id WHERE d.id BETWEEN ? AND ? AND d.issue_id = ?
                                    AND d.status = 'deferred'""", issue_span(self.conn, issue_id)).fetchone()[0]

    def deliveries_needing_attention(self) -> list[dict[str, Any]]:
        """Unknown and failed deliveries per digest issue; all welcomes together (issue_id None, kind 'welcome')."""
        return self.query("""SELECT CASE i.kind WHEN 'digest' THEN d.issue_id END AS issue_id, i.kind, d.status,
                                    COUNT(*) AS n, MAX(b.error) AS example
                             FROM deliveries d JOIN issues i ON i.id = d.issue_id
                             LEFT JOIN delivery_batches b ON b.id = d.batch
                             WHERE d.status IN ('unknown', 'failed')
                             GROUP BY i.kind, 1, d.status ORDER BY i.kind, 1""")

    def ledger_bytes(self) -> int:
        """Bytes the ledger's tables and their indexes take in the database file (SQLite's dbstat)."""
        return self.conn.execute(f"""SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN
                                     (SELECT name FROM sqlite_master WHERE tbl_name IN
                                      ({', '.join('?' * len(LEDGER_TABLES))}))""", LEDGER_TABLES).fetchone()[0]

    def already_received(self, issue_id: int) -> dict[int, frozenset[str]]:
        """For readers of this issue who changed segment or cadence: the slugs other issues brought them
        (compacted issues too: they keep which readers they reached)."""
        found: dict[int, set[str]] = {}
        for row in self.conn.execute("""
                WITH changed AS (
                    SELECT sub.id FROM subscribers sub  -- the few who changed first, then their row of this issue
                    CROSS JOIN deliveries d ON d.subscriber_id = sub.id AND d.issue_id = ? AND d.status = 'pending'
                    WHERE sub.audience_changed_at IS NOT NULL),
                got AS (
                    SELECT d2.subscriber_id, d2.issue_id FROM changed c
                    JOIN deliveries d2 ON d2.subscriber_id = c.id AND d2.issue_id != ?
                                      AND d2.status IN ('sent', 'sending', 'unknown')
                    UNION ALL
                    SELECT r.subscriber_id, r.issue_id FROM changed c
                    JOIN compacted_recipients r ON r.subscriber_id = c.id)
                SELECT g.subscriber_id, s.slug FROM got g
                JOIN issue_summaries x ON x.issue_id = g.issue_id JOIN summaries s ON s.id = x.summary_id""",
                (issue_id, issue_id)):
            found.setdefault(row[0], set()).add(row[1])
        return {sid: frozenset(slugs) for sid, slugs in found.items()}

