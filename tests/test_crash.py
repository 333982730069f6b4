"""Kill -9 a real `newsletter digest run` at several points, run it again, and count what arrived.

The SMTP server runs in this process (a thread), so it outlives each killed
child and holds the truth about what was handed over. After the last run to
completion every subscriber has exactly one message, or is listed as unknown
(with at most one): never two, and never none without being unknown.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

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


def digest_run(config_path, log_path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-c", "from newsletter.cli import cli; cli()", "--config",
                                 str(config_path), "digest", "run", "--now", SAMPLE_NOW.isoformat()],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def test_sigkill_at_several_points_then_rerun_never_sends_twice_nor_loses_anyone(make_site, smtp_server, tmp_path):
    ctx = make_site(backend="smtp", legacy_consent=True, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                    smtp_batch_size=BATCH)
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    ctx.store.upsert_subscribers([{"email": f"member{i:04d}@example.org", "name": f"Member {i}",
                                   "segment": SEGMENTS[i % 3], "cadence": "weekly", "topics": [], "status": "active"}
                                  for i in range(AUDIENCE)])
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
