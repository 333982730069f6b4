"""Kill -9 a real `newsletter digest run` at several points, run it again, and count what arrived.

The SMTP server runs in this process (a thread), so it outlives each killed
child and holds the truth about what was handed over. After the last run to
completion every subscriber has exactly one message, or is listed as unknown
(with at most one): never two, and never none without being unknown.
With --workers: one worker killed while the server holds its message, and the
parent killed (its workers die with it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from newsletter import bootstrap
from newsletter.sources.summaries import read_sources
from tests.conftest import SAMPLE_NOW

SEGMENTS = ("patients", "caregivers", "clinicians")
AUDIENCE = 240
BATCH = 10
#: (messages the server receives in that run before the kill, how): "inside" kills while the
#: server holds a message it has not acknowledged yet; "after" kills from another thread once
#: the count is reached, wherever the child is by then.
KILLS = [(1, "inside"), (37, "after"), (58, "inside"), (45, "after")]


def digest_run(config_path, log_path, *extra: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-c", "from newsletter.cli import cli; cli()", "--config",
                                 str(config_path), "digest", "run", "--now", SAMPLE_NOW.isoformat(), *extra],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def smtp_site(make_site, smtp_server):
    ctx = make_site(backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                    smtp_security="none", smtp_batch_size=BATCH)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers([{"email": f"member{i:04d}@example.org", "name": f"Member {i}",
                                   "segment": SEGMENTS[i % 3], "cadence": "weekly", "topics": [], "status": "active"}
                                  for i in range(AUDIENCE)])
    return ctx


def test_sigkill_at_several_points_then_rerun_never_sends_twice_nor_loses_anyone(make_site, smtp_server, tmp_path):
    ctx = smtp_site(make_site, smtp_server)
    audience = {s["email"] for s in ctx.store.subscribers(status="active")}
    config_path = ctx.config.source
    unacknowledged: list[str] = []  # recipients of messages the server held when the child died

    for number, (count, how) in enumerate(KILLS):
        target = smtp_server.count() + count
        log = tmp_path / f"run{number}.log"
        proc = digest_run(config_path, log)
        if how == "inside":
            def kill_inside(msg, proc=proc, target=target):
                if smtp_server.count() == target:
                    unacknowledged.extend(msg.rcpt_tos)
                    proc.kill()  # before this message's "250" goes out
            smtp_server.on_message = kill_inside
            killer = None
        else:
            smtp_server.on_message = None
            killer = threading.Thread(target=lambda proc=proc, target=target:
                                      smtp_server.wait_for(target, 120) and proc.kill())
            killer.start()
        proc.wait(timeout=120)
        if killer is not None:
            killer.join(10)
        smtp_server.on_message = None
        assert proc.returncode == -9, f"run {number} was not killed: {log.read_text(errors='replace')}"

    final_log = tmp_path / "final.log"
    final = digest_run(config_path, final_log)
    final.wait(timeout=120)
    output = final_log.read_text(errors="replace")
    assert final.returncode in (0, 1), output  # ran to its end (1 would flag what it reports as unknown)
    last = output.strip().splitlines()[-1]
    assert last.startswith("sent ") and ", failed 0," in last, output

    received = Counter(r for msg in smtp_server.messages for r in msg.rcpt_tos)
    rows = ctx.store.deliveries()
    status = {r["email"]: r["status"] for r in rows}
    assert len(status) == len(rows) == AUDIENCE and set(status) == audience  # one delivery each
    assert set(received) <= audience
    assert max(received.values()) == 1, "someone got two messages"
    assert set(status.values()) <= {"sent", "unknown"}
    for email in audience:
        if status[email] == "sent":
            assert received[email] == 1, f"{email}: marked sent but got {received[email]} messages"
        else:
            assert received[email] <= 1
    unknown = [e for e in audience if status[e] == "unknown"]
    assert len(unknown) <= len(KILLS) * BATCH  # at most the batch in flight at each kill
    # A message the server held, unacknowledged, when its sender died is never sent again.
    assert len(unacknowledged) == 2
    assert all(status[e] == "unknown" and received[e] == 1 for e in unacknowledged)
    assert sum(received.values()) == smtp_server.count()


# -- with workers ----------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                after_name = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(after_name[1]) == pid and after_name[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def client_pid(port: int, candidates: list[int]) -> int:
    """Which of `candidates` holds the loopback TCP socket whose own port is `port` (/proc/net/tcp, then fds)."""
    inodes = {line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
              if int(line.split()[1].split(":")[1], 16) == port}
    for pid in candidates:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no process among {candidates} holds the connection from port {port}")


def resume_and_check(ctx, config_path, tmp_path, in_flight: dict[int, str], smtp_server) -> None:
    """Run to the end with two workers: what was in flight is unknown (at most one copy each), the rest sent
    exactly once, nobody twice."""
    final_log = tmp_path / "final.log"
    final = digest_run(config_path, final_log, "--workers", "2")
    final.wait(timeout=120)
    output = final_log.read_text(errors="replace")
    assert final.returncode == (1 if in_flight else 0), output  # 1: it reports the unknown ones
    last = output.strip().splitlines()[-1]
    assert last.startswith("sent ") and ", failed 0," in last and f"({len(in_flight)} left unknown" in (
        last if in_flight else f"({len(in_flight)} left unknown"), output
    received = Counter(r for msg in smtp_server.messages for r in msg.rcpt_tos)
    status = {r["email"]: r["status"] for r in ctx.store.deliveries()}
    assert len(status) == AUDIENCE and max(received.values()) == 1, "someone got two messages"
    assert {e for e, s in status.items() if s == "unknown"} == set(in_flight.values())
    assert all(status[e] == "sent" and received[e] == 1 for e in status if e not in set(in_flight.values()))
    assert {i["status"] for i in ctx.store.issues()} <= {"sent", "sending"}  # sending: holds unknown ones


def test_a_worker_killed_mid_batch_stops_the_run_and_the_next_run_sends_the_rest_once(make_site, smtp_server,
                                                                                         tmp_path):
    ctx = smtp_site(make_site, smtp_server)
    config_path = ctx.config.source
    log = tmp_path / "killed.log"
    proc = digest_run(config_path, log, "--workers", "2")
    held: dict[str, object] = {}

    def kill_inside(msg):  # before this message's "250" goes out: the worker that sent it dies
        if not held and smtp_server.count() == 25:
            pid = client_pid(msg.peer[1], children(proc.pid))
            held.update(pid=pid, rcpts=list(msg.rcpt_tos))
            os.kill(pid, signal.SIGKILL)

    smtp_server.on_message = kill_inside
    proc.wait(timeout=120)
    smtp_server.on_message = None
    output = log.read_text(errors="replace")
    assert proc.returncode == 1 and held, output
    line = output.strip().splitlines()[-1]
    found = re.fullmatch(r"Error: worker [12] of 2 \(issue (\d+), deliveries (\d+)-(\d+)\) was killed by SIGKILL: "
                         r"the batch it had claimed becomes unknown at the next run, the rest of its range is still "
                         r"pending", line)
    assert found, output
    issue_id, first, last = map(int, found.groups())
    assert not alive(held["pid"]) and not children(proc.pid)
    # What stays `sending` is the killed worker's batch alone (the other recorded its batch, then stopped).
    in_flight = {r["id"]: r["email"] for r in ctx.store.deliveries(status="sending")}
    assert 0 < len(in_flight) <= BATCH and all(first <= i <= last for i in in_flight)
    assert set(held["rcpts"]) <= set(in_flight.values())
    assert {r["issue_id"] for r in ctx.store.deliveries(status="sending")} == {issue_id}
    resume_and_check(ctx, config_path, tmp_path, in_flight, smtp_server)
    assert Counter(r for m in smtp_server.messages for r in m.rcpt_tos)[held["rcpts"][0]] == 1


def test_killing_the_parent_kills_its_workers_and_the_next_run_sends_the_rest_once(make_site, smtp_server, tmp_path):
    ctx = smtp_site(make_site, smtp_server)
    config_path = ctx.config.source
    proc = digest_run(config_path, tmp_path / "killed.log", "--workers", "2")
    held: dict[str, object] = {}

    def kill_parent_inside(msg):
        """Kill the parent while this message waits for its "250": the server answers nobody meanwhile, so a
        worker that outlived its parent would sit here waiting, not notice at its next batch."""
        if not held and smtp_server.count() == 25:
            workers = children(proc.pid)
            proc.kill()
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.02)
            held.update(workers=workers, gone=not any(alive(pid) for pid in workers), rcpts=list(msg.rcpt_tos))
            done.set()

    done = threading.Event()
    smtp_server.on_message = kill_parent_inside
    proc.wait(timeout=120)
    assert done.wait(30)
    smtp_server.on_message = None
    assert proc.returncode == -9 and len(held["workers"]) == 2
    assert held["gone"], "a worker outlived its parent"
    in_flight = {r["id"]: r["email"] for r in ctx.store.deliveries(status="sending")}
    assert 0 < len(in_flight) <= 2 * BATCH  # each worker's batch in flight, at most
    assert set(held["rcpts"]) <= set(in_flight.values())
    resume_and_check(ctx, config_path, tmp_path, in_flight, smtp_server)
