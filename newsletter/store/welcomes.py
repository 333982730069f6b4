"""Welcome emails in the ledger: an issue of kind 'welcome' per (segment, cadence), and at most one welcome
delivery per subscriber, ever, decided inside one write transaction (so two confirming requests cannot both plan one)."""

from __future__ import annotations

from typing import Any

from .connection import Tables, now_iso, unix
from .ledger import widen_span

WELCOME_PERIOD = "welcome"


class Welcomes(Tables):
    def plan_welcome(self, subscriber_id: int) -> dict[str, Any] | None:
        """A pending welcome delivery for an active subscriber who never had one, against the welcome issue
        of their segment and cadence (made on first use); None when they had one or are not active.

        Returns what the dispatcher's envelope needs: delivery_id, issue_id, subscriber_id, email, name,
        segment, cadence, topics (JSON)."""
        now = now_iso()
        with self.transaction() as conn:
            sub = conn.execute("SELECT * FROM subscribers WHERE id = ? AND status = 'active'",
                               (subscriber_id,)).fetchone()
            if sub is None or conn.execute(
                    """SELECT 1 FROM deliveries d JOIN issues i ON i.id = d.issue_id
                       WHERE d.subscriber_id = ? AND i.kind = 'welcome' LIMIT 1""", (subscriber_id,)).fetchone():
                return None
            conn.execute("""INSERT OR IGNORE INTO issues (segment, cadence, period, status, created_at, sent_at, kind)
                            VALUES (?, ?, ?, 'sent', ?, ?, 'welcome')""",
                         (sub["segment"], sub["cadence"], WELCOME_PERIOD, now, now))
            issue_id = conn.execute("SELECT id FROM issues WHERE segment = ? AND cadence = ? AND period = ? "
                                    "AND kind = 'welcome'", (sub["segment"], sub["cadence"], WELCOME_PERIOD)
                                    ).fetchone()["id"]
            cur = conn.execute("""INSERT INTO deliveries (issue_id, subscriber_id, status, updated_at)
                                  VALUES (?, ?, 'pending', ?)""", (issue_id, subscriber_id, unix(now)))
            # Welcomes are planned one by one: each says when, and widens its issue's id range.
            conn.execute("INSERT INTO delivery_details (id, created_at) VALUES (?, ?)", (cur.lastrowid, unix(now)))
            widen_span(conn, issue_id, cur.lastrowid, cur.lastrowid)
            return {"delivery_id": cur.lastrowid, "issue_id": issue_id, "subscriber_id": subscriber_id,
                    "email": sub["email"], "name": sub["name"], "segment": sub["segment"], "cadence": sub["cadence"],
                    "topics": sub["topics"]}

    def welcome_deliveries(self, subscriber_id: int | None = None) -> list[dict[str, Any]]:
        """Welcome deliveries (all, or one subscriber's), oldest first."""
        sql = """SELECT d.*, i.segment, i.cadence FROM delivery_rows d JOIN issues i ON i.id = d.issue_id
                 WHERE i.kind = 'welcome'"""
        if subscriber_id is None:
            return self.query(sql + " ORDER BY d.id")
        return self.query(sql + " AND d.subscriber_id = ? ORDER BY d.id", (subscriber_id,))
