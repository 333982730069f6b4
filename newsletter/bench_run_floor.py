"""The whole run's floor: the least work any correct weekly SendGrid run must do here, written by hand in as few
steps as the guarantees allow, so `bench` can put the real run beside it in the same sitting.

A measuring rod, not a second implementation: it keeps every guarantee the real run keeps (a ledger row per
recipient planned in one statement before anything is sent; only readers whose consent is on record, as a
real backend requires; each batch claimed with the last-moment "still active" check and committed before its
request goes out; each answer recorded in one statement; two signed link tokens and a greeting per
recipient; bodies that are valid SendGrid requests, posted over one keep-alive connection) and nothing else:
no retry or breaker bookkeeping, no progress callbacks. It runs the same statements the store does on the
bench's scratch database (the only SQL outside newsletter/store/, named in tests/test_architecture.py).
Selection and rendering are the real ones (a fixed cost, about 0.3 s), and so are signing a batch a column at
a time (Recipients.signed) and writing its body (encode_payload): both are the cheapest ways found, so the ratio
to this floor measures what surrounds them, the dispatcher, the store and the messenger's transport."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
import uuid
from typing import Any

from .digest import DigestRunner
from .messengers.sendgrid import encode_payload
from .model import Recipients, Sender
from .tokens import Tokens

BATCH = 1000  # SendGrid's limit of personalizations per request


def iso(seconds: float) -> str:
    """A time as the store writes it in issues (now_iso's form)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


def request_body(rendered: Any, rows: list[tuple], tokens: Tokens, sender: Sender,
                 unsubscribe_base: str) -> str:
    """One SendGrid request for rows that start (delivery id, subscriber id, email, name): signed a column at a
    time (Recipients.signed, as the dispatcher does) and written by encode_payload."""
    return encode_payload(rendered, Recipients.signed(rows, tokens.link_tokens, unsubscribe_base), sender)


def floor_send(db_path: str, issues: list[dict[str, Any]], variant_for: dict[int, Any], tokens: Tokens,
               sender: Sender, site_url: str, sink_port: int) -> dict[str, float]:
    """Send every issue's audience to the HTTP sink; returns recipients, requests and the seconds spent writing
    the ledger. `variant_for[issue_id]` maps a subscriber's raw topics JSON to its Rendered (or None)."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = NORMAL")  # as the store's connections (connection.py)
    http_conn = http.client.HTTPConnection("127.0.0.1", sink_port, timeout=60)
    unsubscribe_base = site_url.rstrip("/") + "/u/"
    counts = {"recipients": 0, "requests": 0, "ledger_s": 0.0}

    def write(sql: str, params: tuple, *more: tuple[str, tuple]) -> None:
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for statement, values in ((sql, params), *more):
            conn.execute(statement, values)
        conn.execute("COMMIT")
        counts["ledger_s"] += time.perf_counter() - started

    def step(ids: list[int], name: str | None = None, provider_id: str | None = None) -> tuple[str, tuple]:
        return ("INSERT INTO delivery_batches (name, provider_id, first_id, last_id) VALUES (?, ?, ?, ?)",
                (name, provider_id, ids[0], ids[-1]))

    def flush(rendered: Any, rows: list[tuple]) -> None:
        ids = [row[0] for row in rows]
        id_list = json.dumps(ids)
        now = int(time.time())
        write(*step(ids, uuid.uuid4().hex[:12]),
              ("""UPDATE deliveries SET status = 'sending', batch = last_insert_rowid(), updated_at = ?
                  WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'
                  AND (SELECT status FROM subscribers s WHERE s.id = deliveries.subscriber_id) = 'active'""",
               (now, id_list)))
        body = request_body(rendered, rows, tokens, sender, unsubscribe_base).encode()
        http_conn.request("POST", "/v3/mail/send", body, {"Content-Type": "application/json",
                                                          "Authorization": "Bearer SG.bench"})
        answer = http_conn.getresponse()
        answer.read()
        if answer.status != 202:
            raise RuntimeError(f"floor: the sink answered {answer.status}")
        write(*step(ids, provider_id=answer.getheader("X-Message-Id")),
              ("UPDATE deliveries SET status = 'sent', batch = last_insert_rowid(), updated_at = ? "
               "WHERE id IN (SELECT value FROM json_each(?))", (now, id_list)))
        counts["recipients"] += len(rows)
        counts["requests"] += 1

    try:
        for issue in issues:
            now = int(time.time())
            first = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'deliveries'"
                                 ).fetchone()[0]
            write(*step([first]),
                  ("""INSERT OR IGNORE INTO deliveries (issue_id, subscriber_id, status, batch, updated_at)
                      SELECT ?, id, 'pending', last_insert_rowid(), ? FROM subscribers
                      WHERE segment = ? AND cadence = ? AND status = 'active' ORDER BY topics, id""",
                   (issue["id"], now, issue["segment"], issue["cadence"])),
                  ("UPDATE delivery_batches SET last_id = (SELECT MAX(id) FROM deliveries) WHERE id = ("
                   "SELECT MAX(id) FROM delivery_batches)", ()),
                  ("""UPDATE issues SET status = 'sending', planned_at = ?, first_delivery = ?,
                      last_delivery = (SELECT MAX(id) FROM deliveries) WHERE id = ?""",
                   (iso(now), first, issue["id"])))
            last = conn.execute("SELECT last_delivery FROM issues WHERE id = ?", (issue["id"],)).fetchone()[0]
            variants: dict[str, Any] = {}
            buffers: dict[int, tuple[Any, list[tuple]]] = {}
            after = first - 1
            while True:
                page = conn.execute("""SELECT d.id, d.subscriber_id, s.email, s.name, s.topics,
                                       EXISTS (SELECT 1 FROM consent_records c WHERE c.subscriber_id = d.subscriber_id)
                                       FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                                       WHERE d.id > ? AND d.id <= ? AND +d.issue_id = ? AND +d.status = 'pending'
                                       ORDER BY d.id LIMIT ?""", (after, last, issue["id"], BATCH)).fetchall()
                if not page:
                    break
                after = page[-1][0]
                for row in page:
                    topics = row[4]
                    if not row[5]:
                        continue  # no consent on record (the real run marks them skipped)
                    if topics not in variants:
                        variants[topics] = variant_for[issue["id"]](json.loads(topics or "[]"))
                    rendered = variants[topics]
                    if rendered is None:
                        continue  # nothing for these topics (the real run marks them skipped)
                    buffer = buffers.setdefault(id(rendered), (rendered, []))[1]
                    buffer.append(row)
                    if len(buffer) >= BATCH:
                        flush(*buffers.pop(id(rendered)))
            for rendered, rows in buffers.values():
                flush(rendered, rows)
            write("UPDATE issues SET status = 'sent', sent_at = ? WHERE id = ?",
                  (iso(time.time()), issue["id"]))
    finally:
        http_conn.close()
        conn.close()
    return counts


def run_floor(runner: DigestRunner, cadence: str, now: Any, sender: Sender, sink_port: int) -> dict[str, float]:
    """Build the period's issues as the real run does (selection, one render per variant), then floor_send."""
    report = runner.run(cadence, now, send=False)
    issues = [runner.store.get_issue(entry["id"]) for entry in report.created]
    issues = [issue for issue in issues if issue and issue["status"] == "approved"]
    variant_for = {issue["id"]: runner.variant_renderer(issue) for issue in issues}
    return floor_send(str(runner.config.database), issues, variant_for, runner.tokens, sender,
                      runner.config.site_url, sink_port)
