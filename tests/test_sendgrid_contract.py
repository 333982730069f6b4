"""The sendgrid messenger against SendGrid's own contract, served by Stoplight Prism on loopback.

Prism validates every request body against tests/contracts/sendgrid_mail_send.openapi.json
(a copy of ../shared/sendgrid/mail_send.openapi.json) and answers 202 only when
it passes; a body that breaks the contract gets 400 with the reasons in the
`sl-violations` header; no Authorization header gets 401.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings, strategies as st
from python_http_client.exceptions import HTTPError

from newsletter.cli import cli
from newsletter.digest import DigestRunner
from newsletter.messengers import messenger_from_config, sender_from_config
from newsletter.model import FatalSendError
from newsletter.messengers import sendgrid as sendgrid_module
from newsletter.messengers.sendgrid import SendGridMessenger, build_payload, describe_error
from newsletter.model import PLACEHOLDERS
from tests.conftest import SAMPLE_NOW, load_samples


@pytest.fixture
def prism_site(make_site, prism, monkeypatch):
    """The bundled samples, sending through SendGrid (Prism) with every optional part of the payload on."""
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    ctx = make_site(backend="sendgrid", legacy_consent=True, sendgrid_host=prism.url, sendgrid_timeout=10.0, reply_to="editors@example.org",
                    sendgrid_asm_group_id=4242, sendgrid_sandbox=True)
    load_samples(ctx)
    return ctx


def recorded_payloads(monkeypatch) -> list[dict]:
    """Every request body the messenger encodes, decoded again."""
    payloads: list[dict] = []
    real = sendgrid_module.encode_payload

    def recording(*args, **kwargs):
        body = real(*args, **kwargs)
        payloads.append(json.loads(body))
        return body

    monkeypatch.setattr(sendgrid_module, "encode_payload", recording)
    return payloads


def test_real_issues_are_accepted_by_the_contract(prism_site, monkeypatch):
    ctx = prism_site
    payloads = recorded_payloads(monkeypatch)
    messengers = []

    def factory():
        messengers.append(messenger_from_config(ctx.config))
        return messengers[0]

    report = DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=factory).run("weekly", SAMPLE_NOW)

    assert len(report.created) == 3  # one issue per segment
    rows = [r for r in ctx.store.deliveries() if r["status"] != "skipped"]
    assert rows and report.tally.sent == len(rows)
    assert report.tally.failed == report.tally.unknown == 0
    # Prism answers 202 only to a body that passes the schema; the ledger keeps what each request got.
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["provider_id"] for r in rows} == {"accepted-202"}
    assert messengers[0].requests == len(payloads) == len({r["batch_id"] for r in rows})

    by_delivery = {r["id"]: r for r in rows}
    carried = []
    for payload in payloads:
        kinds = [c["type"] for c in payload["content"]]
        assert kinds == ["text/plain", "text/html"]
        assert payload["asm"] == {"group_id": 4242}
        assert payload["mail_settings"] == {"sandbox_mode": {"enable": True}}
        assert payload["reply_to"] == {"email": "editors@example.org"}
        issue = ctx.store.get_issue(int(payload["custom_args"]["issue_id"]))
        assert issue["segment"] not in json.dumps(payload["categories"]) + json.dumps(payload["custom_args"])
        assert payload["categories"] == [payload["custom_args"]["list"]]
        html = payload["content"][1]["value"]
        for p in payload["personalizations"]:
            row = by_delivery[int(p["custom_args"]["delivery_id"])]
            assert p["to"] == [{"email": row["email"], **({"name": n} if (n := ctx.store.get_subscriber(
                row["email"])["name"]) else {})}]
            assert p["custom_args"]["subscriber_id"] == str(row["subscriber_id"])
            assert set(p["substitutions"]) == set(PLACEHOLDERS)
            unsubscribe = f"https://digest.example.org/u/{p['substitutions']['-nl-utok-']}"
            assert p["headers"] == {"List-Unsubscribe": f"<{unsubscribe}>",
                                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
            carried.append(row["id"])
        assert "-nl-utok-" in html  # one body per variant; SendGrid fills each recipient's token
    assert sorted(carried) == sorted(by_delivery)  # each delivery in exactly one accepted request


def sample_payload(ctx) -> dict:
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments)
    issues = runner.run("weekly", SAMPLE_NOW, send=False).created
    rendered = runner.variant_renderer(ctx.store.get_issue(issues[0]["id"]))([])
    from newsletter.dispatch import Dispatcher
    from newsletter.tokens import Tokens
    dispatcher = Dispatcher(ctx.store, None, Tokens(ctx.config.require_secret()), ctx.config.site_url)
    rows = [{"delivery_id": i, "subscriber_id": s["id"], "email": s["email"], "name": s["name"]}
            for i, s in enumerate(ctx.store.subscribers(status="active")[:3], start=1)]
    return build_payload(rendered, [dispatcher.envelope(r) for r in rows], sender_from_config(ctx.config))


def test_broken_payload_is_rejected_with_prisms_reasons(prism_site, prism):
    ctx = prism_site
    good = sample_payload(ctx)
    broken = copy.deepcopy(good)
    broken["from"] = {"name": "Nobody"}                             # from.email is required
    broken["personalizations"][0]["to"][0]["email"] = "not-an-address"

    sleeps: list[float] = []
    messenger = SendGridMessenger("SG.test-key", sender_from_config(ctx.config), host=prism.url, timeout=10,
                                  sleep=sleeps.append)
    with pytest.raises(HTTPError) as raised:
        messenger.client.client.mail.send.post(request_body=broken)
    assert raised.value.status_code == 400
    reason = describe_error(raised.value)
    assert reason.startswith("sendgrid 400: ")
    assert "from: Request body property from must have required property 'email'" in reason
    assert 'personalizations.0.to.0.email: Request body property personalizations.0.to.0.email must match format' \
           in reason

    outcome = messenger.post(broken, [11, 12, 13])
    assert (outcome.status, outcome.delivery_ids) == ("failed", [11, 12, 13])
    assert "must have required property 'email'" in outcome.error
    assert messenger.requests == 1 and sleeps == []  # a 400 is never retried

    # The same payload unbroken passes: the rejection was about what we broke.
    assert messenger.post(good, [1, 2, 3]).status == "sent"

    too_many = copy.deepcopy(good)
    too_many["personalizations"] = [copy.deepcopy(good["personalizations"][0]) for _ in range(1001)]
    for n, p in enumerate(too_many["personalizations"]):
        p["to"] = [{"email": f"reader{n}@example.org"}]
    refused = messenger.post(too_many, [1])
    assert refused.status == "failed" and "personalizations" in refused.error
    messenger.close()


def test_missing_authorization_stops_the_run_and_sends_nothing(prism_site, prism, monkeypatch):
    ctx = prism_site
    messenger = SendGridMessenger("SG.test-key", sender_from_config(ctx.config), host=prism.url, timeout=10,
                                  sleep=lambda s: None)
    del messenger.client.client.request_headers["Authorization"]
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=lambda: messenger)
    with pytest.raises(FatalSendError, match=r"sendgrid 401: .*SENDGRID_API_KEY"):
        runner.run("weekly", SAMPLE_NOW)
    assert messenger.requests == 1  # the first answer stopped the run
    counts = ctx.store.delivery_counts()
    assert "sent" not in counts and "sending" not in counts and counts.get("pending", 0) > 0

    stopped = {r["id"] for r in ctx.store.deliveries(status="pending")}

    # With credentials the same issues go out, each delivery once.
    payloads = recorded_payloads(monkeypatch)
    report = DigestRunner(ctx.config, ctx.store, ctx.segments,
                          messenger_factory=lambda: messenger_from_config(ctx.config)).run("weekly", SAMPLE_NOW)
    carried = [int(p["custom_args"]["delivery_id"]) for payload in payloads for p in payload["personalizations"]]
    assert len(carried) == len(set(carried)) == report.tally.sent
    assert stopped <= set(carried)
    assert set(ctx.store.delivery_counts()) <= {"sent", "skipped"}


def test_cli_without_api_key_says_so_and_plans_nothing(make_site, prism, runner):
    ctx = make_site(backend="sendgrid", legacy_consent=True, sendgrid_host=prism.url)  # SENDGRID_API_KEY is not in the environment
    load_samples(ctx)
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "digest", "run", "--now", SAMPLE_NOW.isoformat()])
    assert result.exit_code == 1
    assert "SENDGRID_API_KEY is not set" in result.output
    assert ctx.store.delivery_counts() == {}


def test_the_fast_encoder_writes_exactly_the_reference_payload():
    """encode_payload (the hot path) and build_payload (the reference) are the same JSON."""
    import json as _json

    from newsletter.model import Envelope, Sender
    from newsletter.messengers.sendgrid import build_payload, encode_payload
    from newsletter.model import PLACEHOLDERS, Rendered

    rendered = Rendered(issue_id=7, segment="clinicians", cadence="weekly", variant="ms+pml",
                        subject='Résumé "quoted" \\ subject', preheader="p", html="<p>é -nl-hgreet-</p>",
                        text="t -nl-tgreet-", summary_ids=[1], full_cards=1)
    names = ["", 'O"Brien \\ Jr', "José Martínez", "line\nbreak", "\u2028odd"]
    envelopes = [Envelope(delivery_id=i + 1, subscriber_id=100 + i, email=f"r{i}@example.org", name=name,
                          values={k: f"{k}{i}" + ('"' if i % 2 else "é") for k in PLACEHOLDERS},
                          unsubscribe_url=f"https://digest.example.org/u/{i}.tok")
                 for i, name in enumerate(names)]
    sender = Sender("digest@example.org", "MS Digest", reply_to="help@example.org")
    for options in ({}, {"asm_group_id": 42, "sandbox": True}):
        assert _json.loads(encode_payload(rendered, envelopes, sender, **options)) == \
            build_payload(rendered, envelopes, sender, **options)
        assert encode_payload(rendered, envelopes, sender, **options) == \
            _json.dumps(build_payload(rendered, envelopes, sender, **options), separators=(",", ":"))


#: Text JSON must escape or that only some columns hold: quotes, backslashes, controls, DEL, non-ASCII,
#: astral characters, lone surrogates, separators, and what a placeholder or a JSON key looks like.
HOSTILE = st.one_of(st.text(max_size=12), st.text(st.characters(max_codepoint=127), max_size=12), st.lists(st.sampled_from(
    ['"', "\\", "\n", "\r", "\x00", "\x1f", "\x7f", "é", "😀", "\ud800", "\u2028", "</", "-nl-utok-", '","name":"',
     "%s", "%d", "{", "a", " "]), max_size=6).map("".join))


@settings(max_examples=200)
@given(rows=st.lists(st.tuples(HOSTILE, HOSTILE, st.lists(HOSTILE, min_size=4, max_size=4), HOSTILE,
                               st.integers(0, 2**63)), min_size=1, max_size=8),
       issue_id=st.integers(0, 2**31), subject=HOSTILE)
def test_the_fast_encoder_writes_the_reference_bytes_for_any_text(rows, issue_id, subject):
    """Whatever the recipients' strings, the body is json.dumps of the reference dict, byte for byte."""
    from newsletter.messengers.sendgrid import encode_payload
    from newsletter.model import Envelope, Rendered, Sender

    rendered = Rendered(issue_id=issue_id, segment="patients", cadence="weekly", variant="all", subject=subject,
                        preheader="", html="<p>-nl-hgreet-</p>", text="-nl-tgreet-", summary_ids=[1], full_cards=1)
    envelopes = [Envelope(delivery_id=big, subscriber_id=i, email=f"{i}{email}", name=name,
                          values=dict(zip(PLACEHOLDERS, values)), unsubscribe_url=url)
                 for i, (email, name, values, url, big) in enumerate(rows)]
    sender = Sender("digest@example.org", "MS Digest")
    assert encode_payload(rendered, envelopes, sender) == json.dumps(build_payload(rendered, envelopes, sender),
                                                                     separators=(",", ":"))


@pytest.mark.parametrize("column", ["email", "name", "value", "url"])
def test_every_ascii_character_is_written_as_json_writes_it(column):
    """Each of the 128 ASCII characters alone in an otherwise plain column (the case checked in bulk)."""
    from newsletter.messengers.sendgrid import encode_payload
    from newsletter.model import Envelope, Rendered, Sender

    rendered = Rendered(issue_id=1, segment="patients", cadence="weekly", variant="all", subject="s",
                        preheader="", html="h", text="t", summary_ids=[1], full_cards=1)
    sender = Sender("digest@example.org", "MS Digest")
    for code in range(128):
        odd = f"a{chr(code)}b"
        plain = {"email": "r@example.org", "name": "Ann", "value": "tok", "url": "https://x.example/u/1"}
        envelopes = [Envelope(i + 1, i + 1, f"{i}{odd if column == 'email' and i else plain['email']}",
                              odd if column == "name" and i else plain["name"],
                              {k: odd if column == "value" and i else plain["value"] for k in PLACEHOLDERS},
                              odd if column == "url" and i else plain["url"]) for i in range(2)]
        assert encode_payload(rendered, envelopes, sender) == json.dumps(
            build_payload(rendered, envelopes, sender), separators=(",", ":")), repr(chr(code))
