"""Consent records: how and when each person agreed to the digest, one row per act of consent, kept with
the subscriber and erased with them. Every path records here (form, import, cli, editor)."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable, Mapping

from ..model import SUPPRESSED
from .connection import now_iso
from .subscribers import Subscribers

CONSENT_METHODS = ("form", "import", "cli", "editor")


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
        records = list(records)
        with self.transaction() as conn:
            counts = self.upsert_subscribers(records)  # joins this transaction
            counts["consents"] = 0
            for rec in records:
                if not rec.get("consent"):
                    continue
                row = conn.execute("SELECT id, status FROM subscribers WHERE email = ?", (rec["email"],)).fetchone()
                if row["status"] not in SUPPRESSED and _insert(conn, row["id"], rec["consent"]) is not None:
                    counts["consents"] += 1
        return counts

    def import_subscribers(self, records: Iterable[dict[str, Any]], refuse: Callable[[list[tuple[int, str]]], str]
                           = lambda duplicates: "", chunk: int = 2000) -> dict[str, Any]:
        """An import streamed into ONE transaction, `chunk` records at a time, so memory stays flat however long
        the file: records (each with the `line` it came from) as `upsert_subscribers_with_consent` writes them.

        A second record for an address already in this import is not written and comes back in `duplicates`
        as (line, reason); which addresses were seen lives in a temporary table, not in memory. When the
        records are all read, `refuse(duplicates)` may name a reason to keep nothing (--strict with bad
        rows): everything is rolled back and ImportRefused raised with that reason."""
        counts: dict[str, Any] = {"added": 0, "updated": 0, "kept_suppressed": 0, "consents": 0}
        duplicates: list[tuple[int, str]] = []
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            for key, value in self.upsert_subscribers_with_consent(batch).items():
                counts[key] += value
            batch.clear()

        with self.transaction() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_lines (email TEXT PRIMARY KEY, line INTEGER) "
                         "WITHOUT ROWID")
            conn.execute("DELETE FROM temp.import_lines")
            for rec in records:
                if not conn.execute("INSERT OR IGNORE INTO temp.import_lines VALUES (?, ?)",
                                    (rec["email"], rec["line"])).rowcount:
                    first = conn.execute("SELECT line FROM temp.import_lines WHERE email = ?",
                                         (rec["email"],)).fetchone()[0]
                    duplicates.append((rec["line"], f"email: {rec['email']} already on line {first}"))
                    continue
                batch.append(rec)
                if len(batch) >= chunk:
                    flush()
            if batch:
                flush()
            conn.execute("DELETE FROM temp.import_lines")
            reason = refuse(duplicates)
            if reason:
                raise ImportRefused(reason, duplicates)
        return {**counts, "duplicates": duplicates}


class ImportRefused(Exception):
    """An import its caller refused once every record was read: nothing of it was kept."""

    def __init__(self, reason: str, duplicates: list[tuple[int, str]]):
        super().__init__(reason)
        self.duplicates = duplicates


def _insert(conn: sqlite3.Connection, subscriber_id: int, consent: Mapping[str, Any]) -> int | None:
    method, basis = consent["method"], (consent.get("basis") or "").strip()
    if method not in CONSENT_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(CONSENT_METHODS)}")
    if not basis:
        raise ValueError("basis: say how this person agreed (e.g. 'paper form 2025')")
    values = (subscriber_id, method, basis, consent.get("wording_version"), consent.get("opted_in_at"),
              consent.get("ip"))
    if conn.execute("""SELECT 1 FROM consent_records WHERE subscriber_id = ? AND method = ? AND basis = ?
                       AND wording_version IS ? AND opted_in_at IS ? AND ip IS ?""", values).fetchone():
        return None
    return conn.execute("""INSERT INTO consent_records (subscriber_id, method, basis, wording_version, opted_in_at,
                           ip, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)""", (*values, now_iso())).lastrowid
