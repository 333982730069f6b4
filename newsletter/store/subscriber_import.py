"""An import of subscribers streamed into ONE transaction, a chunk at a time, so memory stays flat however long
the file and `--strict` can still keep nothing.

Each chunk is written by subscriber_writes.py (the rules of every upsert). What only an import does:
- a second record for an address already in this import is not written but reported as (line, reason); which
  subscribers this import wrote, and from which line, lives in temporary tables, not in memory: a row per
  chunk for the subscribers it added (their ids run on from the chunk's first, their lines a JSON array),
  a row per subscriber it updated;
- the editors' search index (`subscriber_search`, kept in step by triggers on `subscribers`, m012) is not
  updated row by row: its triggers are dropped inside the import's transaction, the rows the import added are
  indexed by one statement at the end, and the triggers created again from their own stored SQL, all before
  the commit; so no reader ever sees the index out of step with the table, and a rollback (--strict, a
  crash) restores both as they were. An import changes no address and deletes no row, so the rows it added
  are all the index needs.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any, Callable, Iterable, Iterator, Mapping

from .connection import now_iso
from .consent import Consent
from .subscriber_writes import Row, Writer, row

_SEEN = ("CREATE TEMP TABLE IF NOT EXISTS import_added (first_id INTEGER PRIMARY KEY, lines TEXT NOT NULL)",
         "CREATE TEMP TABLE IF NOT EXISTS import_updated (id INTEGER PRIMARY KEY, line INTEGER NOT NULL)")
#: The chunk's known addresses (Writer.known), each with the line this import first wrote it from, if it did:
#: an id above :start was added by it (the line from its chunk's array), one at or below it may be updated.
_KNOWN_SEEN = """SELECT s.email, s.id, s.status, CASE WHEN s.id > :start THEN
                     (SELECT a.lines ->> (s.id - a.first_id) FROM temp.import_added a WHERE a.first_id <= s.id
                      ORDER BY a.first_id DESC LIMIT 1)
                 ELSE (SELECT u.line FROM temp.import_updated u WHERE u.id = s.id) END
                 FROM json_each(:emails) j JOIN main.subscribers s ON s.email = j.value"""


class ImportRefused(Exception):
    """An import its caller refused once every record was read: nothing of it was kept."""

    def __init__(self, reason: str, duplicates: list[tuple[int, str]]):
        super().__init__(reason)
        self.duplicates = duplicates


class SubscriberImport(Consent):
    def import_subscribers(self, records: Iterable[dict[str, Any]], refuse: Callable[[list[tuple[int, str]]], str]
                           = lambda duplicates: "", chunk: int = 2000) -> dict[str, Any]:
        """Records (each with the `line` it came from, and its `consent` if any) written as
        `upsert_subscribers_with_consent` writes them, `chunk` at a time, in one transaction.

        A second record for an address already in this import comes back in `duplicates` as (line, reason).
        When the records are all read, `refuse(duplicates)` may name a reason to keep nothing (--strict with
        bad rows): everything is rolled back and ImportRefused raised with that reason."""
        counts: dict[str, Any] = {"added": 0, "updated": 0, "kept_suppressed": 0, "consents": 0}
        duplicates: list[tuple[int, str]] = []
        with self.transaction() as conn, _page_cache(conn, IMPORT_CACHE_KIB):
            for sql in _SEEN:
                conn.execute(sql)
            _forget(conn)
            writer = Writer(conn, now_iso(), self.suppression_hash)
            start = writer.last_id
            index = SearchIndexPause(conn, start)
            for rows, repeats in _chunks(records, chunk):
                known = writer.known(rows, _KNOWN_SEEN, start=start)
                earlier = {email: found[2] for email, found in known.items() if found[2] is not None}
                if earlier:
                    duplicates += [(r[0], f"email: {r[1]} already on line {earlier[r[1]]}")
                                   for r in rows if r[1] in earlier]
                    rows = [r for r in rows if r[1] not in earlier]
                duplicates += [(line, f"email: {email} already on line {earlier.get(email, first)}")
                               for line, email, first in repeats]
                written = writer.write(rows, known)
                for key, value in written.counts.items():
                    counts[key] += value
                if written.added:
                    conn.execute("INSERT INTO temp.import_added VALUES (?, ?)",
                                 (written.first_id, json.dumps(written.added)))
                if written.updated:
                    conn.executemany("INSERT INTO temp.import_updated (line, id) VALUES (?, ?)", written.updated)
            _forget(conn)
            reason = refuse(duplicates)
            if reason:
                raise ImportRefused(reason, duplicates)
            index.resume(counts["added"])
        return {**counts, "duplicates": duplicates}


#: The import's page cache, in KiB (SQLite's default is 2 MB). The addresses arrive in no useful order for the
#: unique index on them, so each insert lands on another of its pages: with the default cache a million rows
#: spill and re-read most of them (24-26 s for a million new rows), with 64 MB the index stays in memory
#: (about 20 s). SQLite allocates cache pages as it fills them: a small import takes no more than before.
IMPORT_CACHE_KIB = 64 * 1024


@contextlib.contextmanager
def _page_cache(conn: sqlite3.Connection, kib: int) -> Iterator[None]:
    """The connection's page cache at `kib` for the block, then as it was."""
    before = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size = {-int(kib)}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size = {int(before)}")


