"""Subscribers written a chunk at a time (an import of a million rows, and every smaller upsert, by the same
rules): per chunk one query finds the addresses already known, one the new ones on the suppression list, one
executemany adds the new and one updates the known, and one statement records the consent.

The rules, the same for every path (`upsert_subscribers` in subscribers.py, the import in
subscriber_import.py):
- a row without a status leaves a known subscriber's as it is and makes a new one pending;
- an address that unsubscribed, bounced, complained or was removed (its hash on the suppression list) is never
  made active or pending again by a write: it keeps its status (a removed one comes back unsubscribed) and
  counts as `kept_suppressed`;
- a consent record goes with a row that carries one whose subscriber is not suppressed, unless the very same
  act (method, basis, wording, time, address) is recorded already.

Parameters are bound as strings and integers only: Python's sqlite3 binds None (NULL) through its adapter
lookup, several times slower, so the NULLs of new rows come from CASE in the SQL and the consent rows, whose
optional fields are often empty, go in as one JSON array.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..model import SUPPRESSED

CONSENT_METHODS = ("form", "import", "cli", "editor")
_SUPPRESSED = frozenset(SUPPRESSED)


def _if_suppressed(value: str) -> str:
    """SQL: `value` when ?6 (the status) is a suppressed one, else NULL. A CASE, not `?6 IN (...)`: SQLite
    builds an IN list's lookup table anew each time a statement runs, and executemany runs it once a row."""
    return "CASE ?6 " + " ".join(f"WHEN '{s}' THEN {value}" for s in SUPPRESSED) + " END"


#: A record as a chunk holds it: (n, email, name, segment, cadence, topics JSON, status or None, consent or
#: None), `n` its line in the file (or its place in the list), consent (method, basis, wording_version,
#: opted_in_at, ip).
Row = tuple

_KNOWN = "SELECT s.email, s.id, s.status FROM json_each(:emails) j JOIN main.subscribers s ON s.email = j.value"
_ON_LIST = "SELECT email_hash FROM main.suppressions WHERE email_hash IN (SELECT value FROM json_each(?))"
# ?1 email, ?2 name, ?3 segment, ?4 cadence, ?5 topics, ?6 status, ?7 now
_ADD = f"""INSERT INTO main.subscribers (email, name, segment, cadence, topics, status, created_at, updated_at,
                                        confirmed_at, unsubscribed_at)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, CASE WHEN ?6 = 'active' THEN ?7 END, {_if_suppressed('?7')})"""
# ?1 id, the rest as above; what subscribers.AUDIENCE_CHANGED stamps (the right-hand sides read old values)
_UPDATE = f"""UPDATE main.subscribers SET
    audience_changed_at = CASE WHEN segment != ?3 OR cadence != ?4 THEN ?7 ELSE audience_changed_at END,
    name = ?2, segment = ?3, cadence = ?4, topics = ?5, status = ?6, updated_at = ?7,
    confirmed_at = COALESCE(confirmed_at, CASE WHEN ?6 = 'active' THEN ?7 END),
    unsubscribed_at = {_if_suppressed('COALESCE(unsubscribed_at, ?7)')}
    WHERE id = ?1"""
_CONSENT = """INSERT INTO main.consent_records (subscriber_id, method, basis, wording_version, opted_in_at, ip,
                                               recorded_at)
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, :now
    FROM json_each(:rows) j WHERE NOT EXISTS (
        SELECT 1 FROM main.consent_records c WHERE c.subscriber_id = j.value ->> 0 AND c.method = j.value ->> 1
        AND c.basis = j.value ->> 2 AND c.wording_version IS j.value ->> 3 AND c.opted_in_at IS j.value ->> 4
        AND c.ip IS j.value ->> 5)
    ORDER BY j.key"""


def check_consent(consent: Mapping[str, Any]) -> tuple[str, str]:
    """A consent's method and basis (stripped), or ValueError naming what is wrong."""
    method, basis = consent["method"], (consent.get("basis") or "").strip()
    if method not in CONSENT_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(CONSENT_METHODS)}")
    if not basis:
        raise ValueError("basis: say how this person agreed (e.g. 'paper form 2025')")
    return method, basis


def row(n: int, rec: Mapping[str, Any], consent: Mapping[str, Any] | None = None) -> Row:
    """A record as a chunk holds it, with `consent` (method, basis, wording_version, opted_in_at, ip) if given."""
    topics = rec.get("topics")
    given = None
    if consent:
        method, basis = check_consent(consent)
        given = (method, basis, consent.get("wording_version"), consent.get("opted_in_at"), consent.get("ip"))
    return (n, rec["email"], rec.get("name") or "", rec["segment"], rec.get("cadence") or "weekly",
            _topics_json(tuple(topics)) if topics else "[]", rec.get("status") or None, given)


