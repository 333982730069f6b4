"""What the public sign-up does to the subscribers table: the same statements whatever the address's state
(so the answer's timing tells nothing), and a confirmation that never revives a bounced or complained address."""

from __future__ import annotations

import json
from typing import Any

from .connection import Tables, decode_topics, now_iso

#: What a confirmation link cannot undo: the provider told us the address bounces or reported us as spam.
NOT_BY_LINK = ("bounced", "complained")


class Signups(Tables):
    def sign_up(self, email: str, segment: str, cadence: str, topics: list[str]) -> dict[str, Any]:
        """The subscriber of a sign-up: a new address is stored pending (unsubscribed when it was removed
        before, so only its confirmation brings it back); an existing one is left exactly as it is."""
        now = now_iso()
        hashed = self.suppression_hash(email)
        with self.transaction() as conn:
            conn.execute("""INSERT INTO subscribers (email, name, segment, cadence, topics, status, created_at,
                            updated_at, unsubscribed_at)
                            SELECT ?, '', ?, ?, ?, s.status, ?, ?, CASE WHEN s.status = 'unsubscribed' THEN ? END
                            FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM suppressions WHERE email_hash = ?)
                                  THEN 'unsubscribed' ELSE 'pending' END AS status) AS s
                            WHERE NOT EXISTS (SELECT 1 FROM subscribers WHERE email = ?)""",
                         (email, segment, cadence, json.dumps(topics, ensure_ascii=False), now, now, now, hashed,
                          email))
            row = conn.execute("SELECT * FROM subscribers WHERE email = ?", (email,)).fetchone()
        return decode_topics(dict(row))

    def confirm_subscriber(self, subscriber_id: int) -> bool:
        """Activate a pending or unsubscribed subscriber from their own link; returns whether it changed.
        Checked in the UPDATE itself, so a spam report landing meanwhile is never overwritten."""
        now = now_iso()
        with self.transaction() as conn:
            cur = conn.execute("""UPDATE subscribers SET status = 'active', updated_at = ?,
                                  confirmed_at = COALESCE(confirmed_at, ?), unsubscribed_at = NULL
                                  WHERE id = ? AND status NOT IN ('active', 'bounced', 'complained')""",
                               (now, now, subscriber_id))
            if cur.rowcount:
                row = conn.execute("SELECT email FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
                conn.execute("DELETE FROM suppressions WHERE email_hash = ?", (self.suppression_hash(row["email"]),))
        return bool(cur.rowcount)