def _forget(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM temp.import_added")
    conn.execute("DELETE FROM temp.import_updated")


def _chunks(records: Iterable[Mapping[str, Any]], size: int) -> Iterator[tuple[list[Row], list[tuple[int, str, int]]]]:
    """Records as chunks of at most `size`, each with the records that repeat an address earlier in the same
    chunk as (line, address, line of the earlier one)."""
    rows: list[Row] = []
    lines: dict[str, int] = {}
    repeats: list[tuple[int, str, int]] = []
    for rec in records:
        email, line = rec["email"], rec["line"]
        if email in lines:
            repeats.append((line, email, lines[email]))
            continue
        lines[email] = line
        rows.append(row(line, rec, rec.get("consent")))
        if len(rows) >= size:
            yield rows, repeats
            rows, lines, repeats = [], {}, []
    if rows or repeats:
        yield rows, repeats


class SearchIndexPause:
    """The search index's triggers dropped for the rest of the caller's transaction, until `resume`.

    While it indexes the new rows, FTS5 keeps up to 4 MB of new terms in memory rather than its default 1 MB:
    it writes a segment each time they fill and merges every few segments into one, so four times fewer
    segments to merge (about half the indexing time at a million rows). That is FTS5's `hashsize` option,
    in its source since 2015 though its documentation does not list it; an SQLite without it indexes the
    same rows at the default size. The size is set back as it was before the commit."""

    HASHSIZE = 4 * 1024 * 1024
    DEFAULT_HASHSIZE = 1024 * 1024  # FTS5_DEFAULT_HASHSIZE

    def __init__(self, conn: sqlite3.Connection, last_id: int):
        """`last_id`: the largest subscriber id before the import (Writer.last_id at its start)."""
        self.conn = conn
        self.triggers = conn.execute("""SELECT name, sql FROM sqlite_master WHERE type = 'trigger'
                                        AND tbl_name = 'subscribers' AND sql LIKE '%subscriber_search%'
                                        ORDER BY name""").fetchall()
        self.last_id = last_id
        for name, _ in self.triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        configured = conn.execute("SELECT v FROM subscriber_search_config WHERE k = 'hashsize'").fetchone()
        self.hashsize = configured[0] if configured else None

    def resume(self, added: int) -> None:
        """Index the rows added since (ids are only ever larger: AUTOINCREMENT), in id order; then the
        triggers as they were."""
        if added:
            self._hashsize(self.HASHSIZE)
            # In id order: FTS5 appends a rising rowid to its pending lists, any other order flushes them.
            self.conn.execute("INSERT INTO subscriber_search (rowid, email) SELECT id, email FROM subscribers "
                              "WHERE id > ? ORDER BY id", (self.last_id,))
            self._hashsize(self.hashsize or self.DEFAULT_HASHSIZE)
        for _, sql in self.triggers:
            self.conn.execute(sql)

    def _hashsize(self, size: int) -> None:
        try:
            self.conn.execute("INSERT INTO subscriber_search (subscriber_search, rank) VALUES ('hashsize', ?)",
                              (size,))
        except sqlite3.OperationalError:  # an FTS5 without the option: only that statement is undone
            pass
