"""Subscribers and the suppression list: one address, one subscriber; a removed address stays as a hash."""

from __future__ import annotations

import json
from typing import Any, Iterable

from ..model import SUBSCRIBER_STATUSES
from .connection import Tables, conditions, decode_topics, now_iso
from .subscriber_writes import Writer, chunks

#: SET clause (params: new segment, new cadence, now) stamping a change of audience; SET reads old values.
AUDIENCE_CHANGED = ("audience_changed_at = CASE WHEN segment != ? OR cadence != ? THEN ? "
                    "ELSE audience_changed_at END")


def subscriber_target(subscriber_id: int) -> str:
    """How the audit log names a subscriber."""
    return f"subscriber:{subscriber_id}"


class Subscribers(Tables):
    def get_subscriber(self, email: str | None = None, id: int | None = None) -> dict[str, Any] | None:
        if id is not None:
            rows = self.query("SELECT * FROM subscribers WHERE id = ?", (id,))
        else:
            rows = self.query("SELECT * FROM subscribers WHERE email = ?", (email,))
        return decode_topics(rows[0]) if rows else None

    def is_suppressed(self, email: str) -> bool:
        return bool(self.query("SELECT 1 FROM suppressions WHERE email_hash = ?", (self.suppression_hash(email),)))

    def upsert_subscribers(self, records: Iterable[dict[str, Any]], chunk: int = 2000) -> dict[str, int]:
        """Add or update subscribers in one transaction, a chunk at a time (subscriber_writes.py has the rules).

        An address that unsubscribed, bounced, complained or was removed is never
        made active again by an import: only its own confirmation can do that.
        """
        return self._upsert(records, chunk, consent=False)

    def _upsert(self, records: Iterable[dict[str, Any]], chunk: int, consent: bool) -> dict[str, int]:
        counts = {"added": 0, "updated": 0, "kept_suppressed": 0, "consents": 0}
        with self.transaction() as conn:
            writer = Writer(conn, now_iso(), self.suppression_hash)
            for rows in chunks(records, chunk, consent):
                for key, value in writer.write(rows).counts.items():
                    counts[key] += value
        if not consent:
            del counts["consents"]
        return counts

    def bulk_add_subscribers(self, rows: Iterable[tuple[str, str, str, str, str]], chunk: int = 10_000,
                             consent_basis: str = "") -> int:
        """Fast path for the benchmark: (email, name, segment, cadence, topics_json) rows, active, streamed;
        with `consent_basis`, each with a consent record (method `import`) as a real backend requires."""
        now = now_iso()
        total = 0
        batch: list[tuple] = []

        def flush() -> None:
            with self.transaction() as conn:
                before = conn.execute("SELECT COALESCE(MAX(id), 0) FROM subscribers").fetchone()[0]
                conn.executemany("""INSERT INTO subscribers (email, name, segment, cadence, topics, status,
                                    created_at, updated_at, confirmed_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?)""",
                                 batch)
                if consent_basis:
                    conn.execute("""INSERT INTO consent_records (subscriber_id, method, basis, recorded_at)
                                    SELECT id, 'import', ?, ? FROM subscribers WHERE id > ?""",
                                 (consent_basis, now, before))

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
                    conn.execute("DELETE FROM suppressions WHERE email_hash = ?",
                                 (self.suppression_hash(row["email"]),))

    def update_preferences(self, subscriber_id: int, segment: str, cadence: str, topics: list[str]) -> None:
        now = now_iso()
        with self.transaction() as conn:
            conn.execute(f"""UPDATE subscribers SET {AUDIENCE_CHANGED}, segment = ?, cadence = ?, topics = ?,
                             updated_at = ? WHERE id = ?""",
                         (segment, cadence, now, segment, cadence, json.dumps(topics), now, subscriber_id))

    def remove_subscriber(self, email: str, reason: str = "removed", suppress: bool = True) -> bool:
        """Erase the person: their row and consent go, and every other row that named them is removed or keeps
        nothing that identifies them; only a keyed hash stays (unless not `suppress`: a sign-up never confirmed)
        so no import re-adds them. With secure_delete on (connection.py) the freed bytes are overwritten too."""
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM subscribers WHERE email = ?", (email,)).fetchone()
            if row is None:
                return False
            sid = row["id"]
            conn.execute("DELETE FROM delivery_details WHERE id IN "
                         "(SELECT id FROM deliveries WHERE subscriber_id = ? AND status = 'pending')", (sid,))
            conn.execute("DELETE FROM deliveries WHERE subscriber_id = ? AND status = 'pending'", (sid,))
            # The ledger keeps that a message went out (counts), not to whom nor the relay's words about it: the
            # rows leave their steps, a step written for one of them alone goes (a message's own provider id or
            # error, earlier attempts' too), and any step's error naming the address loses it.
            conn.execute("""DELETE FROM delivery_batches WHERE first_id IN (SELECT id FROM deliveries
                            WHERE subscriber_id = ?) AND last_id = first_id""", (sid,))
            conn.execute("UPDATE delivery_batches SET error = NULL WHERE instr(lower(error), lower(?))", (email,))
            conn.execute("UPDATE deliveries SET subscriber_id = -subscriber_id, batch = NULL WHERE subscriber_id = ?",
                         (sid,))
            conn.execute("DELETE FROM compacted_recipients WHERE subscriber_id = ?", (sid,))
            for table in ("consent_records", "soft_bounces", "manual_suppressions"):
                conn.execute(f"DELETE FROM {table} WHERE subscriber_id = ?", (sid,))
            conn.execute("UPDATE bounce_reports SET subscriber_id = NULL, delivery_id = NULL WHERE subscriber_id = ?",
                         (sid,))
            conn.execute("DELETE FROM subscribers WHERE id = ?", (sid,))
            conn.execute("INSERT INTO subscriber_search (subscriber_search) VALUES ('optimize')")  # drops old terms
            # Provider events stay (so a webhook retry is still a replay) but lose who they were about.
            conn.execute("UPDATE events SET email = NULL, subscriber_id = NULL, payload = '{}' "
                         "WHERE lower(email) = lower(?) OR subscriber_id = ?", (email, sid))
            conn.execute("DELETE FROM rejected_events WHERE instr(lower(payload), lower(?))", (email,))
            conn.execute("DELETE FROM queued_notices WHERE lower(recipient) = lower(?)", (email,))
            conn.execute("UPDATE audit_log SET detail = '{}' WHERE target = ? OR instr(lower(detail), lower(?))",
                         (subscriber_target(sid), email))
            if suppress:
                conn.execute("INSERT OR REPLACE INTO suppressions (email_hash, reason, created_at, keyed) "
                             "VALUES (?, ?, ?, 1)", (self.suppression_hash(email), reason, now_iso()))
        return True

    def subscribers(self, segment: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        where, params = conditions(("segment = ?", segment), ("status = ?", status))
        return [decode_topics(r) for r in self.query(f"SELECT * FROM subscribers WHERE 1=1{where} ORDER BY id", params)]

    def subscriber_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self.query("SELECT status, COUNT(*) AS n FROM subscribers GROUP BY status")}

    def subscriber_history(self, subscriber_id: int, email: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A subscriber's deliveries and provider events, for the editors' page about them."""
        # Issues compacted since (ledger_retention_days) keep only that they reached the reader: those first.
        deliveries = self.query("""SELECT r.issue_id, i.segment, i.cadence, i.period, 'sent' AS status,
                                          i.planned_at AS created_at, NULL AS updated_at, NULL AS delivered_at,
                                          NULL AS opened_at, NULL AS clicked_at
                                   FROM compacted_recipients r JOIN issues i ON i.id = r.issue_id
                                   WHERE r.subscriber_id = ? ORDER BY r.issue_id""", (subscriber_id,))
        deliveries += self.query("""SELECT d.issue_id, i.segment, i.cadence, i.period, d.status, d.created_at,
                                           d.updated_at, d.delivered_at, d.opened_at, d.clicked_at
                                    FROM delivery_rows d JOIN issues i ON i.id = d.issue_id
                                    WHERE d.subscriber_id = ? ORDER BY d.id""", (subscriber_id,))
        events = self.query("""SELECT provider, type, occurred_at, received_at, payload FROM events
                               WHERE subscriber_id = ? OR email = ? ORDER BY id""", (subscriber_id, email))
        return deliveries, events
