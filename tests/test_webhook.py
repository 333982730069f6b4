"""The SendGrid webhook against what really arrives: odd, hostile and stale requests, signed with a real ECDSA key.

A bad event is stored as rejected and skipped, never failing its batch; an
event changes a delivery only when its address is that delivery's
subscriber's; a request signed too long ago (or ahead) is refused.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
from hypothesis import given, strategies as st

from newsletter.web.webhooks import MAX_BODY_BYTES, MAX_BODY_DEPTH, json_depth
from tests.test_web import (clock, drafts, event, hook, make_app, planned, public_key_b64, recipients,  # noqa: F401
                            signed, signing_key)

KINDS = ["bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe", "delivered", "open", "click",
         "processed", "deferred"]
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["", "1", "-5", "1e30", "x" * 3000, "\ud800", "٣", "9" * 25]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=24)
_ids = itertools.count()


def event_like(subs: list[dict]) -> st.SearchStrategy:
    """Events shaped like SendGrid's, naming real subscribers and issues, with any field of any type."""
    field = st.one_of(JSON, st.sampled_from([str(s["id"]) for s in subs] + [s["email"] for s in subs] + ["1"]))
    return st.fixed_dictionaries({}, optional={
        "sg_event_id": st.one_of(st.text(min_size=1, max_size=20), JSON), "event": st.one_of(st.sampled_from(KINDS), JSON),
        "email": st.one_of(st.sampled_from([s["email"] for s in subs]), JSON), "timestamp": JSON,
        "issue_id": field, "subscriber_id": field, "type": st.sampled_from(["bounce", "blocked"]) | JSON,
        "reason": JSON, "pool": JSON, "category": JSON})


def test_any_list_of_events_never_fails_and_a_spam_report_in_it_is_applied(hook, planned):
    subs = recipients(planned)[:4]
    target = subs[0]

    @given(events=st.lists(st.one_of(JSON, event_like(subs)), max_size=8), where=st.integers(min_value=0))
    def post(events, where):
        planned.store.set_subscriber_status(target["id"], "active")
        report = event("spamreport", target, n=next(_ids))
        events.insert(where % (len(events) + 1), report)
        response = hook(events)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        counts = response.get_json()
        assert counts["received"] == len(events)
        assert counts["stored"] + counts["replayed"] + counts["ignored"] == len(events)
        assert planned.store.get_subscriber(id=target["id"])["status"] == "complained"

    post()


def test_bad_events_are_stored_as_rejected_and_the_rest_applied(hook, planned, signing_key):
    a, b = recipients(planned)[:2]
    deep: object = "bottom"
    for _ in range(20):
        deep = {"deeper": deep}
    body = json.dumps([1, "text", None, [event("unsubscribe", a)],
                       event("open", a, sg_event_id="x" * 10_000), event("open", a, sg_event_id=7),
                       event("open", a, event={"kind": "open"}), event("open", a, n=2, pool=deep),
                       event("open", a, n=3, subscriber_id=10**30, issue_id=2**70),
                       event("spamreport", b)]).encode()
    # A number too long for Python's int (today: a 500 on every retry, for 24 hours).
    body = body[:-1] + b', {"sg_event_id": "huge", "event": "open", "email": "x@example.org", "subscriber_id": ' \
        + b"9" * 5000 + b"}]"
    response = hook(None, body=body, headers=signed(signing_key, body))
    assert response.status_code == 200
    assert response.get_json() == {"received": 11, "stored": 3, "replayed": 0, "ignored": 8, "applied": 1}
    assert planned.store.get_subscriber(id=b["id"])["status"] == "complained"
    assert planned.store.get_subscriber(id=a["id"])["status"] == "active"
    reasons = [r["reason"] for r in planned.store.rejected_events()]
    assert reasons[:4] == ["not an object but int", "not an object but str", "not an object but NoneType",
                           "not an object but list"]
    assert reasons[4:7] == ["sg_event_id: not a string of 1 to 256 characters"] * 2 + [
        "event: not a string of 1 to 64 characters"]
    assert reasons[7] == "nested deeper than 8 levels"
    stored = {e["event_id"]: e for e in planned.store.query("SELECT * FROM events")}
    assert stored["huge"]["subscriber_id"] is None and stored["open-%d-3" % a["id"]]["issue_id"] is None
    again = hook(None, body=body, headers=signed(signing_key, body))  # SendGrid's retry stores nothing twice
    assert again.get_json()["stored"] == 0 and len(planned.store.rejected_events()) == 8


