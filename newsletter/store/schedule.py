"""Per-issue send times: an approved digest waits for its `send_at` before the ten-minute run sends it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .connection import Tables

#: Issues whose time may still be set or cleared (a sending one has readers who already have it).
SCHEDULABLE = ("draft", "approved")


def due(issue: dict[str, Any], now: datetime, tz: str = "UTC") -> bool:
    """Whether a run at `now` (naive: in the zone `tz`) may send the issue: no time set, or its time has come.
    An interrupted issue (sending) always resumes: some readers have it already."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=ZoneInfo(tz))
    return (issue["status"] != "approved" or not issue.get("send_at")
            or datetime.fromisoformat(issue["send_at"]) <= now)


class Schedule(Tables):
    def schedule_issue(self, issue_id: int, send_at: str | None) -> bool:
        """Set (or with None clear) a draft or approved digest's send time, given in UTC ISO 8601;
        False when the issue is not one of those."""
        with self.transaction() as conn:
            return conn.execute(f"""UPDATE issues SET send_at = ? WHERE id = ? AND kind = 'digest'
                                    AND status IN ({', '.join('?' * len(SCHEDULABLE))})""",
                                (send_at, issue_id, *SCHEDULABLE)).rowcount == 1
