"""The narrow ledger (m017): a delivery row of a few integers, what a whole step shares kept once per step,
the rare per-row details in a side table, and the tables that compacted issues leave behind."""

from __future__ import annotations

from sqlite_utils import Database

from .registry import migrations

#: ISO 8601 in UTC as `now_iso()` writes it; a time stored as unix seconds reads back as this.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"


def stamp_sql(x: str) -> str:
    """SQL turning an ISO time into unix seconds when it reads back the same, else leaving it as it is (exact)."""
    return (f"(CASE WHEN strftime('{ISO_FORMAT}', CAST(strftime('%s', {x}) AS INTEGER), 'unixepoch') IS {x} "
            f"THEN CAST(strftime('%s', {x}) AS INTEGER) ELSE {x} END)")


def iso_sql(x: str) -> str:
    """SQL reading a stored time back as ISO text (unix seconds are converted; older text is as it was)."""
    return f"(CASE WHEN typeof({x}) = 'integer' THEN strftime('{ISO_FORMAT}', {x}, 'unixepoch') ELSE {x} END)"


#: The ledger as it was before m017, with the columns every caller knows (`Store.deliveries()` reads it).
#: A digest's rows were planned together: their created_at is the issue's planned_at unless a detail says other.
DELIVERY_ROWS_VIEW = f"""
    CREATE VIEW delivery_rows AS
    SELECT d.id, d.issue_id, d.subscriber_id, d.status, b.name AS batch_id, b.provider_id, b.error,
           COALESCE({iso_sql('x.created_at')}, i.planned_at) AS created_at, {iso_sql('d.updated_at')} AS updated_at,
           {iso_sql('x.delivered_at')} AS delivered_at, {iso_sql('x.opened_at')} AS opened_at,
           {iso_sql('x.clicked_at')} AS clicked_at, x.attempts, x.next_attempt_at, x.deferred_since
    FROM deliveries d JOIN issues i ON i.id = d.issue_id
    LEFT JOIN delivery_batches b ON b.id = d.batch LEFT JOIN delivery_details x ON x.id = d.id"""


