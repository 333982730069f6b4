"""Bounce and complaint reports (bounce mail and SendGrid alike): each recorded once, soft bounces counted per issue."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .connection import Tables, now_iso


#: Days after the upgrade that signed delivery tags during which a bare id (mail sent before) still matches.
UNSIGNED_GRACE_DAYS = 30


class Bounces(Tables):
    def unsigned_ids(self) -> int:
        """The last delivery that went out named by its bare id (m022), while UNSIGNED_GRACE_DAYS last; else 0."""
        row = self.conn.execute("SELECT value, at FROM ledger_marks WHERE name = 'unsigned_ids_upto'").fetchone()
        if row is None or datetime.fromisoformat(now_iso()) - datetime.fromisoformat(row[1]) > timedelta(
                days=UNSIGNED_GRACE_DAYS):
            return 0
        return row[0]

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """A delivery row (what a report is matched against)."""
        rows = self.query("SELECT id, issue_id, subscriber_id, status FROM deliveries WHERE id = ?", (delivery_id,))
        return rows[0] if rows else None

    def bounce_report_verdict(self, source: str, ref: str) -> str | None:
        """What became of a report already recorded (None: never seen)."""
        rows = self.query("SELECT verdict FROM bounce_reports WHERE source = ? AND ref = ?", (source, ref))
        return rows[0]["verdict"] if rows else None

    def record_bounce_report(self, source: str, ref: str, report: dict[str, Any]) -> bool:
        """Store a report once; False when (source, ref) was already there."""
        with self.transaction() as conn:
            cur = conn.execute("""INSERT OR IGNORE INTO bounce_reports (source, ref, verdict, status_code, issue_id,
                                  delivery_id, subscriber_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                               (source, ref, report["verdict"], report.get("status_code"), report.get("issue_id"),
                                report.get("delivery_id"), report.get("subscriber_id"), now_iso()))
            return cur.rowcount == 1

    def add_soft_bounce(self, subscriber_id: int, issue_id: int) -> int:
        """Count a soft bounce for this issue (once per issue); returns the issues in the current run of them."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO soft_bounces (subscriber_id, issue_id, created_at) VALUES (?, ?, ?)",
                         (subscriber_id, issue_id, now_iso()))
            return conn.execute("SELECT COUNT(*) FROM soft_bounces WHERE subscriber_id = ?",
                                (subscriber_id,)).fetchone()[0]

    def reset_soft_bounces(self, subscriber_id: int) -> None:
        """A successful delivery ends the run of soft bounces."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM soft_bounces WHERE subscriber_id = ?", (subscriber_id,))

    def soft_bounce_count(self, subscriber_id: int) -> int:
        return self.query("SELECT COUNT(*) AS n FROM soft_bounces WHERE subscriber_id = ?", (subscriber_id,))[0]["n"]

    def bounce_counts(self) -> dict[int, dict[str, int]]:
        """Per issue: hard and soft bounces and complaints reported (by mail or by SendGrid)."""
        counts: dict[int, dict[str, int]] = {}
        for row in self.query("""SELECT issue_id, verdict, COUNT(*) AS n FROM bounce_reports
                                 WHERE issue_id IS NOT NULL AND verdict IN ('hard', 'soft', 'complaint')
                                 GROUP BY issue_id, verdict ORDER BY issue_id"""):
            counts.setdefault(row["issue_id"], {"hard": 0, "soft": 0, "complaint": 0})[row["verdict"]] = row["n"]
        return counts