@functools.lru_cache(maxsize=1024)
def _topics_json(topics: tuple[str, ...]) -> str:
    """A list of topics as stored (a list has few distinct ones)."""
    return json.dumps(list(topics), ensure_ascii=False)


class Writer:
    """Writes chunks inside the caller's transaction on `conn`; `hash_address` names an address on the
    suppression list (it refuses when the list's key is missing)."""

    def __init__(self, conn: sqlite3.Connection, now: str, hash_address: Callable[[str], str]):
        self.conn, self.now, self.hash_address = conn, now, hash_address
        self.suppressions = conn.execute("SELECT EXISTS (SELECT 1 FROM main.suppressions)").fetchone()[0]
        self.last_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM main.subscribers").fetchone()[0]

    def known(self, rows: list[Row], sql: str = _KNOWN, **params: Any) -> dict[str, tuple]:
        """The chunk's addresses already stored: address -> (id, status, and whatever else `sql` selects);
        `sql` reads the addresses as the JSON array :emails."""
        emails = json.dumps([r[1] for r in rows])
        return {found[0]: found[1:] for found in self.conn.execute(sql, {"emails": emails, **params})}

    def write(self, rows: list[Row], known: dict[str, tuple] | None = None) -> Written:
        """A chunk (each address once) written by the rules above; `known` is what `known(rows)` gives."""
        conn, now = self.conn, self.now
        if known is None:
            known = self.known(rows)
        new = [r[1] for r in rows if r[1] not in known]
        on_list: set[str] = set()
        if new:
            self.hash_address(new[0])  # refuses without the list's key: a new address cannot be checked
            if self.suppressions:  # an empty list suppresses nobody: no address need be hashed
                hashes = {self.hash_address(email): email for email in new}
                on_list = {hashes[h] for (h,) in conn.execute(_ON_LIST, (json.dumps(list(hashes)),))}
        adds, updates, consents, kept = [], [], [], 0  # consents: (subscriber id, or -1 - its place in adds)
        add_lines, update_lines = [], []
        for n, email, name, segment, cadence, topics, status, consent in rows:
            found = known.get(email)
            if found is None:
                wanted = status or "pending"
                if email in on_list and wanted not in _SUPPRESSED:
                    wanted, kept = "unsubscribed", kept + 1
                if consent and wanted not in _SUPPRESSED:
                    consents.append((-1 - len(adds), consent))
                adds.append((email, name, segment, cadence, topics, wanted, now))
                add_lines.append(n)
            else:
                old = found[1]
                wanted = status or old
                if old in _SUPPRESSED and wanted not in _SUPPRESSED:
                    wanted, kept = old, kept + 1
                if consent and wanted not in _SUPPRESSED:
                    consents.append((found[0], consent))
                updates.append((found[0], name, segment, cadence, topics, wanted, now))
                update_lines.append((n, found[0]))
        first_id = 0
        if adds:
            conn.executemany(_ADD, adds)
            first_id = self._added(len(adds))
        if updates:
            conn.executemany(_UPDATE, updates)
        recorded = 0
        if consents:  # in the records' order; an added subscriber's id is the first id plus its place
            given = [[sid if sid > 0 else first_id - 1 - sid, *consent] for sid, consent in consents]
            recorded = conn.execute(_CONSENT, {"rows": json.dumps(given), "now": now}).rowcount
        return Written({"added": len(adds), "updated": len(updates), "kept_suppressed": kept, "consents": recorded},
                       first_id, add_lines, update_lines)

    def _added(self, count: int) -> int:
        """The first id of the `count` rows just added: ids given in a row, each larger than any before
        (AUTOINCREMENT, and no other writer inside this transaction)."""
        low, high, n = self.conn.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM main.subscribers WHERE id > ?",
                                         (self.last_id,)).fetchone()
        if n != count or high - low + 1 != count:
            raise RuntimeError(f"subscribers: {count} rows added but ids {low}..{high} ({n}) found")
        self.last_id = high
        return low


@dataclass
class Written:
    """What a chunk wrote: the counts; the rows added, as the id of the first and each one's `n` in id order;
    the rows updated as (n, id)."""
    counts: dict[str, int]
    first_id: int
    added: list[int]
    updated: list[tuple[int, int]]


def chunks(records: Iterable[Mapping[str, Any]], size: int, consent: bool = False) -> Iterator[list[Row]]:
    """Records as chunks of at most `size`, in order, with their own consent (rec["consent"]) if `consent`;
    an address a second time starts a new chunk, so each record sees what the ones before it wrote (the
    second upsert of an address updates the first)."""
    chunk: list[Row] = []
    emails: set[str] = set()
    for n, rec in enumerate(records):
        item = row(n, rec, rec.get("consent") if consent else None)
        if item[1] in emails or len(chunk) >= size:
            yield chunk
            chunk, emails = [], set()
        chunk.append(item)
        emails.add(item[1])
    if chunk:
        yield chunk
