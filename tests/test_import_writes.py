"""Subscribers written a chunk at a time keep the rules they had when each was written row by row: for any
list already stored (some suppressed, some erased to a hash) and any records, the chunked writer leaves the
same rows, counts and consent as the row-by-row code it replaced (kept below as the reference), and an import
reports the same second rows, by line, however its chunks fall."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from newsletter.model import SUBSCRIBER_STATUSES, SUPPRESSED
from newsletter.store import Store
from tests.conftest import SECRET

POOL = [f"p{i}@example.org" for i in range(6)] + ["\u00fcn\u00ef@b\u00fccher.de", "\U0001d4b6@example.org",
                                                  '"a b\\\\c"@example.org']
SEGMENTS = ["patients", "caregivers", "clinicians"]


def reference_upsert(store: Store, records: list[dict], consent: bool) -> dict[str, int]:
    """The row-by-row upsert (and consent) as store/subscribers.py and store/consent.py wrote it before chunks."""
    counts = {"added": 0, "updated": 0, "kept_suppressed": 0, "consents": 0}
    now = "2026-01-01T00:00:00+00:00"
    with store.transaction() as conn:
        for rec in records:
            topics = json.dumps(list(rec.get("topics") or []), ensure_ascii=False)
            existing = conn.execute("SELECT id, status FROM subscribers WHERE email = ?", (rec["email"],)).fetchone()
            status = rec.get("status") or (existing["status"] if existing else "pending")
            suppressed = existing["status"] in SUPPRESSED if existing else bool(conn.execute(
                "SELECT 1 FROM suppressions WHERE email_hash = ?", (store.suppression_hash(rec["email"]),)).fetchone())
            if suppressed and status not in SUPPRESSED:
                status = existing["status"] if existing else "unsubscribed"
                counts["kept_suppressed"] += 1
            if existing is None:
                conn.execute("""INSERT INTO subscribers (email, name, segment, cadence, topics, status, created_at,
                                updated_at, confirmed_at, unsubscribed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                             (rec["email"], rec.get("name") or "", rec["segment"], rec.get("cadence") or "weekly",
                              topics, status, now, now, now if status == "active" else None,
                              now if status in SUPPRESSED else None))
                counts["added"] += 1
            else:
                conn.execute("""UPDATE subscribers SET audience_changed_at = CASE WHEN segment != ? OR cadence != ?
                                THEN ? ELSE audience_changed_at END, name = ?, segment = ?, cadence = ?, topics = ?,
                                status = ?, updated_at = ?,
                                confirmed_at = COALESCE(confirmed_at, CASE WHEN ? = 'active' THEN ? END),
                                unsubscribed_at = CASE WHEN ? IN ('unsubscribed','bounced','complained')
                                                  THEN COALESCE(unsubscribed_at, ?) END WHERE id = ?""",
                             (rec["segment"], rec.get("cadence") or "weekly", now, rec.get("name") or "",
                              rec["segment"], rec.get("cadence") or "weekly", topics, status, now, status, now, status,
                              now, existing["id"]))
                counts["updated"] += 1
        for rec in records if consent else ():
            if not rec.get("consent"):
                continue
            found = conn.execute("SELECT id, status FROM subscribers WHERE email = ?", (rec["email"],)).fetchone()
            c = rec["consent"]
            values = (found["id"], c["method"], c["basis"].strip(), c.get("wording_version"), c.get("opted_in_at"),
                      c.get("ip"))
            if found["status"] in SUPPRESSED or conn.execute(
                    """SELECT 1 FROM consent_records WHERE subscriber_id = ? AND method = ? AND basis = ?
                       AND wording_version IS ? AND opted_in_at IS ? AND ip IS ?""", values).fetchone():
                continue
            conn.execute("""INSERT INTO consent_records (subscriber_id, method, basis, wording_version, opted_in_at,
                            ip, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)""", (*values, now))
            counts["consents"] += 1
    return counts


def state(store: Store) -> tuple[list, list]:
    """Every subscriber as stored (its times only as given or not) and every consent record."""
    people = [(r["id"], r["email"], r["name"], r["segment"], r["cadence"], r["topics"], r["status"],
               r["confirmed_at"] is not None, r["unsubscribed_at"] is not None, r["audience_changed_at"] is not None)
              for r in store.query("SELECT * FROM subscribers ORDER BY id")]
    consent = [(r["subscriber_id"], r["method"], r["basis"], r["wording_version"], r["opted_in_at"], r["ip"])
               for r in store.query("SELECT * FROM consent_records ORDER BY id")]
    return people, consent


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("writes")
    pair = Store(folder / "chunked.db", create=True, secret=SECRET), Store(folder / "reference.db", create=True,
                                                                          secret=SECRET)
    yield pair
    for s in pair:
        s.close()


