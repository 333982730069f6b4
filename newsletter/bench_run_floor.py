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
to this floor measures what surrounds them, the dispatcher, the store and the messenger's transport.

With workers (`bench --messenger floor --workers N`, the floor beside `digest run --workers N`): N worker
processes start (spawned, a fresh interpreter each, as workers.py starts them, and before the first plan, as
the real run does) while every issue is planned in this process; then each sends its own run of every
issue's ids, rendering what it meets, on connections of its own; SQLite serialises their write transactions
as it does the real workers'."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import resource
import sqlite3
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

from .context import Context
from .digest import DigestRunner
from .messengers.sendgrid import encode_payload
from .model import Recipients, Sender
from .render import Renderer, issue_variants
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


def _connect(db_path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = NORMAL")  # as the store's connections (connection.py)
    return conn


class _Ledger:
    """Write transactions on one connection, timed (the bench's ledger s)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn, self.seconds = conn, 0.0

    def write(self, sql: str, params: tuple, *more: tuple[str, tuple]) -> None:
        started = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        for statement, values in ((sql, params), *more):
            self.conn.execute(statement, values)
        self.conn.execute("COMMIT")
        self.seconds += time.perf_counter() - started


def _step(ids: list[int], name: str | None = None, provider_id: str | None = None) -> tuple[str, tuple]:
    return ("INSERT INTO delivery_batches (name, provider_id, first_id, last_id) VALUES (?, ?, ?, ?)",
            (name, provider_id, ids[0], ids[-1]))


def plan(ledger: _Ledger, issue: dict[str, Any]) -> tuple[int, int]:
    """An issue's ledger rows in one statement, before anything is sent: its (first, last) delivery id."""
    conn, now = ledger.conn, int(time.time())
    first = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'deliveries'"
                         ).fetchone()[0]
    ledger.write(*_step([first]),
                 ("""INSERT OR IGNORE INTO deliveries (issue_id, subscriber_id, status, batch, updated_at)
                     SELECT ?, id, 'pending', last_insert_rowid(), ? FROM subscribers
                     WHERE segment = ? AND cadence = ? AND status = 'active' ORDER BY topics, id""",
                  (issue["id"], now, issue["segment"], issue["cadence"])),
                 ("UPDATE delivery_batches SET last_id = (SELECT MAX(id) FROM deliveries) WHERE id = ("
                  "SELECT MAX(id) FROM delivery_batches)", ()),
                 ("""UPDATE issues SET status = 'sending', planned_at = ?, first_delivery = ?,
                     last_delivery = (SELECT MAX(id) FROM deliveries) WHERE id = ?""",
                  (iso(now), first, issue["id"])))
    return first, conn.execute("SELECT last_delivery FROM issues WHERE id = ?", (issue["id"],)).fetchone()[0]


