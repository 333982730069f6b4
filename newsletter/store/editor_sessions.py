"""Editors' sessions, server-side: the cookie carries a random id, this table says who it is and until when."""

from __future__ import annotations

from typing import Any

from .connection import Tables


class EditorSessions(Tables):
    def start_editor_session(self, id_hash: str, editor: str, fingerprint: str, now: float, expires_at: float) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM editor_sessions WHERE expires_at <= ?", (now,))
            conn.execute("""INSERT INTO editor_sessions (id_hash, editor, password_fingerprint, created_at, expires_at)
                            VALUES (?, ?, ?, ?, ?)""", (id_hash, editor, fingerprint, now, expires_at))

    def editor_session(self, id_hash: str, now: float) -> dict[str, Any] | None:
        """The live session with this id hash (None when unknown, ended or expired). Reads only."""
        rows = self.query("SELECT * FROM editor_sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now))
        return rows[0] if rows else None

    def end_editor_session(self, id_hash: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM editor_sessions WHERE id_hash = ?", (id_hash,))

    def end_editor_sessions(self, editor: str) -> int:
        """End every session of one editor (a new password, a removal); returns how many there were."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM editor_sessions WHERE editor = ?", (editor,)).rowcount