@migrations()
def m017_narrow_ledger(db: Database) -> None:
    # A million recipients a week made the ledger 133 bytes a recipient: two ISO times, a batch id and a
    # provider id as text on every row, and two indexes. Now a row is (id, issue, subscriber, status, step,
    # updated_at as unix seconds); a step (a claim, a recorded outcome, a skip) keeps its claim id, provider
    # id and error once for all its rows; the rare per-row values live in delivery_details; one index.
    db.execute("ALTER TABLE issues ADD COLUMN planned_at TEXT")  # when its deliveries were planned
    # An issue's rows by id: a digest's are planned in one statement, so they are one run of ids.
    db.execute("ALTER TABLE issues ADD COLUMN first_delivery INTEGER")
    db.execute("ALTER TABLE issues ADD COLUMN last_delivery INTEGER")
    db.execute("ALTER TABLE issues ADD COLUMN compacted_at TEXT")  # its deliveries are counts now (below)
    db.execute("""UPDATE issues SET (first_delivery, last_delivery) =
                  (SELECT MIN(id), MAX(id) FROM deliveries WHERE issue_id = issues.id)""")
    db.execute("""UPDATE issues SET planned_at = (SELECT MIN(created_at) FROM deliveries WHERE issue_id = issues.id)
                  WHERE kind = 'digest'""")
    db.execute("""
        CREATE TABLE delivery_batches (
            id INTEGER PRIMARY KEY,
            name TEXT,           -- the claim's id (what claim_for_sending was given)
            provider_id TEXT,    -- what the relay or API called the message(s)
            error TEXT,
            first_id INTEGER NOT NULL,  -- the ids the step was written for lie in first_id..last_id
            last_id INTEGER NOT NULL
        )""")
    db.execute("CREATE INDEX delivery_batches_first ON delivery_batches (first_id)")
    db.execute("""
        CREATE TABLE delivery_details (
            id INTEGER PRIMARY KEY,  -- the delivery's id; a row only where one of these is set
            created_at,              -- when it differs from its issue's planned_at (welcomes)
            attempts INTEGER,
            next_attempt_at TEXT,
            deferred_since TEXT,
            delivered_at,
            opened_at,
            clicked_at
        )""")
    # Old rows: one step per (issue, batch id, provider id, error) they shared, exactly as they were.
    db.execute("""CREATE TEMP TABLE m017_steps AS
                  SELECT json_array(issue_id, batch_id, provider_id, error) AS key, batch_id, provider_id, error,
                         MIN(id) AS first_id, MAX(id) AS last_id FROM deliveries
                  WHERE batch_id IS NOT NULL OR provider_id IS NOT NULL OR error IS NOT NULL
                  GROUP BY issue_id, batch_id, provider_id, error ORDER BY MIN(id)""")
    db.execute("CREATE UNIQUE INDEX temp.m017_steps_key ON m017_steps (key)")
    db.execute("""INSERT INTO delivery_batches (id, name, provider_id, error, first_id, last_id)
                  SELECT rowid, batch_id, provider_id, error, first_id, last_id FROM m017_steps""")
    db.execute("ALTER TABLE deliveries RENAME TO deliveries_m016")
    db.execute("""
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: bounces and links name a delivery by id
            issue_id INTEGER NOT NULL REFERENCES issues(id),
            subscriber_id INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            batch INTEGER,                         -- delivery_batches: the last step it went through
            updated_at NOT NULL                    -- unix seconds
        )""")
    db.execute(f"""INSERT INTO deliveries (id, issue_id, subscriber_id, status, batch, updated_at)
                   SELECT d.id, d.issue_id, d.subscriber_id, d.status, s.rowid, {stamp_sql('d.updated_at')}
                   FROM deliveries_m016 d
                   LEFT JOIN m017_steps s ON s.key = json_array(d.issue_id, d.batch_id, d.provider_id, d.error)
                   ORDER BY d.id""")
    db.execute(f"""INSERT INTO delivery_details (id, created_at, attempts, next_attempt_at, deferred_since,
                                                 delivered_at, opened_at, clicked_at)
                   SELECT d.id, CASE WHEN d.created_at IS i.planned_at THEN NULL ELSE {stamp_sql('d.created_at')} END,
                          d.attempts, d.next_attempt_at, d.deferred_since, {stamp_sql('d.delivered_at')},
                          {stamp_sql('d.opened_at')}, {stamp_sql('d.clicked_at')}
                   FROM deliveries_m016 d JOIN issues i ON i.id = d.issue_id
                   WHERE d.created_at IS NOT i.planned_at OR d.attempts IS NOT NULL OR d.next_attempt_at IS NOT NULL
                         OR d.deferred_since IS NOT NULL OR d.delivered_at IS NOT NULL OR d.opened_at IS NOT NULL
                         OR d.clicked_at IS NOT NULL
                   ORDER BY d.id""")
    db.execute("DROP TABLE deliveries_m016")  # its indexes go with it
    db.execute("DROP TABLE temp.m017_steps")
    # One index: uniqueness, and every lookup by subscriber (erase, history, welcomes, audience changes).
    db.execute("CREATE UNIQUE INDEX deliveries_subscriber_issue ON deliveries (subscriber_id, issue_id)")
    db.execute(DELIVERY_ROWS_VIEW)
    # What compaction (`ledger_retention_days`) leaves of an issue's deliveries: counts per status, and which
    # readers it reached, so selection still never brings a reader a summary twice.
    db.execute("""
        CREATE TABLE issue_counts (
            issue_id INTEGER NOT NULL REFERENCES issues(id),
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            delivered INTEGER NOT NULL DEFAULT 0,
            opened INTEGER NOT NULL DEFAULT 0,
            clicked INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (issue_id, status)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE compacted_recipients (
            subscriber_id INTEGER NOT NULL,
            issue_id INTEGER NOT NULL,
            PRIMARY KEY (subscriber_id, issue_id)
        ) WITHOUT ROWID""")
    # The report's readers who left an issue's audience, found by when they left.
    db.execute("""CREATE INDEX subscribers_left ON subscribers (unsubscribed_at)
                  WHERE status IN ('unsubscribed', 'bounced', 'complained')""")
