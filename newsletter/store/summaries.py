"""Research summaries: imported by slug (else a feed's guid, link or source URL), immutable once sent (a change
becomes a revision)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .connection import Tables, conditions, decode_topics, now_iso

SUMMARY_FIELDS = ("title", "published", "teaser", "findings", "patients", "caregivers", "clinicians",
                  "limitations", "source_url", "journal", "doi", "topics", "url")


def content_hash(record: dict[str, Any]) -> str:
    data = json.dumps({k: record.get(k) for k in SUMMARY_FIELDS}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass
class ImportCounts:
    """What an import did: new summaries, drafts changed in place, sent ones given a new revision, the rest."""
    inserted: int = 0
    updated: int = 0
    revised: int = 0
    unchanged: int = 0


class Summaries(Tables):
    def upsert_summaries(self, records: Iterable[dict[str, Any]]) -> ImportCounts:
        """Insert or update, all or nothing (one transaction).

        A summary that already went out in an issue is immutable: a changed
        import becomes a new revision that selection treats as an update.
        """
        with self.transaction() as conn:
            return self.upsert_summaries_in(conn, records)

    def upsert_summaries_in(self, conn: sqlite3.Connection, records: Iterable[dict[str, Any]]) -> ImportCounts:
        """The import's work inside the caller's transaction (a feed's pull also records its state in it)."""
        counts = ImportCounts()
        now = now_iso()
        for record in records:
            slug = self._identify(conn, record)
            values = {k: record.get(k) or "" for k in SUMMARY_FIELDS}
            values["topics"] = json.dumps(list(record.get("topics") or []), ensure_ascii=False)
            values["content_hash"] = content_hash(values)
            guid = record.get("guid") or ""
            draft = 1 if record.get("draft") else 0
            current = conn.execute("SELECT * FROM summaries WHERE slug = ? ORDER BY revision DESC LIMIT 1",
                                   (slug,)).fetchone()
            if current is not None and guid and not current["guid"]:
                conn.execute("UPDATE summaries SET guid = ? WHERE slug = ?", (guid, slug))  # identity, not content
            if current is None:
                self._insert_summary(conn, slug, 1, {**values, "guid": guid, "draft": draft}, now)
                counts.inserted += 1
            elif current["content_hash"] == values["content_hash"]:
                counts.unchanged += 1
            elif self._summary_was_sent(conn, current["id"]):
                self._insert_summary(conn, slug, current["revision"] + 1,
                                     {**values, "guid": guid or current["guid"], "draft": draft}, now)
                counts.revised += 1
            else:  # a draft that an editor already published stays published
                sets = ", ".join(f"{k} = :{k}" for k in values)
                conn.execute(f"UPDATE summaries SET {sets}, imported_at = :now WHERE id = :id",
                             {**values, "now": now, "id": current["id"]})
                counts.updated += 1
        return counts

    @staticmethod
    def _identify(conn: sqlite3.Connection, record: dict[str, Any]) -> str:
        """The slug a record belongs to: its own slug; else a feed item's guid, then its link; then the source
        URL; then the title's slug, unless that slug belongs to another feed item (then a new, numbered one)."""
        if record.get("slug"):
            return record["slug"]
        guid = record.get("guid") or ""
        lookups = [("guid = ?", guid), ("url = ? AND guid IN ('', ?)", record.get("url")),
                   ("source_url = ? AND guid IN ('', ?)", record.get("source_url"))]
        for clause, value in lookups:
            if value:
                params = (value, guid) if "guid IN" in clause else (value,)
                row = conn.execute(f"SELECT slug FROM summaries WHERE {clause} ORDER BY revision DESC LIMIT 1",
                                   params).fetchone()
                if row:
                    return row["slug"]
        base = slug = record["derived_slug"]
        number = 1
        while guid:
            row = conn.execute("SELECT guid FROM summaries WHERE slug = ? LIMIT 1", (slug,)).fetchone()
            if row is None or row["guid"] in ("", guid):
                break
            number += 1
            slug = f"{base}-{number}"
        return slug

    def publish_summaries(self, slugs: Sequence[str]) -> int:
        """Release summaries held as drafts (from a feed with `drafts = true`) to the digests."""
        with self.transaction() as conn:
            missing = [s for s in slugs if not conn.execute("SELECT 1 FROM summaries WHERE slug = ?", (s,)).fetchone()]
            if missing:
                raise LookupError(f"slug: no summary {missing[0]!r}")
            return conn.execute("UPDATE summaries SET draft = 0 WHERE draft = 1 AND slug IN "
                                "(SELECT value FROM json_each(?))", (json.dumps(list(slugs)),)).rowcount

    @staticmethod
    def _insert_summary(conn: sqlite3.Connection, slug: str, revision: int, values: dict, now: str) -> None:
        cols = ["slug", "revision", *values, "imported_at"]
        conn.execute(f"INSERT INTO summaries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [slug, revision, *values.values(), now])

    @staticmethod
    def _summary_was_sent(conn: sqlite3.Connection, summary_id: int) -> bool:
        row = conn.execute("""SELECT 1 FROM issue_summaries s JOIN issues i ON i.id = s.issue_id
                              WHERE s.summary_id = ? AND i.status IN ('sending', 'sent') LIMIT 1""",
                           (summary_id,)).fetchone()
        return row is not None

    def summaries(self, since: str | None = None, until: str | None = None,
                  topic: str | None = None) -> list[dict[str, Any]]:
        """Latest revision of each summary, newest first."""
        where, params = conditions(("s.published >= ?", since), ("s.published <= ?", until))
        rows = [decode_topics(r) for r in self.query(f"""
            SELECT s.* FROM summaries s
            WHERE s.revision = (SELECT MAX(revision) FROM summaries WHERE slug = s.slug){where}
            ORDER BY s.published DESC, s.id DESC""", params)]
        if topic:
            rows = [r for r in rows if topic.lower() in (t.lower() for t in r["topics"])]
        return rows

    def sent_slugs(self, segment: str, cadence: str) -> set[str]:
        """Slugs already carried by a live issue of this segment and cadence (any revision)."""
        rows = self.conn.execute("""
            SELECT DISTINCT s.slug FROM issue_summaries x
            JOIN issues i ON i.id = x.issue_id JOIN summaries s ON s.id = x.summary_id
            WHERE i.segment = ? AND i.cadence = ? AND i.status != 'cancelled'""", (segment, cadence))
        return {r["slug"] for r in rows}
