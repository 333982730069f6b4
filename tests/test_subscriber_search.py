"""The editors' subscriber search: its results equal a brute-force filter of the same rows, for any addresses and
any search text (Hypothesis), page by page; the search index follows inserts, changes and erasures; and each text
search is an indexed lookup, never a scan of the table."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from newsletter.model import SUBSCRIBER_STATUSES
from newsletter.sources.subscribers import SubscriberError, normalise_email
from newsletter.store import Store, next_string, search_key
from tests.conftest import SECRET

ALPHABET = "abcxyz0189.-_+éüß"
DOMAINS = ["example.org", "ex-ample.com", "bücher.de", "mail.example.net", "abc.io"]
SEGMENTS = ["patients", "caregivers", "clinicians"]
TOPICS = ["MS", "NMOSD", "MOGAD"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("search") / "search.db", create=True, secret=SECRET)
    yield s
    s.close()


def address(local: str, domain: str) -> str | None:
    try:
        return normalise_email(f"{local}@{domain}")
    except SubscriberError:
        return None


people = st.lists(st.tuples(st.text(alphabet=ALPHABET, min_size=1, max_size=10), st.sampled_from(DOMAINS),
                            st.sampled_from(SEGMENTS), st.sampled_from(["weekly", "monthly"]),
                            st.lists(st.sampled_from(TOPICS), unique=True, max_size=2),
                            st.sampled_from(SUBSCRIBER_STATUSES)), max_size=25)


def load(store: Store, rows) -> list[dict]:
    with store.transaction() as conn:
        conn.execute("DELETE FROM subscribers")  # the delete trigger empties the search index too
    records, seen = [], set()
    for local, domain, segment, cadence, topics, status in rows:
        email = address(local, domain)
        if email and email not in seen:
            seen.add(email)
            records.append({"email": email, "segment": segment, "cadence": cadence, "topics": topics,
                            "status": status})
    store.upsert_subscribers(records)
    return store.subscribers()


def brute_force(rows, text="", status=None, segment=None, cadence=None, topic=None) -> list[int]:
    key = search_key(text)

    def matches(row) -> bool:
        found = key in row["email"] if len(key) >= 3 else row["email"].startswith(key)
        return (found and status in (None, row["status"]) and segment in (None, row["segment"])
                and cadence in (None, row["cadence"]) and (topic is None or topic in row["topics"]))
    return [row["id"] for row in rows if matches(row)]


def searched(store, page: int, **filters) -> list[int]:
    """Every page of the search, followed by its `after_id`."""
    ids, after = [], 0
    while True:
        rows = store.search_subscribers(after_id=after, limit=page, **filters)
        ids += [r["id"] for r in rows]
        if len(rows) < page:
            return ids
        after = rows[-1]["id"]


search_texts = st.one_of(st.text(alphabet=ALPHABET + '@"*%() ' + "ABCÉ", max_size=7),
                         st.sampled_from(['"', 'a"b', "*", "OR", "NEAR(", "%", "_", "  ab  ", "E@B", "@"]))


def typed_text(data, stored) -> str:
    """What an editor types: mostly a piece of a stored address (any case), sometimes anything."""
    if stored and data.draw(st.integers(0, 3)):
        email = data.draw(st.sampled_from([r["email"] for r in stored]))
        start = data.draw(st.integers(0, len(email) - 1))
        text = email[start:start + data.draw(st.sampled_from([1, 2, 2, 3, 3, 4, 6, 9]))]
        return text.upper() if data.draw(st.booleans()) else text
    return data.draw(search_texts)


def maybe(values) -> st.SearchStrategy:
    return st.one_of(st.none(), st.none(), st.sampled_from(values))


@given(rows=people, data=st.data(), page=st.integers(1, 7))
def test_a_text_search_equals_a_brute_force_filter_of_the_same_rows(store, rows, data, page):
    stored = load(store, rows)
    text = typed_text(data, stored)
    assert searched(store, page, text=text) == brute_force(stored, text=text)


@given(rows=people, data=st.data(), status=maybe(SUBSCRIBER_STATUSES), segment=maybe(SEGMENTS),
       cadence=maybe(["weekly", "monthly"]), topic=maybe(TOPICS), page=st.integers(1, 7))
def test_a_filtered_search_equals_a_brute_force_filter_of_the_same_rows(store, rows, data, status, segment, cadence,
                                                                        topic, page):
    stored = load(store, rows)
    filters = {"text": typed_text(data, stored), "status": status, "segment": segment, "cadence": cadence,
               "topic": topic}
    assert searched(store, page, **filters) == brute_force(stored, **filters)


def test_the_index_follows_changes_and_erasures(store):
    stored = load(store, [("ann.lee", "example.org", "patients", "weekly", [], "active")])
    sub = stored[0]
    assert [r["id"] for r in store.search_subscribers("lee@exa")] == [sub["id"]]
    with store.transaction() as conn:
        conn.execute("UPDATE subscribers SET email = 'ann.smith@example.org' WHERE id = ?", (sub["id"],))
    assert store.search_subscribers("lee@exa") == [] and len(store.search_subscribers("smith")) == 1
    store.editor_erase(sub["id"], "alice")
    assert store.search_subscribers("smith") == [] and store.search_subscribers("an") == []


@pytest.mark.parametrize("prefix, upper", [("abc", "abd"), ("a\U0010ffff", "b"), ("\U0010ffff", None),
                                           ("x\ud7ff", "x\ue000"), ("", None)])
def test_next_string_bounds_every_string_with_the_prefix(prefix, upper):
    assert next_string(prefix) == upper


@pytest.mark.parametrize("text", ["smith", "sm", "example.org"])
def test_a_text_search_never_scans_the_subscribers_table(store, text):
    plans: list[str] = []
    store.conn.set_trace_callback(None)
    original = store.query

    def explain(sql, params=()):
        plans.extend(row["detail"] for row in original("EXPLAIN QUERY PLAN " + sql, params))
        return original(sql, params)

    store.query = explain  # type: ignore[method-assign]
    try:
        store.search_subscribers(text, status="active", topic="MS")
    finally:
        del store.query
    assert plans and not [p for p in plans if re.fullmatch(r"SCAN (s|subscribers)\b.*", p)], plans
    if len(text) >= 3:  # the trigram index answers a MATCH (M in its plan), not a walk of its rows
        assert any(re.fullmatch(r"SCAN subscriber_search VIRTUAL TABLE INDEX \d+:M.*", p) for p in plans), plans
    else:
        assert any("USING INDEX sqlite_autoindex_subscribers_1 (email>? AND email<?)" in p for p in plans), plans
