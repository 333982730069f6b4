"""Polled feeds: the validators for the next conditional GET, and the run of failures behind one notice."""

from __future__ import annotations

from typing import Any, Iterable

from .connection import now_iso
from .summaries import ImportCounts, Summaries

#: Failures in a row after which the editors are told (once per run of failures).
NOTICE_AFTER = 3


class Feeds(Summaries):
    def feed_state(self, url: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM feeds WHERE url = ?", (url,))
        return rows[0] if rows else None

    def feed_states(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM feeds ORDER BY url")

    def import_feed(self, url: str, records: Iterable[dict[str, Any]], etag: str | None,
                    last_modified: str | None) -> ImportCounts:
        """The feed's items and its new validators in one transaction: a crash keeps neither or both."""
        with self.transaction() as conn:
            counts = self.upsert_summaries_in(conn, records)
            self._feed_ok(conn, url, etag, last_modified)
        return counts

    def feed_not_modified(self, url: str, etag: str | None, last_modified: str | None) -> None:
        with self.transaction() as conn:
            self._feed_ok(conn, url, etag, last_modified)

    @staticmethod
    def _feed_ok(conn: Any, url: str, etag: str | None, last_modified: str | None) -> None:
        now = now_iso()
        conn.execute("""INSERT INTO feeds (url, etag, last_modified, checked_at, ok_at, failures)
                        VALUES (?, ?, ?, ?, ?, 0)
                        ON CONFLICT (url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified,
                        checked_at = excluded.checked_at, ok_at = excluded.ok_at, failures = 0, failing_since = NULL,
                        last_error = NULL, notified_at = NULL""", (url, etag, last_modified, now, now))

    def feed_failed(self, url: str, error: str) -> dict[str, Any]:
        """Count one more failure in a row (the validators stay); returns the feed's state."""
        now = now_iso()
        with self.transaction() as conn:
            conn.execute("""INSERT INTO feeds (url, checked_at, failures, failing_since, last_error)
                            VALUES (?, ?, 1, ?, ?)
                            ON CONFLICT (url) DO UPDATE SET checked_at = excluded.checked_at,
                            failures = failures + 1, failing_since = COALESCE(failing_since, excluded.failing_since),
                            last_error = excluded.last_error""", (url, now, now, error))
        return self.feed_state(url) or {}

    def claim_feed_notice(self, url: str) -> bool:
        """True once per run of failures, when it reaches NOTICE_AFTER: the caller then tells the editors."""
        with self.transaction() as conn:
            return conn.execute("UPDATE feeds SET notified_at = ? WHERE url = ? AND failures >= ? "
                                "AND notified_at IS NULL", (now_iso(), url, NOTICE_AFTER)).rowcount == 1

    def release_feed_notice(self, url: str) -> None:
        """The notice could not be sent: let the next pull try again."""
        with self.transaction() as conn:
            conn.execute("UPDATE feeds SET notified_at = NULL WHERE url = ?", (url,))

    def failing_feeds(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM feeds WHERE failures > 0 ORDER BY url")
