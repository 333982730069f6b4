"""What the public reading pages read: a summary's revisions by slug, and the sent digests of the archive.

Nothing here counts or names readers: the archive is built from issues alone, never from the ledger.
"""

from __future__ import annotations

from typing import Any

from .connection import Tables, decode_topics

#: Issues whose web copy is public: a sending issue is already in some inboxes.
OUT = ("sending", "sent")


class Reading(Tables):
    def summary_revisions(self, slug: str) -> list[dict[str, Any]]:
        """Every revision of a summary, the latest first (empty when there is no such slug)."""
        return [decode_topics(r) for r in self.query("SELECT * FROM summaries WHERE slug = ? ORDER BY revision DESC",
                                                     (slug,))]

    def archived_issues(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sent digests, newest first, each with the titles of its summaries in order."""
        sql = f"""SELECT * FROM issues WHERE kind = 'digest' AND status IN ({', '.join('?' * len(OUT))})
                  ORDER BY COALESCE(sent_at, approved_at, created_at) DESC, id DESC"""
        issues = self.query(sql + (" LIMIT ?" if limit else ""), [*OUT, *([limit] if limit else [])])
        for issue in issues:
            issue["titles"] = [r["title"] for r in self.query(
                """SELECT s.title FROM issue_summaries x JOIN summaries s ON s.id = x.summary_id
                   WHERE x.issue_id = ? ORDER BY x.position""", (issue["id"],))]
        return issues

    def latest_archived_issue(self, segment: str, cadence: str) -> dict[str, Any] | None:
        """The newest sent digest of a segment and cadence, if any."""
        rows = self.query(f"""SELECT * FROM issues WHERE kind = 'digest' AND segment = ? AND cadence = ?
                              AND status IN ({', '.join('?' * len(OUT))})
                              ORDER BY COALESCE(sent_at, approved_at, created_at) DESC, id DESC LIMIT 1""",
                          (segment, cadence, *OUT))
        return rows[0] if rows else None
