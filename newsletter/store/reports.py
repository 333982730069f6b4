"""What the report reads: the ledger's statuses per issue, the events and subscriber changes after an issue.

Only digests are reported: a welcome issue (kind 'welcome') is one email per reader, not an issue an editor sent."""

from __future__ import annotations

from typing import Any, Iterator

from .connection import Tables
from .ledger import issue_span


class Reports(Tables):
    """Each per-issue query reads the issue's rows by their id range, and a compacted issue's counts and
    recipients from what compaction kept (store/compaction.py): its numbers stay what they were."""

    def reported_issues(self, issue_id: int | None = None) -> list[dict[str, Any]]:
        """Issues that reached the ledger, each with when its deliveries were planned (the report's day 0)."""
        where = "AND i.id = ?" if issue_id is not None else ""
        return self.query(f"""SELECT i.* FROM issues i WHERE i.kind = 'digest' AND i.planned_at IS NOT NULL {where}
                              AND (i.compacted_at IS NOT NULL OR EXISTS (SELECT 1 FROM deliveries d
                                   WHERE d.id BETWEEN i.first_delivery AND i.last_delivery AND d.issue_id = i.id))
                              ORDER BY i.id""", (issue_id,) if issue_id is not None else ())

    def status_counts_by_issue(self) -> dict[int, dict[str, int]]:
        """Every status the ledger holds, whatever it is (new ones appear without a change here)."""
        counts: dict[int, dict[str, int]] = {}
        # Each digest's id range, issue by issue (CROSS JOIN and `+` keep SQLite from indexing the whole ledger).
        for row in self.conn.execute("""SELECT i.id, d.status, COUNT(*) FROM issues i CROSS JOIN deliveries d
                                        ON d.id BETWEEN i.first_delivery AND i.last_delivery AND +d.issue_id = i.id
                                        WHERE i.kind = 'digest' GROUP BY i.id, d.status
                                        UNION ALL SELECT issue_id, status, n FROM issue_counts"""):
            counts.setdefault(row[0], {})[row[1]] = row[2]
        return counts

    def tracked_counts(self, issue_id: int) -> dict[str, int]:
        """Unique opens and clicks: one per delivery, however often it was opened."""
        row = self.conn.execute("""SELECT COUNT(x.opened_at), COUNT(x.clicked_at) FROM deliveries d
                                   JOIN delivery_details x ON x.id = d.id WHERE d.id BETWEEN ? AND ? AND d.issue_id = ?""",
                                issue_span(self.conn, issue_id)).fetchone()
        kept = self.conn.execute("SELECT COALESCE(SUM(opened), 0), COALESCE(SUM(clicked), 0) FROM issue_counts "
                                 "WHERE issue_id = ?", (issue_id,)).fetchone()
        return {"opens": row[0] + kept[0], "clicks": row[1] + kept[1]}

    def issue_events(self, issue_id: int, since: str, until: str) -> list[dict[str, Any]]:
        """Provider events about this issue, or (without an issue) about one of its recipients in the window."""
        return self.query("""SELECT type, email, subscriber_id, event_id, occurred_at, payload FROM events e
                             WHERE issue_id = ? OR (issue_id IS NULL AND occurred_at >= ? AND occurred_at < ?
                                   AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = e.subscriber_id
                                                AND d.issue_id = ? AND d.status = 'sent')
                                        OR EXISTS (SELECT 1 FROM compacted_recipients r
                                                   WHERE r.subscriber_id = e.subscriber_id AND r.issue_id = ?)))""",
                          (issue_id, since, until, issue_id, issue_id))

    def recipients_who_left(self, issue_id: int, since: str, until: str) -> list[dict[str, Any]]:
        """Recipients of the issue now unsubscribed, bounced or complained, who left within the window."""
        return self.query("""SELECT s.id, s.status FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                             WHERE d.id BETWEEN ? AND ? AND d.issue_id = ? AND d.status = 'sent'
                             AND s.status IN ('unsubscribed', 'bounced', 'complained')
                             AND s.unsubscribed_at >= ? AND s.unsubscribed_at < ?
                             UNION ALL
                             SELECT s.id, s.status FROM subscribers s JOIN compacted_recipients r
                             ON r.subscriber_id = s.id AND r.issue_id = ?
                             WHERE s.status IN ('unsubscribed', 'bounced', 'complained')
                             AND s.unsubscribed_at >= ? AND s.unsubscribed_at < ?""",
                          (*issue_span(self.conn, issue_id), since, until, issue_id, since, until))

    def subscriber_dates(self) -> Iterator[tuple[str, str, str | None, str | None, str]]:
        """(segment, created_at, confirmed_at, unsubscribed_at, status) of every subscriber, streamed."""
        yield from self.conn.execute("SELECT segment, created_at, confirmed_at, unsubscribed_at, status "
                                     "FROM subscribers ORDER BY id")
