"""A person's data download: every row of every table that refers to them (found from the schema, so a new
column or table is exported without anyone remembering to), and the wording of each consent they gave."""

from __future__ import annotations

import json
from typing import Any

from .connection import Tables
from .subscribers import subscriber_target

#: The columns by which a table refers to a person
PERSON_COLUMNS = ("subscriber_id", "email")


class Export(Tables):
    def person_tables(self) -> dict[str, list[str]]:
        """Each ordinary table with a subscriber_id or email column (the subscribers table too), and its columns.
        The full-text index is left out: it holds only a copy of subscribers.email."""
        found = {}
        for row in self.query("""SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                                 AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' AND name NOT LIKE 'subscriber_search%'
                                 ORDER BY name"""):
            columns = [c["name"] for c in self.query(f"PRAGMA table_info('{row['name']}')")]
            if set(PERSON_COLUMNS) & set(columns):
                found[row["name"]] = columns
        return found

    def _order(self, table: str) -> str:
        """Rows in the order they were written: by rowid, or by the key of a WITHOUT ROWID table."""
        sql = self.query("SELECT sql FROM sqlite_master WHERE name = ?", (table,))[0]["sql"]
        if "WITHOUT ROWID" not in sql.upper():
            return "rowid"
        key = [c for c in self.query(f"PRAGMA table_info('{table}')") if c["pk"]]
        return ", ".join(c["name"] for c in sorted(key, key=lambda c: c["pk"]))

    def person_data(self, subscriber_id: int, email: str) -> dict[str, list[dict[str, Any]]]:
        """Every column of every row that refers to this person, by table; the audit log's rows about them;
        and the wording of each consent version they agreed to."""
        data: dict[str, list[dict[str, Any]]] = {}
        for table, columns in self.person_tables().items():
            if table == "subscribers":
                where, params = "id = ?", [subscriber_id]
            else:
                clauses = [(f"{c} = ?", subscriber_id if c == "subscriber_id" else email)
                           for c in PERSON_COLUMNS if c in columns]
                where, params = " OR ".join(c for c, _ in clauses), [p for _, p in clauses]
            data[table] = self.query(f"SELECT * FROM '{table}' WHERE {where} ORDER BY {self._order(table)}", params)
        # A delivery's own details and the steps it went through hang off its id, not the person's.
        data["delivery_details"] = self.query("""SELECT x.* FROM delivery_details x JOIN deliveries d ON d.id = x.id
                                                 WHERE d.subscriber_id = ? ORDER BY x.id""", (subscriber_id,))
        data["delivery_batches"] = self.query("""SELECT DISTINCT b.* FROM delivery_batches b
                                                 JOIN deliveries d ON d.batch = b.id
                                                 WHERE d.subscriber_id = ? ORDER BY b.id""", (subscriber_id,))
        data["queued_notices"] = self.query("SELECT * FROM queued_notices WHERE lower(recipient) = lower(?) "
                                            "ORDER BY id", (email,))  # a confirmation waiting for the relay
        data["audit_log"] = self.query("SELECT * FROM audit_log WHERE target = ? ORDER BY id",
                                       (subscriber_target(subscriber_id),))
        versions = sorted({r["wording_version"] for r in data.get("consent_records", []) if r["wording_version"]})
        data["consent_wordings"] = [w for v in versions for w in self.query(
            "SELECT * FROM consent_wordings WHERE version = ?", (v,))]
        return data

    def issue_processors(self, issue_ids: list[int]) -> dict[int, list[str]]:
        """Who each of these issues' messages were handed to (maildir, smtp:HOST, sendgrid), as claims noted it."""
        noted: dict[int, list[str]] = {}
        for row in self.conn.execute("SELECT issue_id, processor FROM issue_processors WHERE issue_id IN "
                                     "(SELECT value FROM json_each(?)) ORDER BY issue_id, first_at",
                                     (json.dumps(issue_ids),)):
            noted.setdefault(row[0], []).append(row[1])
        return noted

    def record_consent_wording(self, version: str, text: str, shown_at: str) -> None:
        """Keep a wording of the consent the first time it is shown; a version never changes its text."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO consent_wordings (version, text, first_shown_at) VALUES (?, ?, ?)",
                         (version, text, shown_at))
