"""The audit log: who did what and when, for editors, the CLI and the app itself. Rows are only added; an
erasure keeps that a change happened but drops its details (they may name a reader's segment or topics).

Call `record_audit` after the change it records has committed (or pass the open transaction's connection as
`conn`, so both commit together). Actors: an editor's name, "cli:<os user>", "subscriber" (their own links),
"provider:<name>" (webhooks), "system".
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .connection import Tables, conditions, now_iso

#: Longest actor name kept (a failed login records whatever name was typed).
ACTOR_MAX = 64


class AuditLog(Tables):
    def record_audit(self, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None,
                     conn: sqlite3.Connection | None = None) -> int:
        """Add one row; returns its id."""
        row = (now_iso(), (actor or "?")[:ACTOR_MAX], action, target,
               json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str))
        sql = "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)"
        if conn is not None:
            return int(conn.execute(sql, row).lastrowid or 0)
        with self.transaction() as own:
            return int(own.execute(sql, row).lastrowid or 0)

    def audit_entries(self, actor: str | None = None, action: str | None = None, target: str | None = None,
                      since: str | None = None, before_id: int | None = None,
                      limit: int | None = 50) -> list[dict[str, Any]]:
        """Newest first; `action` ending in "." matches that action and its group ("login." finds login and
        login.failed);
        `since` is an ISO date or date-time (UTC); `before_id` pages on."""
        group = action if action and action.endswith(".") else None
        where, params = conditions(("actor = ?", actor), ("action = ?", None if group else action),
                                   ("target = ?", target),
                                   ("at >= ?", since), ("id < ?", before_id))
        if group:
            where += " AND (action = ? OR (action >= ? AND action < ?))"
            params += [group[:-1], group, group[:-1] + "/"]  # "/" sorts right after "."
        sql = f"SELECT * FROM audit_log WHERE 1=1{where} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.query(sql, params)
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows

    def audit_actions(self) -> list[str]:
        """Every action recorded so far (for the filter's choices)."""
        return [r["action"] for r in self.query("SELECT DISTINCT action FROM audit_log ORDER BY action")]

    def last_audit(self, target: str, action: str) -> dict[str, Any] | None:
        """The newest row of this action on this target (who approved issue 12?)."""
        rows = self.audit_entries(target=target, action=action, limit=1)
        return rows[0] if rows else None
