"""Provider events (webhooks, later bounce mail): each stored once, and the delivery timestamps they set."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .connection import Tables, now_iso, unix

#: What a rejected event keeps of its payload: enough to see what was wrong.
REJECTED_EXCERPT = 4096


class Events(Tables):
    def record_event(self, provider: str, event: dict[str, Any]) -> bool:
        """Store a webhook event once; returns False for a replay."""
        with self.transaction() as conn:
            cur = conn.execute("""INSERT OR IGNORE INTO events (provider, event_id, type, email, issue_id,
                                  subscriber_id, occurred_at, payload, received_at)
                                  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                               (provider, event["event_id"], event["type"], event.get("email"),
                                event.get("issue_id"), event.get("subscriber_id"), event.get("occurred_at"),
                                json.dumps(event.get("payload", {}), sort_keys=True), now_iso()))
            return cur.rowcount == 1

    def record_rejected_event(self, provider: str, reason: str, payload: Any) -> bool:
        """Keep an event that could not be used, with why; the same payload only once."""
        text = json.dumps(payload, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()  # json.dumps wrote ASCII
        with self.transaction() as conn:
            cur = conn.execute("""INSERT OR IGNORE INTO rejected_events (provider, reason, payload, digest, received_at)
                                  VALUES (?, ?, ?, ?, ?)""",
                               (provider, reason, text[:REJECTED_EXCERPT], digest, now_iso()))
            return cur.rowcount == 1

    def rejected_events(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM rejected_events ORDER BY id")

    def has_event(self, provider: str, event_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM events WHERE provider = ? AND event_id = ?", (provider, event_id)))

    def mark_delivery_event(self, issue_id: int, subscriber_id: int, email: str, column: str, when: str) -> bool:
        """Stamp a delivery, only when `email` is its subscriber's address; returns whether one matched."""
        if column not in ("delivered_at", "opened_at", "clicked_at"):
            raise ValueError(f"column: not a delivery event column: {column}")
        with self.transaction() as conn:
            cur = conn.execute(f"""INSERT INTO delivery_details (id, {column})
                                   SELECT id, ? FROM deliveries WHERE subscriber_id = ? AND issue_id = ?
                                   AND EXISTS (SELECT 1 FROM subscribers WHERE id = ? AND email = ?)
                                   ON CONFLICT (id) DO UPDATE SET {column} = COALESCE({column}, excluded.{column})""",
                               (unix(when), subscriber_id, issue_id, subscriber_id, email))
            return cur.rowcount > 0
