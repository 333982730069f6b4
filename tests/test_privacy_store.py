"""What the database keeps about readers: provider events without IP or user agent, a keyed suppression list, and
m014 bringing an older database there."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from sqlite_utils import Database

from newsletter.feedback import record_events
from newsletter.model import derive_key
from newsletter.sources.subscribers import read_csv
from newsletter.store import Store, StoreError, migrations
from tests.conftest import SECRET

EVENT = {"event": "delivered", "sg_event_id": "ev-1", "email": "a@example.org", "timestamp": 1700000000,
         "ip": "203.0.113.9", "useragent": "Mozilla/5.0 (iPhone)", "url": "https://example.org/study",
         "issue_id": "1", "subscriber_id": "1", "delivery_id": "1", "sg_message_id": "m1"}


def test_an_event_is_stored_without_ip_user_agent_or_anything_unused(site):
    counts = record_events(site.store, "sendgrid", [EVENT, {**EVENT, "sg_event_id": None}])
    assert counts["stored"] == 1 and counts["ignored"] == 1
    (stored,) = site.store.query("SELECT payload FROM events")
    (rejected,) = site.store.query("SELECT payload FROM rejected_events")
    for text in (stored["payload"], rejected["payload"]):
        payload = json.loads(text)
        assert not {"ip", "useragent", "url", "email"} & set(payload)
        assert payload["event"] == "delivered" and payload["delivery_id"] == "1"
        assert "203.0.113.9" not in text and "iPhone" not in text


def test_m014_strips_stored_payloads_and_keys_plain_suppression_hashes(tmp_path):
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m014_privacy")
    db.execute("""INSERT INTO events (provider, event_id, type, email, payload, received_at)
                  VALUES ('sendgrid', 'ev-1', 'delivered', 'a@example.org', ?, '2025-01-01')""", (json.dumps(EVENT),))
    db.execute("INSERT INTO rejected_events (provider, reason, payload, digest, received_at) VALUES "
               "('sendgrid', 'r', ?, 'd1', '2025-01-01'), ('sendgrid', 'r', ?, 'd2', '2025-01-01')",
               (json.dumps([EVENT]), json.dumps(EVENT)[:40]))
    plain = hashlib.sha256(b"gone@example.org").hexdigest()
    db.execute("INSERT INTO suppressions (email_hash, reason, created_at) VALUES (?, 'removed', '2025-01-01')", (plain,))
    db.conn.commit()
    db.close()

    store = Store(path, secret=SECRET)
    try:
        texts = [r["payload"] for r in store.query("SELECT payload FROM events UNION ALL "
                                                    "SELECT payload FROM rejected_events")]
        assert len(texts) == 3 and not [t for t in texts if "203.0.113.9" in t or "iPhone" in t]
        assert json.loads(texts[1]) == [{k: v for k, v in EVENT.items() if k not in ("ip", "useragent", "url",
                                                                                       "email")}]
        assert store.is_suppressed("Gone@example.org ")  # the migrated hash still finds the address
        (row,) = store.query("SELECT email_hash, keyed FROM suppressions")
        assert row["keyed"] == 1 and row["email_hash"] != plain
    finally:
        store.close()


def test_the_suppression_list_cannot_be_tested_without_the_key(site):
    site.store.upsert_subscribers([{"email": "leaver@example.org", "segment": "patients", "status": "active"}])
    assert site.store.remove_subscriber("leaver@example.org")
    (row,) = site.store.query("SELECT email_hash FROM suppressions")
    assert row["email_hash"] != hashlib.sha256(b"leaver@example.org").hexdigest()
    other = Store(site.config.database, secret="another-secret")
    try:
        assert not other.is_suppressed("leaver@example.org")  # another key finds nothing
    finally:
        other.close()
    assert derive_key(SECRET, "suppression list") != derive_key(SECRET, "list codes")


def test_without_a_secret_the_suppression_list_is_refused(site, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    store = Store(site.config.database)
    try:
        with pytest.raises(StoreError, match="NEWSLETTER_SECRET"):
            store.is_suppressed("x@example.org")
    finally:
        store.close()


def test_keyed_suppression_still_blocks_a_reimport(site, tmp_path):
    site.store.upsert_subscribers([{"email": "leaver@example.org", "segment": "patients", "status": "active"}])
    site.store.remove_subscriber("leaver@example.org")
    csv = tmp_path / "again.csv"
    csv.write_text("email,segment,status\nleaver@example.org,patients,active\n", encoding="utf-8")
    with csv.open(encoding="utf-8") as fh:
        records = read_csv(fh, site.segments).good
    counts = site.store.upsert_subscribers(records)
    assert counts["kept_suppressed"] == 1
    assert site.store.get_subscriber("leaver@example.org")["status"] == "unsubscribed"
    raw = sqlite3.connect(site.config.database)
    try:
        assert raw.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0] == 1
    finally:
        raw.close()