def reset(store: Store, before: list[dict], erased: list[str]) -> None:
    with store.transaction() as conn:
        for table in ("consent_records", "subscribers", "suppressions"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'subscribers'")
    reference_upsert(store, before, consent=True)
    for email in erased:
        store.remove_subscriber(email)  # leaves its hash on the suppression list


records = st.lists(st.fixed_dictionaries(
    {"email": st.sampled_from(POOL), "segment": st.sampled_from(SEGMENTS)},
    optional={"name": st.text(max_size=5), "cadence": st.sampled_from(["weekly", "monthly"]),
              "topics": st.lists(st.sampled_from(["MS", "NMOSD"]), unique=True, max_size=2),
              "status": st.one_of(st.none(), st.sampled_from(SUBSCRIBER_STATUSES)),
              "consent": st.fixed_dictionaries({"method": st.sampled_from(["import", "cli"]),
                                                "basis": st.sampled_from(["form", " paper "])},
                                               optional={"opted_in_at": st.sampled_from(["2025-01-01T00:00:00+00:00"]),
                                                         "ip": st.sampled_from(["192.0.2.1"])})}), max_size=10)


def fresh(stores, before: list[dict], erased: list[str]):
    """Both stores holding the same list (each address once) and the same erased addresses."""
    for s in stores:
        reset(s, unique(before), erased)
    return stores


def unique(recs: list[dict]) -> list[dict]:
    first = {}
    for rec in recs:
        first.setdefault(rec["email"], rec)
    return list(first.values())


@given(before=records, erased=st.lists(st.sampled_from(POOL), unique=True, max_size=3), recs=records,
       chunk=st.sampled_from([1, 2, 3, 2000]))
def test_an_upsert_in_chunks_leaves_what_the_row_by_row_upsert_left(stores, before, erased, recs, chunk):
    chunked, reference = fresh(stores, before, erased)
    assert chunked._upsert(recs, chunk, consent=False) == {
        k: v for k, v in reference_upsert(reference, recs, consent=False).items() if k != "consents"}
    assert state(chunked) == state(reference)


@given(before=records, erased=st.lists(st.sampled_from(POOL), unique=True, max_size=3), recs=records)
def test_consent_goes_with_each_record_whose_subscriber_is_not_suppressed(stores, before, erased, recs):
    """Each address once (an address twice in one call: its consent is judged by the status its own record left)."""
    chunked, reference = fresh(stores, before, erased)
    assert chunked.upsert_subscribers_with_consent(unique(recs)) == reference_upsert(reference, unique(recs), True)
    assert state(chunked) == state(reference)


@given(before=records, erased=st.lists(st.sampled_from(POOL), unique=True, max_size=3), recs=records,
       chunk=st.sampled_from([1, 2, 3, 2000]))
def test_an_import_writes_each_address_once_and_names_the_line_of_the_first(stores, before, erased, recs, chunk):
    chunked, reference = fresh(stores, before, erased)
    lines = [{**rec, "line": 2 + i * 2} for i, rec in enumerate(recs)]  # lines as in a file with a bad row between
    first: dict[str, int] = {}
    expected_duplicates = []
    for rec in lines:
        if rec["email"] in first:
            expected_duplicates.append((rec["line"], f"email: {rec['email']} already on line {first[rec['email']]}"))
        first.setdefault(rec["email"], rec["line"])
    counts = chunked.import_subscribers(iter(lines), chunk=chunk)
    assert sorted(counts.pop("duplicates")) == expected_duplicates
    assert counts == reference_upsert(reference, unique(recs), consent=True)
    assert state(chunked) == state(reference)


def test_an_import_takes_its_larger_page_cache_only_while_it_runs(tmp_path):
    from newsletter.store.subscriber_import import IMPORT_CACHE_KIB
    store = Store(tmp_path / "cache.db", create=True, secret=SECRET)
    before = store.conn.execute("PRAGMA cache_size").fetchone()[0]
    during = []

    def records():
        for line in (2, 3):
            during.append(store.conn.execute("PRAGMA cache_size").fetchone()[0])
            yield {"line": line, "email": f"r{line}@example.org", "segment": "patients"}

    store.import_subscribers(records())
    assert during == [-IMPORT_CACHE_KIB] * 2 and before != -IMPORT_CACHE_KIB
    assert store.conn.execute("PRAGMA cache_size").fetchone()[0] == before
    assert len(store.subscribers()) == 2
