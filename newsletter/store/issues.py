"""Issues and their lifecycle, written down in one place: draft -> approved -> sending -> sent, or cancelled.

Only digests (kind 'digest') are listed, looked up and sent here; welcome issues (store/welcomes.py) are not."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..model import ISSUE_STATUSES
from ..readability import flagged
from .connection import Tables, decode_topics, now_iso

#: The editors' moves: new status -> the statuses it may come from.
TRANSITIONS = {"approved": ("draft",), "cancelled": ("draft", "approved")}


def may_send(issue: dict[str, Any], retrying: bool = False) -> bool:
    """Approved or interrupted issues are sent; a sent one only again when retrying some of its deliveries."""
    return issue["status"] in ("approved", "sending") or (retrying and issue["status"] == "sent")


def reading_hold(issue: dict[str, Any], summaries: Iterable[dict[str, Any]], max_grade: float) -> str | None:
    """With enforce_reading_grade on: why an approved issue may not be sent (its lay text reads above
    max_grade), in one line naming each flagged field; None when it may. An issue already being sent is
    never held half-way (some readers have it; the rest must get the same)."""
    if issue["status"] != "approved":
        return None
    flags = [f"{s['slug']} {flag.field} ({flag.describe()})" for s in summaries for flag in flagged(s, max_grade)]
    if not flags:
        return None
    return (f"issue {issue['id']}: held, reading grade above {max_grade:g} (enforce_reading_grade): "
            + "; ".join(flags))


class Issues(Tables):
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
        rows = self.query("SELECT * FROM issues WHERE id = ? AND kind = 'digest'", (issue_id,))
        return rows[0] if rows else None

    def issues(self, status: str | None = None) -> list[dict[str, Any]]:
        if status:
            return self.query("SELECT * FROM issues WHERE status = ? AND kind = 'digest' ORDER BY id", (status,))
        return self.query("SELECT * FROM issues WHERE kind = 'digest' ORDER BY id")

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
        rows = self.query("SELECT * FROM issues WHERE status IN ('approved', 'sending') AND kind = 'digest' ORDER BY id")
        if retry:
            rows += self.query(f"""SELECT * FROM issues i WHERE status = 'sent' AND kind = 'digest' AND EXISTS
                                   (SELECT 1 FROM deliveries d WHERE d.id BETWEEN i.first_delivery AND i.last_delivery
                                    AND d.issue_id = i.id AND d.status IN ({', '.join('?' * len(retry))}))
                                   ORDER BY id""", list(retry))
        return rows

    def latest_issues(self) -> list[dict[str, Any]]:
        """The newest issue of each segment and cadence."""
        return self.query("""SELECT i.* FROM issues i
                             WHERE i.id = (SELECT MAX(id) FROM issues WHERE segment = i.segment AND cadence = i.cadence
                                           AND kind = 'digest')
                             ORDER BY i.segment, i.cadence""")
