"""Confirmations the transport did not take when the web app handed them over: kept until they go, retried with
growing delays, dropped once their retry period is over (a confirmation link lasts days, not weeks)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..model import retry_delay
from .connection import Tables, now_iso

TAKEN = "9999-12-31T00:00:00+00:00"  # next_attempt_at of a notice a run is sending


class NoticeQueue(Tables):
    def queue_notice(self, recipient: str, subject: str, text: str, category: str, error: str) -> int:
        now = datetime.fromisoformat(now_iso())
        with self.transaction() as conn:
            return conn.execute("""INSERT INTO queued_notices (recipient, subject, text, category, error,
                                   next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                                (recipient, subject, text, category, error,
                                 (now + timedelta(seconds=retry_delay(1))).isoformat(), now.isoformat())).lastrowid

    def queued_notices(self, due_by: str | None = None) -> list[dict[str, Any]]:
        """Every queued notice, oldest first; with due_by (ISO), only those whose next attempt has come."""
        if due_by is None:
            return self.query("SELECT * FROM queued_notices ORDER BY id")
        return self.query("SELECT * FROM queued_notices WHERE next_attempt_at <= ? ORDER BY id", (due_by,))

    def claim_notice(self, notice_id: int, due_at: str) -> bool:
        """Take a due notice for this run: no other run sends it meanwhile. A run that dies holding it leaves it
        taken (it may have gone out) until its retry period ends: never sent twice."""
        with self.transaction() as conn:
            return conn.execute("UPDATE queued_notices SET next_attempt_at = ? WHERE id = ? AND next_attempt_at = ?",
                                (TAKEN, notice_id, due_at)).rowcount == 1

    def notice_sent(self, notice_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM queued_notices WHERE id = ?", (notice_id,))

    def notice_failed_again(self, notice_id: int, error: str) -> None:
        now = datetime.fromisoformat(now_iso())
        with self.transaction() as conn:
            row = conn.execute("SELECT attempts FROM queued_notices WHERE id = ?", (notice_id,)).fetchone()
            if row is None:
                return
            attempts = row[0] + 1
            conn.execute("UPDATE queued_notices SET attempts = ?, error = ?, next_attempt_at = ? WHERE id = ?",
                         (attempts, error, (now + timedelta(seconds=retry_delay(attempts))).isoformat(), notice_id))

    def expire_notices(self, created_before: str) -> list[dict[str, Any]]:
        """Drop the notices queued before `created_before` (ISO): returns what was dropped, for the log."""
        with self.transaction() as conn:
            rows = [dict(r) for r in conn.execute("SELECT * FROM queued_notices WHERE created_at < ?",
                                                  (created_before,))]
            conn.execute("DELETE FROM queued_notices WHERE created_at < ?", (created_before,))
        return rows
