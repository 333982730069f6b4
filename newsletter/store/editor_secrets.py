"""Editors' second factor: a TOTP secret per editor (stored encrypted by twofactor.py, never shown again once
confirmed), the newest time step used (so a code works once), and recovery codes kept only as hashes."""

from __future__ import annotations

from typing import Any, Iterable

from .connection import Tables, now_iso


class EditorSecrets(Tables):
    def begin_editor_secret(self, editor: str, encrypted: str) -> None:
        """A new, unconfirmed secret: the editor's second factor is off until a code confirms it."""
        with self.transaction() as conn:
            conn.execute("""INSERT OR REPLACE INTO editor_secrets (editor, secret, created_at, confirmed_at, last_step)
                            VALUES (?, ?, ?, NULL, 0)""", (editor, encrypted, now_iso()))
            conn.execute("DELETE FROM editor_recovery_codes WHERE editor = ?", (editor,))

    def editor_secret(self, editor: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM editor_secrets WHERE editor = ?", (editor,))
        return rows[0] if rows else None

    def confirm_editor_secret(self, editor: str, step: int, code_hashes: Iterable[str]) -> bool:
        """Turn the second factor on with its first code's step and fresh recovery codes."""
        with self.transaction() as conn:
            done = conn.execute("""UPDATE editor_secrets SET confirmed_at = ?, last_step = ?
                                   WHERE editor = ? AND confirmed_at IS NULL""", (now_iso(), step, editor)).rowcount
            if done:
                conn.execute("DELETE FROM editor_recovery_codes WHERE editor = ?", (editor,))
                conn.executemany("INSERT INTO editor_recovery_codes (editor, code_hash) VALUES (?, ?)",
                                 [(editor, h) for h in code_hashes])
        return bool(done)

    def use_totp_step(self, editor: str, step: int) -> bool:
        """Accept a code of this time step once: only a step newer than the last one used passes."""
        with self.transaction() as conn:
            return conn.execute("""UPDATE editor_secrets SET last_step = ? WHERE editor = ? AND last_step < ?
                                   AND confirmed_at IS NOT NULL""", (step, editor, step)).rowcount == 1

    def use_recovery_code(self, editor: str, code_hash: str) -> bool:
        with self.transaction() as conn:
            return conn.execute("""UPDATE editor_recovery_codes SET used_at = ? WHERE editor = ? AND code_hash = ?
                                   AND used_at IS NULL""", (now_iso(), editor, code_hash)).rowcount == 1

    def recovery_codes_left(self, editor: str) -> int:
        return self.query("SELECT COUNT(*) AS n FROM editor_recovery_codes WHERE editor = ? AND used_at IS NULL",
                          (editor,))[0]["n"]

    def drop_editor_secret(self, editor: str) -> bool:
        """Turn the second factor off (or forget an enrolment never confirmed)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM editor_recovery_codes WHERE editor = ?", (editor,))
            return conn.execute("DELETE FROM editor_secrets WHERE editor = ?", (editor,)).rowcount == 1

    def second_factor_editors(self) -> dict[str, str]:
        """Editors whose second factor is on -> since when."""
        return {r["editor"]: r["confirmed_at"] for r in
                self.query("SELECT editor, confirmed_at FROM editor_secrets WHERE confirmed_at IS NOT NULL")}

    def mark_session_second_factor(self, id_hash: str) -> None:
        """This session has passed the second factor (at login, or by confirming an enrolment)."""
        with self.transaction() as conn:
            conn.execute("UPDATE editor_sessions SET second_factor = 1 WHERE id_hash = ?", (id_hash,))
