"""Keeping less for less time: the statements `newsletter purge` runs, each removing only what is past its
period, so a second run finds nothing more."""

from __future__ import annotations

from .connection import unix_seconds
from .subscribers import Subscribers

#: An erased reader's delivery rows get -(UNLINKED + delivery id) as subscriber id: unique per row (so no two rows
#: tell they were the same person) and never a real subscriber's -id.
UNLINKED = 2**40


class Retention(Subscribers):
    def purge_events(self, before: str) -> int:
        """Delete provider events (used and rejected) received before `before` (ISO time)."""
        with self.transaction() as conn:
            gone = conn.execute("DELETE FROM events WHERE received_at <= ?", (before,)).rowcount
            return gone + conn.execute("DELETE FROM rejected_events WHERE received_at <= ?", (before,)).rowcount

    def unconfirmed_signups(self, before: str) -> list[str]:
        """Addresses still pending, never confirmed, that arrived before `before`."""
        rows = self.query("""SELECT email FROM subscribers WHERE status = 'pending' AND confirmed_at IS NULL
                             AND created_at <= ? ORDER BY id""", (before,))
        return [r["email"] for r in rows]

    def unlink_erased_deliveries(self, before: str) -> int:
        """Erased readers' delivery rows last changed before `before` keep their status and times (the counts) but
        no longer tell which of them went to the same person."""
        with self.transaction() as conn:
            return conn.execute("""UPDATE deliveries SET subscriber_id = -(? + id), batch = NULL
                                   WHERE subscriber_id < 0 AND subscriber_id > -?
                                   AND CASE typeof(updated_at) WHEN 'integer' THEN updated_at <= ?
                                                               ELSE updated_at <= ? END""",
                                (UNLINKED, UNLINKED, unix_seconds(before), before)).rowcount
