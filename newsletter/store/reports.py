"""What the report reads: the ledger's statuses per issue, the events and subscriber changes after an issue.

Only digests are reported: a welcome issue (kind 'welcome') is one email per reader, not an issue an editor sent."""

from __future__ import annotations

from typing import Any, Iterator

from .connection import Tables


class Reports(Tables):
    def reported_issues(self, issue_id: int | None = None) -> list[dict[str, Any]]:
        """Issues that reached the ledger, each with when its deliveries were planned (the report's day 0)."""
        where = "AND i.id = ?" if issue_id is not None else ""
        return self.query(f"""SELECT i.*, MIN(d.created_at) AS planned_at FROM issues i
                              JOIN deliveries d ON d.issue_id = i.id WHERE i.kind = 'digest' {where}
                              GROUP BY i.id ORDER BY i.id""", (issue_id,) if issue_id is not None else ())

    def status_counts_by_issue(self) -> dict[int, dict[str, int]]:
        """Every status the ledger holds, whatever it is (new ones appear without a change here)."""
        counts: dict[int, dict[str, int]] = {}
        for row in self.conn.execute("""SELECT issue_id, status, COUNT(*) FROM deliveries
                                        WHERE issue_id IN (SELECT id FROM issues WHERE kind = 'digest')
                                        GROUP BY issue_id, status"""):
            counts.setdefault(row[0], {})[row[1]] = row[2]
        return counts

    def tracked_counts(self, issue_id: int) -> dict[str, int]:
        """Unique opens and clicks: one per delivery, however often it was opened."""
        row = self.conn.execute("SELECT COUNT(opened_at), COUNT(clicked_at) FROM deliveries WHERE issue_id = ?",
                                (issue_id,)).fetchone()
        return {"opens": row[0], "clicks": row[1]}

    def issue_events(self, issue_id: int, since: str, until: str) -> list[dict[str, Any]]:
        """Provider events about this issue, or (without an issue) about one of its recipients in the window."""
        return self.query("""SELECT type, email, subscriber_id, event_id, occurred_at, payload FROM events
                             WHERE issue_id = ? OR (issue_id IS NULL AND occurred_at >= ? AND occurred_at < ?
                                   AND subscriber_id IN (SELECT subscriber_id FROM deliveries
                                                         WHERE issue_id = ? AND status = 'sent'))""",
                          (issue_id, since, until, issue_id))

    def recipients_who_left(self, issue_id: int, since: str, until: str) -> list[dict[str, Any]]:
        """Recipients of the issue now unsubscribed, bounced or complained, who left within the window."""
        return self.query("""SELECT s.id, s.status FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                             WHERE d.issue_id = ? AND d.status = 'sent'
                             AND s.status IN ('unsubscribed', 'bounced', 'complained')
                             AND s.unsubscribed_at >= ? AND s.unsubscribed_at < ?""", (issue_id, since, until))

    def subscriber_dates(self) -> Iterator[tuple[str, str, str | None, str | None, str]]:
        """(segment, created_at, confirmed_at, unsubscribed_at, status) of every subscriber, streamed."""
        yield from self.conn.execute("SELECT segment, created_at, confirmed_at, unsubscribed_at, status "
                                     "FROM subscribers ORDER BY id")
