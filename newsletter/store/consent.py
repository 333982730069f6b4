"""Consent records: how and when each person agreed to the digest, one row per act of consent, kept with
the subscriber and erased with them. Every path records here (form, import, cli, editor)."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Mapping

from .connection import now_iso
from .subscriber_writes import CONSENT_METHODS, check_consent
from .subscribers import Subscribers

__all__ = ["CONSENT_METHODS", "Consent"]


class Consent(Subscribers):
    """Built on Subscribers: an import writes people and their consent in one transaction."""

    def record_consent(self, subscriber_id: int, method: str, basis: str, *, opted_in_at: str | None = None,
                       ip: str | None = None, wording_version: str | None = None) -> int | None:
        """One act of consent; the same act recorded again (same method, basis, time, address, wording) adds
        nothing. Returns the row id, or None when it was already there."""
        with self.transaction() as conn:
            return _insert(conn, subscriber_id, {"method": method, "basis": basis, "opted_in_at": opted_in_at,
                                                 "ip": ip, "wording_version": wording_version})

    def active_without_consent(self) -> int:
        """Active subscribers with no consent record (the real backends skip them unless legacy_consent)."""
        return self.query("""SELECT COUNT(*) AS n FROM subscribers s WHERE status = 'active' AND NOT EXISTS
                             (SELECT 1 FROM consent_records c WHERE c.subscriber_id = s.id)""")[0]["n"]

    def consent_records(self, subscriber_id: int) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM consent_records WHERE subscriber_id = ? ORDER BY id", (subscriber_id,))

    def upsert_subscribers_with_consent(self, records: Iterable[dict[str, Any]]) -> dict[str, int]:
        """`upsert_subscribers`, and in the same transaction a consent row for each record carrying a
        `consent` mapping (method, basis, opted_in_at, ip, wording_version) whose subscriber is not
        suppressed: an unsubscribed or bounced address gives no consent by being imported."""
        return self._upsert(records, 2000, consent=True)


def _insert(conn: sqlite3.Connection, subscriber_id: int, consent: Mapping[str, Any]) -> int | None:
    method, basis = check_consent(consent)
    values = (subscriber_id, method, basis, consent.get("wording_version"), consent.get("opted_in_at"),
              consent.get("ip"))
    if conn.execute("""SELECT 1 FROM consent_records WHERE subscriber_id = ? AND method = ? AND basis = ?
                       AND wording_version IS ? AND opted_in_at IS ? AND ip IS ?""", values).fetchone():
        return None
    return conn.execute("""INSERT INTO consent_records (subscriber_id, method, basis, wording_version, opted_in_at,
                           ip, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)""", (*values, now_iso())).lastrowid
