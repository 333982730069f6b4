"""Compacting the ledger (`ledger_retention_days`, run by `newsletter purge`): a finished digest's delivery rows
become its counts per status (issue_counts) and the readers it reached (compacted_recipients).

What stays is what the rest still reads: the report, `status` and the editors' pages take the counts; selection
(a reader who changes audience never gets a summary twice) and the report's unsubscribes and bounces take the
recipients. What goes: each row's status, times, steps, attempts and event stamps, and with them any way to
retry its failures or to match a late bounce to it. Welcome issues are never compacted: their one row per
reader is what keeps anyone from getting a second welcome.
"""

from __future__ import annotations

from typing import Any

from ..model import OPEN_DELIVERY
from .connection import Tables, now_iso
from .ledger import ISSUE_ROWS, issue_span


class Compaction(Tables):
    def compactable_issues(self, older_than: str) -> list[dict[str, Any]]:
        """Digests sent (no open delivery left) at or before `older_than` (ISO time), not compacted yet."""
        return self.query(f"""SELECT i.* FROM issues i WHERE i.kind = 'digest' AND i.status = 'sent'
                              AND i.compacted_at IS NULL AND i.last_delivery IS NOT NULL
                              AND COALESCE(i.sent_at, i.planned_at) <= ?
                              AND NOT EXISTS (SELECT 1 FROM deliveries d
                                  WHERE d.id BETWEEN i.first_delivery AND i.last_delivery AND d.issue_id = i.id
                                  AND d.status IN ({', '.join('?' * len(OPEN_DELIVERY))}))
                              ORDER BY i.id""", (older_than, *OPEN_DELIVERY))

    def compact_deliveries(self, older_than: str) -> int:
        """Compact every digest `compactable_issues` names, each in one transaction (its counts and recipients
        written, its rows, details and steps deleted, the issue marked compacted). Returns the rows removed."""
        removed = 0
        for issue in self.compactable_issues(older_than):
            removed += self._compact(issue["id"])
        return removed

    def _compact(self, issue_id: int) -> int:
        with self.transaction() as conn:
            span = issue_span(conn, issue_id)
            still = conn.execute(f"""SELECT status, compacted_at, EXISTS (SELECT 1 FROM deliveries WHERE {ISSUE_ROWS}
                                     AND status IN ({', '.join('?' * len(OPEN_DELIVERY))})) FROM issues WHERE id = ?""",
                                 (*span, *OPEN_DELIVERY, issue_id)).fetchone()
            if still is None or still[0] != "sent" or still[1] is not None or still[2]:
                return 0  # reopened (a retry) or compacted by another run since it was listed
            conn.execute(f"""INSERT INTO issue_counts (issue_id, status, n, delivered, opened, clicked)
                             SELECT d.issue_id, d.status, COUNT(*), COUNT(x.delivered_at), COUNT(x.opened_at),
                                    COUNT(x.clicked_at)
                             FROM deliveries d LEFT JOIN delivery_details x ON x.id = d.id
                             WHERE d.id BETWEEN ? AND ? AND d.issue_id = ? GROUP BY d.status""", span)
            # Erased readers (negative ids) are counted above and kept nowhere else.
            conn.execute(f"""INSERT OR IGNORE INTO compacted_recipients (subscriber_id, issue_id)
                             SELECT subscriber_id, issue_id FROM deliveries
                             WHERE {ISSUE_ROWS} AND status = 'sent' AND subscriber_id > 0 ORDER BY subscriber_id""",
                         span)
            conn.execute(f"DELETE FROM delivery_details WHERE id IN (SELECT id FROM deliveries WHERE {ISSUE_ROWS})",
                         span)
            removed = conn.execute(f"DELETE FROM deliveries WHERE {ISSUE_ROWS}", span).rowcount
            # Steps written for these rows lie in their range; one another row still points at stays.
            conn.execute("""DELETE FROM delivery_batches WHERE first_id BETWEEN ? AND ? AND last_id <= ?
                            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.batch = delivery_batches.id
                                            AND d.id BETWEEN delivery_batches.first_id AND delivery_batches.last_id)""",
                         (span[0], span[1], span[1]))
            conn.execute("UPDATE issues SET compacted_at = ? WHERE id = ?", (now_iso(), issue_id))
        return removed
