"""Keeping less: `newsletter purge` at the boundary of each retention period (time travel), and an erasure that
leaves the address in no table, not in the database file's bytes, and not in the Maildir outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from datetime import datetime, timedelta, timezone

import time_machine

from newsletter.cli import cli
from newsletter.digest import DigestRunner
from newsletter.feedback import record_events
from newsletter.retention import purge
from newsletter.store.retention import UNLINKED
from tests.conftest import SAMPLE_NOW, load_samples, read_maildir

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)


def counts(ctx, when: datetime) -> dict[str, int]:
    return {what.split(" ")[0]: n for what, n in purge(ctx.config, ctx.store, when)}


def event(n: int, email: str = "someone@example.org") -> dict:
    return {"event": "processed", "sg_event_id": f"ev-{n}", "email": email, "timestamp": 1700000000}


def test_provider_events_go_after_90_days_and_not_a_second_before(site):
    with time_machine.travel(T0, tick=False):
        record_events(site.store, "sendgrid", [event(1), {"not": "usable"}])
    assert counts(site, T0 + timedelta(days=90) - SECOND)["provider"] == 0
    assert counts(site, T0 + timedelta(days=90) + SECOND)["provider"] == 2  # the event and the rejected one
    assert counts(site, T0 + timedelta(days=91))["provider"] == 0  # twice is safe
    assert site.store.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0


def test_unconfirmed_signups_go_after_30_days_and_may_sign_up_again(site):
    with time_machine.travel(T0, tick=False):
        site.store.sign_up("waiting@example.org", "patients", "weekly", [])
        confirmed = site.store.sign_up("kept@example.org", "patients", "weekly", [])
        site.store.confirm_subscriber(confirmed["id"])
    assert counts(site, T0 + timedelta(days=30) - SECOND)["sign-ups"] == 0
    assert site.store.get_subscriber("waiting@example.org") is not None
    assert counts(site, T0 + timedelta(days=30) + SECOND)["sign-ups"] == 1
    assert counts(site, T0 + timedelta(days=31))["sign-ups"] == 0
    assert site.store.get_subscriber("waiting@example.org") is None
    assert site.store.get_subscriber("kept@example.org")["status"] == "active"
    assert not site.store.is_suppressed("waiting@example.org")  # never confirmed: nothing to block


def test_the_retention_periods_are_settings(make_site):
    ctx = make_site(retention_events_days=7)
    with time_machine.travel(T0, tick=False):
        record_events(ctx.store, "sendgrid", [event(1)])
    assert counts(ctx, T0 + timedelta(days=7) - SECOND)["provider"] == 0
    assert counts(ctx, T0 + timedelta(days=7) + SECOND)["provider"] == 1


def test_erased_readers_deliveries_are_unlinked_at_once_by_default(loaded, runner):
    ctx = loaded
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW)
    row = ctx.store.get_subscriber("maria.lopez@example.org")
    ctx.store.remove_subscriber(row["email"])
    before = ctx.store.query("SELECT id, status FROM deliveries WHERE subscriber_id = ?", (-row["id"],))
    assert before
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "purge"])
    assert result.exit_code == 0, result.output
    assert f"{len(before):>6}  erased readers'" in result.output
    after = ctx.store.query("SELECT id, status, subscriber_id FROM deliveries WHERE id IN (%s)"
                            % ",".join(str(r["id"]) for r in before))
    assert [(r["id"], r["status"]) for r in after] == [(r["id"], r["status"]) for r in before]  # counts kept
    assert {r["subscriber_id"] for r in after} == {-(UNLINKED + r["id"]) for r in before}
    again = runner.invoke(cli, ["--config", str(ctx.config.source), "purge"])
    assert again.exit_code == 0 and "0 row(s) removed" in again.output


def test_purge_dry_run_prints_what_purge_removes_and_changes_nothing(site, runner):
    """`purge --dry-run` past every period: the counts a purge then prints, while the database (every row of
    every table) and the outbox (the unconfirmed reader's confirmation) stay as they were."""
    from newsletter.messengers import send_notice
    from newsletter.model import Notice

    with time_machine.travel(T0, tick=False):
        record_events(site.store, "sendgrid", [event(1), event(2)])
        site.store.sign_up("waiting@example.org", "patients", "weekly", [])
        send_notice(site.config, Notice("waiting@example.org", "Please confirm", "Confirm here."))
        # a second confirmation the relay did not take: erasing the sign-up removes it too, so the step that
        # expires queued confirmations finds nothing left, in the dry run as in the purge
        site.store.queue_notice("waiting@example.org", "Please confirm", "Confirm here.", "confirmation", "421")
    outbox = sorted(p.name for p in Path(site.config.outbox).rglob("*") if p.is_file())
    assert len(outbox) == 1

    def dump() -> list[str]:
        raw = sqlite3.connect(site.config.database)
        try:
            return list(raw.iterdump())
        finally:
            raw.close()

    def purge_at(*extra: str):
        with time_machine.travel(T0 + timedelta(days=91), tick=False):
            result = runner.invoke(cli, ["--config", str(site.config.source), "purge", *extra],
                                   catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    before = dump()
    rehearsed = purge_at("--dry-run")
    assert dump() == before
    assert sorted(p.name for p in Path(site.config.outbox).rglob("*") if p.is_file()) == outbox
    assert "3 row(s) would be removed, unlinked or compacted (dry run: nothing changed)" in rehearsed.stderr
    assert "     1  sign-ups never confirmed" in rehearsed.stdout and "     2  provider events" in rehearsed.stdout
    assert "     0  confirmations queued" in rehearsed.stdout
    done = purge_at()
    assert done.stdout == rehearsed.stdout  # the same lines, and this time they went
    assert "3 row(s) removed, unlinked or compacted" in done.stderr
    assert site.store.get_subscriber("waiting@example.org") is None
    assert not [p for p in Path(site.config.outbox).rglob("*") if p.is_file()]
    assert dump() != before


def test_a_rehearsal_inside_a_transaction_is_refused(site):
    import pytest

    from newsletter.store.connection import StoreError

    with site.store.transaction():
        with pytest.raises(StoreError, match="rehearsal cannot run inside another transaction"):
            with site.store.rehearsal():
                pass


def every_text(path) -> list[tuple[str, str, str]]:
    """(table, column, value) of every text cell in the database."""
    raw = sqlite3.connect(path)
    try:
        found = []
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [r[1] for r in raw.execute(f"PRAGMA table_info('{table}')")]
            for row in raw.execute(f"SELECT * FROM '{table}'"):
                found += [(table, c, v.decode(errors="replace") if isinstance(v, bytes) else v)
                          for c, v in zip(columns, row) if isinstance(v, (str, bytes))]
        return found
    finally:
        raw.close()


def test_erasure_leaves_no_trace_in_any_table_the_file_or_the_outbox(loaded, runner):
    ctx = loaded
    address = "maria.lopez@example.org"
    sid = ctx.store.get_subscriber(address)["id"]
    ctx.store.record_consent(sid, "cli", "paper form 2025", ip="192.0.2.1")
    ctx.store.record_audit("cli:test", "subscriber.edit", f"subscriber:{sid}", {"email": [address, address]})
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW)
    delivery = ctx.store.query("SELECT id, issue_id FROM deliveries WHERE subscriber_id = ?", (sid,))[0]
    record_events(ctx.store, "sendgrid", [
        {**event(1, address), "issue_id": str(delivery["issue_id"]), "subscriber_id": str(sid),
         "delivery_id": str(delivery["id"])},
        {"sg_event_id": 5, "email": address}])  # rejected, naming the address
    ctx.store.record_bounce_report("mail", "bounce-1", {"verdict": "soft", "status_code": "4.2.2",
                                                        "issue_id": delivery["issue_id"], "delivery_id": delivery["id"],
                                                        "subscriber_id": sid})
    # The relay's words naming the address: on the delivery's own step, and on a step written for a whole batch.
    ctx.store.conn.execute("UPDATE delivery_batches SET error = ? WHERE id = (SELECT batch FROM deliveries WHERE id = ?)",
                           (f"452 <{address}> mailbox full", delivery["id"]))
    ctx.store.conn.execute("INSERT INTO delivery_batches (name, error, first_id, last_id) VALUES ('b', ?, 1, 99)",
                           (f"421 4.7.0 too many messages, last <{address}>",))
    assert any(m["To"].addresses[0].addr_spec == address for m in read_maildir(ctx.config.outbox))
    assert [cell for cell in every_text(ctx.config.database) if address in cell[2]]  # really there before

    result = runner.invoke(cli, ["--config", str(ctx.config.source), "subscribers", "remove", address])
    assert result.exit_code == 0, result.output
    assert "1 message(s) to it in the outbox" in result.output

    ctx.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert [cell for cell in every_text(ctx.config.database) if address in cell[2].lower()] == []
    assert address.encode() not in Path(ctx.config.database).read_bytes()
    assert not [m for m in read_maildir(ctx.config.outbox) if address in str(m["To"])]
    assert read_maildir(ctx.config.outbox)  # the other readers' messages stay
    assert ctx.store.consent_records(sid) == []
    assert ctx.store.is_suppressed(address)