def test_a_body_too_deep_as_a_whole_is_400_and_too_large_is_413(hook, planned, signing_key):
    sub = recipients(planned)[0]
    deep = b"[" * (MAX_BODY_DEPTH + 1) + b"]" * (MAX_BODY_DEPTH + 1)
    assert hook(None, body=deep, headers=signed(signing_key, deep)).status_code == 400
    very_deep = b"[" * 100_000 + b"]" * 100_000  # would exhaust the parser's recursion
    assert hook(None, body=very_deep, headers=signed(signing_key, very_deep)).status_code == 400
    large = json.dumps([event("unsubscribe", sub, note="x" * MAX_BODY_BYTES)]).encode()
    assert hook(None, body=large, headers=signed(signing_key, large)).status_code == 413
    assert planned.store.get_subscriber(id=sub["id"])["status"] == "active"
    assert planned.store.query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth(b'[{"a": "[[[[{{{{", "b": [1, {"c": "\\"]]]"}]}]') == 4
    assert json_depth(b"[]") == 1 and json_depth(b'"x"') == 0


def test_an_event_changes_a_delivery_only_when_its_address_is_the_subscribers(hook, planned):
    a, b = recipients(planned)[:2]
    # custom_args name b's delivery, the address is a's: neither delivery changes.
    response = hook([event("open", b, email=a["email"]), event("click", b, n=2, email="someone@else.example")])
    assert response.get_json()["applied"] == 0
    assert all(d["opened_at"] is None and d["clicked_at"] is None for d in planned.store.deliveries(issue_id=1))
    hook([event("open", b, n=3, email=b["email"].upper())])  # the address as the provider wrote it
    [row] = [d for d in planned.store.deliveries(issue_id=1) if d["subscriber_id"] == b["id"]]
    assert row["opened_at"] is not None
    # A suppression without an address is never applied on custom_args alone.
    hook([{k: v for k, v in event("unsubscribe", a, n=4).items() if k != "email"}])
    assert planned.store.get_subscriber(id=a["id"])["status"] == "active"


@pytest.mark.parametrize("offset, status", [(-301, 403), (301, 403), (-3600 * 24, 403), (-200, 200), (200, 200)])
def test_signed_requests_outside_the_tolerance_are_refused(hook, planned, signing_key, offset, status):
    sub = recipients(planned)[0]
    body = json.dumps([event("unsubscribe", sub)]).encode()
    response = hook(None, body=body, headers=signed(signing_key, body, str(int(time.time()) + offset)))
    assert response.status_code == status
    assert planned.store.get_subscriber(id=sub["id"])["status"] == ("unsubscribed" if status == 200 else "active")


@pytest.mark.parametrize("timestamp", ["abc", "-1", "1e3", "99999999999999999999", " 1"])
def test_a_malformed_timestamp_is_refused(hook, signing_key, timestamp):
    body = b"[]"
    assert hook(None, body=body, headers=signed(signing_key, body, timestamp)).status_code == 403


def test_the_tolerance_is_a_setting(planned, make_app, signing_key):
    client = make_app(planned, webhook_public_key=public_key_b64(signing_key),
                      webhook_tolerance_seconds=30).test_client()
    body = b"[]"
    old = signed(signing_key, body, str(int(time.time()) - 60))
    assert client.post("/webhooks/sendgrid", data=body, headers=old).status_code == 403
    assert client.post("/webhooks/sendgrid", data=body, headers=signed(signing_key, body)).status_code == 200
