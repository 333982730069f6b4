"""The editors' view of subscribers: a search that stays indexed at a million rows, one subscriber's record,
and the changes an editor may make, each written with its audit row in one transaction.

Search. The address is matched as typed (lower-cased, as every stored address is):
- three characters or more: anywhere in the address, through `subscriber_search`, an FTS5 table with the
  trigram tokenizer kept in step with `subscribers` by triggers (m012). Each query reads the posting lists
  of its trigrams, never the table; results come in id order, so a page stops after `limit` rows.
- one or two characters (no trigram to look up): the start of the address, a range on the UNIQUE index
  on email (`email >= prefix AND email < next string after the prefix`).
A substring search by LIKE '%...%' would read every row on each keystroke; a domain-only search would not
find "smith" in "j.smith@...". The trigram index costs about the size of the addresses again on disk and a
little per insert (docs/benchmarks.md has both at 100k rows).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterator

from .audit import AuditLog
from .connection import conditions, decode_topics, now_iso
from .subscribers import AUDIENCE_CHANGED, Subscribers, subscriber_target

#: Characters below which a search is a prefix search (a trigram needs three).
TRIGRAM = 3


class Refused(ValueError):
    """An editor's change that the rules do not allow (the message says which rule)."""


def next_string(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix` (None: there is none).
    SQLite compares TEXT by UTF-8 bytes, which orders as code points do; surrogates are skipped."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def search_key(text: str) -> str:
    """What the search compares with the stored (normalised, lower-case) addresses."""
    return text.strip().lower()


def fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class Directory(Subscribers, AuditLog):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Connect the search table at open: connected lazily, its first use inside a sign-up's INSERT (by the
        # trigger) would re-prepare that statement, so a new address would do visibly more than a known one.
        self.conn.execute("SELECT rowid FROM subscriber_search WHERE rowid = 0").fetchall()

    def search_subscribers(self, text: str = "", status: str | None = None, segment: str | None = None,
                           cadence: str | None = None, topic: str | None = None, after_id: int = 0,
                           limit: int = 50) -> list[dict[str, Any]]:
        """One page of subscribers matching every given filter, in id order, after `after_id`."""
        key = search_key(text)
        where, params = conditions(("s.status = ?", status), ("s.segment = ?", segment), ("s.cadence = ?", cadence),
                                   ("EXISTS (SELECT 1 FROM json_each(s.topics) WHERE value = ?)", topic))
        if len(key) >= TRIGRAM:
            sql = f"""SELECT s.* FROM subscriber_search CROSS JOIN subscribers s ON s.id = subscriber_search.rowid
                      WHERE subscriber_search MATCH ? AND subscriber_search.rowid > ?{where}
                      ORDER BY subscriber_search.rowid LIMIT ?"""
            params = [fts_phrase(key), after_id, *params, limit]
        elif key:
            upper = next_string(key)
            bound = " AND s.email < ?" if upper is not None else ""
            # INDEXED BY: the range on the address, not a walk of every row in id order looking for it.
            sql = f"""SELECT s.* FROM subscribers s INDEXED BY sqlite_autoindex_subscribers_1
                      WHERE s.email >= ?{bound} AND s.id > ?{where} ORDER BY s.id LIMIT ?"""
            params = [key, *([upper] if upper is not None else []), after_id, *params, limit]
        else:
            sql = f"SELECT s.* FROM subscribers s WHERE s.id > ?{where} ORDER BY s.id LIMIT ?"
            params = [after_id, *params, limit]
        return [decode_topics(r) for r in self.query(sql, params)]

    def iter_search(self, page: int = 1000, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every subscriber of a filtered view, a page at a time (for the CSV export)."""
        after = 0
        while True:
            rows = self.search_subscribers(after_id=after, limit=page, **filters)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def table_bytes(self, prefix: str) -> int:
        """Bytes on disk of the tables and indexes whose name starts with `prefix` (the benchmark reports the
        search index's size)."""
        return self.query("SELECT COALESCE(SUM(pgsize), 0) AS n FROM dbstat WHERE name >= ? AND name < ?",
                          (prefix, next_string(prefix) or prefix + "\U0010ffff"))[0]["n"]

    def manual_suppression(self, subscriber_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM manual_suppressions WHERE subscriber_id = ?", (subscriber_id,))
        return rows[0] if rows else None

    # -- changes, each with its audit row ------------------------------------------------------------

    def _locked_subscriber(self, conn: sqlite3.Connection, subscriber_id: int) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
        if row is None:
            raise LookupError(f"subscriber {subscriber_id}: no such subscriber")
        return decode_topics(dict(row))

    def _audit(self, conn: sqlite3.Connection, actor: str, action: str, subscriber_id: int,
               detail: dict[str, Any]) -> None:
        self.record_audit(actor, action, subscriber_target(subscriber_id), detail, conn=conn)

    def editor_set_preferences(self, subscriber_id: int, segment: str, cadence: str, topics: list[str],
                               actor: str) -> dict[str, Any]:
        """Change segment, cadence and topics; returns what changed (field -> [old, new]), nothing if nothing."""
        now = now_iso()
        with self.transaction() as conn:
            old = self._locked_subscriber(conn, subscriber_id)
            new = {"segment": segment, "cadence": cadence, "topics": topics}
            changed = {k: [old[k], v] for k, v in new.items() if old[k] != v}
            if changed:
                conn.execute(f"""UPDATE subscribers SET {AUDIENCE_CHANGED}, segment = ?, cadence = ?, topics = ?,
                                 updated_at = ? WHERE id = ?""",
                             (segment, cadence, now, segment, cadence, json.dumps(topics, ensure_ascii=False), now,
                              subscriber_id))
                self._audit(conn, actor, "subscriber.preferences", subscriber_id, changed)
        return changed

    def editor_suppress(self, subscriber_id: int, reason: str, actor: str) -> None:
        """Stop mail to an active or pending subscriber, with the editor's reason."""
        reason = " ".join(reason.split())
        if not reason:
            raise Refused("reason: say why the address is suppressed")
        now = now_iso()
        with self.transaction() as conn:
            old = self._locked_subscriber(conn, subscriber_id)
            if old["status"] not in ("active", "pending"):
                raise Refused(f"subscriber {subscriber_id}: is {old['status']} already")
            conn.execute("UPDATE subscribers SET status = 'unsubscribed', updated_at = ?, unsubscribed_at = ? "
                         "WHERE id = ?", (now, now, subscriber_id))
            # after the UPDATE, whose trigger forgets an older row
            conn.execute("""INSERT OR REPLACE INTO manual_suppressions (subscriber_id, reason, editor, created_at)
                            VALUES (?, ?, ?, ?)""", (subscriber_id, reason, actor, now))
            self._audit(conn, actor, "subscriber.suppress", subscriber_id,
                        {"status": [old["status"], "unsubscribed"], "reason": reason})

    def editor_lift(self, subscriber_id: int, actor: str, bounce_confirmed: bool = False) -> str:
        """Undo a suppression an editor made, or (with `bounce_confirmed`) a bounce; never a spam report, never
        the reader's own unsubscribe. Returns the new status (active if they had confirmed, else pending)."""
        now = now_iso()
        with self.transaction() as conn:
            old = self._locked_subscriber(conn, subscriber_id)
            manual = conn.execute("SELECT * FROM manual_suppressions WHERE subscriber_id = ?",
                                  (subscriber_id,)).fetchone()
            status = old["status"]
            if status == "complained":
                raise Refused("the reader reported the digest as spam: no editor can lift that")
            if status == "bounced" and not bounce_confirmed:
                raise Refused("the address bounced: tick the box to confirm it works again")
            if status == "unsubscribed" and manual is None:
                raise Refused("the reader unsubscribed themselves: only their own confirmation brings them back")
            if status not in ("unsubscribed", "bounced"):
                raise Refused(f"subscriber {subscriber_id}: is {status}; there is nothing to lift")
            new = "active" if old["confirmed_at"] else "pending"
            conn.execute("UPDATE subscribers SET status = ?, updated_at = ?, unsubscribed_at = NULL WHERE id = ?",
                         (new, now, subscriber_id))  # its trigger forgets the manual suppression
            conn.execute("DELETE FROM suppressions WHERE email_hash = ?", (self.suppression_hash(old["email"]),))
            self._audit(conn, actor, "subscriber.lift", subscriber_id, {"status": [status, new]})
        return new

    def editor_erase(self, subscriber_id: int, actor: str) -> None:
        """Erase the person (store.remove_subscriber: a hash stays so no import re-adds them); their audit rows
        keep that something happened, without the details."""
        row = self.get_subscriber(id=subscriber_id)
        if row is None:
            raise LookupError(f"subscriber {subscriber_id}: no such subscriber")
        with self.transaction() as conn:
            self.remove_subscriber(row["email"], reason="erased by an editor")
            self._audit(conn, actor, "subscriber.erase", subscriber_id, {})