def send_part(db_path: str, part: list[tuple[int, int, int]], variant_for: dict[int, Any], tokens: Tokens,
              sender: Sender, site_url: str, sink_port: int) -> dict[str, float]:
    """Send the planned deliveries of each (issue id, first id, last id) in `part` to the HTTP sink, on
    connections of its own; returns recipients, requests and the seconds spent writing the ledger.
    `variant_for[issue_id]` maps a subscriber's topics (a list) to its Rendered (None: nothing for them)."""
    conn = _connect(db_path)
    ledger = _Ledger(conn)
    http_conn = http.client.HTTPConnection("127.0.0.1", sink_port, timeout=60)
    unsubscribe_base = site_url.rstrip("/") + "/u/"
    counts = {"recipients": 0, "requests": 0}

    def flush(rendered: Any, rows: list[tuple]) -> None:
        ids = [row[0] for row in rows]
        id_list = json.dumps(ids)
        now = int(time.time())
        ledger.write(*_step(ids, uuid.uuid4().hex[:12]),
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
        ledger.write(*_step(ids, provider_id=answer.getheader("X-Message-Id")),
                     ("UPDATE deliveries SET status = 'sent', batch = last_insert_rowid(), updated_at = ? "
                      "WHERE id IN (SELECT value FROM json_each(?))", (now, id_list)))
        counts["recipients"] += len(rows)
        counts["requests"] += 1

    try:
        for issue_id, first, last in part:
            variants: dict[str, Any] = {}
            buffers: dict[int, tuple[Any, list[tuple]]] = {}
            after = first - 1
            while True:
                page = conn.execute("""SELECT d.id, d.subscriber_id, s.email, s.name, s.topics,
                                       EXISTS (SELECT 1 FROM consent_records c WHERE c.subscriber_id = d.subscriber_id)
                                       FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                                       WHERE d.id > ? AND d.id <= ? AND +d.issue_id = ? AND +d.status = 'pending'
                                       ORDER BY d.id LIMIT ?""", (after, last, issue_id, BATCH)).fetchall()
                if not page:
                    break
                after = page[-1][0]
                for row in page:
                    if not row[5]:
                        continue  # no consent on record (the real run marks them skipped)
                    topics = row[4]
                    if topics not in variants:
                        variants[topics] = variant_for[issue_id](json.loads(topics or "[]"))
                    rendered = variants[topics]
                    if rendered is None:
                        continue  # nothing for these topics (the real run marks them skipped)
                    buffer = buffers.setdefault(id(rendered), (rendered, []))[1]
                    buffer.append(row)
                    if len(buffer) >= BATCH:
                        flush(*buffers.pop(id(rendered)))
            for rendered, rows in buffers.values():
                flush(rendered, rows)
    finally:
        http_conn.close()
        conn.close()
    return {**counts, "ledger_s": ledger.seconds}


def _floor_worker(end: Connection, config: Any, secret: str, sender: Sender, sink_port: int) -> None:
    """A worker process of the floor: its store connection, renderer and signer made as soon as it starts (a
    worker of `digest run --workers` starts while the parent plans, workers.RangeWorker), then the part the
    parent sends it, rendering what it meets; it answers with its counts, CPU time, peak RSS and compiles."""
    context = Context(config)
    renderer = Renderer.from_config(config)
    tokens = Tokens(secret)
    issues, part = end.recv()
    variant_for = {issue["id"]: issue_variants(renderer, issue, context.store.issue_summaries(issue["id"]),
                                               context.segments[issue["segment"]]) for issue in issues}
    counts = send_part(str(config.database), part, variant_for, tokens, sender, config.site_url, sink_port)
    context.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    end.send({**counts, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
              "mjml": renderer.stats.counts["mjml"], "premailer": renderer.stats.counts["premailer"],
              "render_s": sum(renderer.stats.seconds.values()), "pid": os.getpid()})


def _start_workers(count: int, config: Any, secret: str, sender: Sender,
                   sink_port: int) -> list[tuple[multiprocessing.Process, Connection]]:
    # spawn: a fresh interpreter each, nothing of this process inherited (its SQLite connection above all)
    spawn = multiprocessing.get_context("spawn")
    started = []
    for _ in range(count):
        ours, theirs = spawn.Pipe()
        process = spawn.Process(target=_floor_worker, args=(theirs, config, secret, sender, sink_port), daemon=True)
        process.start()
        theirs.close()
        started.append((process, ours))
    return started


def _results(started: list[tuple[multiprocessing.Process, Connection]]) -> list[dict[str, Any]]:
    done = []
    for process, end in started:
        try:
            done.append(end.recv())
        except EOFError:
            process.join()
            raise RuntimeError(f"floor: worker {process.pid} died (exit code {process.exitcode})") from None
        process.join()
    if len({d["pid"] for d in done}) != len(started):
        raise RuntimeError("floor: two parts were sent by one process")
    return done


def split(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    """Ids first..last cut into `parts` runs as even as ids allow (some may be empty: first > last)."""
    size = -(-(last - first + 1) // parts)
    return [(first + k * size, min(last, first + (k + 1) * size - 1)) for k in range(parts)]


def floor_send(runner: DigestRunner, issues: list[dict[str, Any]], secret: str, sender: Sender, sink_port: int,
               workers: int = 1) -> dict[str, Any]:
    """Plan every issue, send its deliveries (in this process, or cut by id into `workers` runs, one per
    worker process, as `digest run --workers` does), then mark it sent. Returns recipients, requests, the
    seconds spent writing the ledger (summed over processes) and, with workers, their CPU seconds, peak RSS
    and compiles."""
    config = runner.config
    conn = _connect(str(config.database))
    ledger = _Ledger(conn)
    started = _start_workers(workers, config, secret, sender, sink_port) if workers > 1 else []
    try:
        planned = [(issue["id"], *plan(ledger, issue)) for issue in issues]
        if workers == 1:
            variant_for = {issue["id"]: runner.variant_renderer(issue) for issue in issues}
            done = [send_part(str(config.database), planned, variant_for, runner.tokens, sender, config.site_url,
                              sink_port)]
        else:
            parts: list[list[tuple[int, int, int]]] = [[] for _ in range(workers)]
            for issue_id, first, last in planned:
                for k, (low, high) in enumerate(split(first, last, workers)):
                    parts[k].append((issue_id, low, high))
            for (_, end), part in zip(started, parts):
                end.send((issues, part))
            done = _results(started)
        for issue_id, _, _ in planned:
            ledger.write("UPDATE issues SET status = 'sent', sent_at = ? WHERE id = ?", (iso(time.time()), issue_id))
    finally:
        conn.close()
        for process, end in started:
            end.close()
            if process.is_alive():
                process.terminate()
    totals: dict[str, Any] = {key: sum(d[key] for d in done) for key in ("recipients", "requests", "ledger_s")}
    totals["ledger_s"] += ledger.seconds
    if workers > 1:
        totals.update({key: sum(d[key] for d in done) for key in ("cpu_s", "mjml", "premailer", "render_s")})
        totals["worker_rss_mb"] = [round(d["rss_mb"], 1) for d in done]
    return totals


def run_floor(runner: DigestRunner, cadence: str, now: Any, sender: Sender, sink_port: int, secret: str,
              workers: int = 1) -> dict[str, Any]:
    """Build the period's issues as the real run does (selection), then floor_send. `secret`: the one
    `runner.tokens` was made from (a worker process makes its own)."""
    report = runner.run(cadence, now, send=False)
    issues = [runner.store.get_issue(entry["id"]) for entry in report.created]
    issues = [issue for issue in issues if issue and issue["status"] == "approved"]
    return floor_send(runner, issues, secret, sender, sink_port, workers)
