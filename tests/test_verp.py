"""VERP: with `bounce_address` set, each delivery goes out with MAIL FROM `local+<delivery tag>@domain` (its id
signed with a key from NEWSLETTER_SECRET), read back from the bounce. End to end through a real Postfix: a digest to a recipient Postfix does not have, the DSN Postfix
itself writes into the bounce Maildir, `bounces process`, and the reader marked bounced (no Postfix: a failure)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from newsletter.cli import cli
from newsletter.model import Sender, delivery_tag, delivery_tag_key, read_delivery_tag
from newsletter.sources.bounces import verp_deliveries
from tests.conftest import SAMPLE_NOW, load_samples, tag_of
from tests.test_smtp_postfix import relay_site

BOUNCES = "bounces@example.org"


def run(runner, ctx, *args):
    result = runner.invoke(cli, ["--config", str(ctx.config.source), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@given(st.integers(min_value=1, max_value=10**18 - 1), st.sampled_from(["", "a secret", "another"]))
def test_the_envelope_sender_is_read_back_as_its_delivery(delivery_id, secret):
    key = delivery_tag_key(secret)
    sender = Sender("digest@example.org", bounce_address=BOUNCES, tag_key=key)
    address = sender.envelope_from(delivery_id)
    assert address == f"bounces+{delivery_tag(key, delivery_id)}@example.org"
    [tag] = verp_deliveries([address.upper()], BOUNCES)  # some MTAs change the case of the local part
    assert read_delivery_tag(key, tag) == delivery_id
    assert Sender("digest@example.org").envelope_from(delivery_id) == "digest@example.org"  # no bounce_address


@given(st.integers(min_value=1, max_value=10**18 - 1), st.integers(min_value=1, max_value=10**18 - 1),
       st.text(alphabet="0123456789abcdef", min_size=12, max_size=12))
def test_a_guessed_or_borrowed_tag_never_verifies(delivery_id, other, mac):
    key = delivery_tag_key("a secret")
    assert read_delivery_tag(key, str(delivery_id)) is None  # the bare number, as before tags were signed
    assert read_delivery_tag(delivery_tag_key("another secret"), delivery_tag(key, delivery_id)) is None
    guessed = f"{delivery_id}-{mac}"
    assert read_delivery_tag(key, guessed) == (delivery_id if guessed == delivery_tag(key, delivery_id) else None)
    if other != delivery_id:  # a real tag of one delivery says nothing of another
        assert read_delivery_tag(key, f"{other}-{delivery_tag(key, delivery_id).partition('-')[2]}") is None


def test_each_smtp_delivery_goes_out_from_its_verp_address(make_site, smtp_server, runner):
    ctx = make_site(backend="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                    bounce_address=BOUNCES)
    load_samples(ctx)
    run(runner, ctx, "digest", "run", "--cadence", "weekly", "--now", SAMPLE_NOW.isoformat())
    sent = {d["email"]: d["id"] for d in ctx.store.deliveries(status="sent")}
    assert sent and smtp_server.wait_for(len(sent), 10)
    assert {m.rcpt_tos[0]: m.mail_from for m in smtp_server.messages} == {
        email: f"bounces+{tag_of(ctx, delivery)}@example.org" for email, delivery in sent.items()}
    assert all(m["From"].addresses[0].addr_spec == "digest@example.org" for m in smtp_server.messages)


def test_a_bounce_postfix_itself_writes_marks_the_reader_bounced(make_site, make_postfix_relay, runner):
    relay = make_postfix_relay(
        mailboxes={r"^bounces(\+[0-9a-f-]+)?@example[.]org$": "bounces", r"^reader[0-9]+@example[.]org$": "inbox"},
        main_cf={"smtpd_reject_unlisted_recipient": "no"})  # accept the unknown reader, then bounce it for real
    ctx = relay_site(make_site, relay, 4, segments=("patients",), bounce_address=BOUNCES,
                     bounce_mailbox=f"maildir:{relay.maildir('bounces')}")
    ctx.store.upsert_subscribers([{"email": "nobody-here@example.org", "segment": "patients", "cadence": "weekly",
                                   "topics": [], "status": "active"}])
    out = run(runner, ctx, "digest", "run", "--cadence", "weekly", "--now", SAMPLE_NOW.isoformat())
    assert "sent 5, failed 0" in out
    ghost = ctx.store.get_subscriber("nobody-here@example.org")
    [delivery] = [d for d in ctx.store.deliveries(status="sent") if d["subscriber_id"] == ghost["id"]]
    assert relay.wait_for(4, 60) and relay.wait_for(1, 60, name="bounces"), relay.log()[-2000:]
    [dsn] = relay.messages("bounces")
    assert dsn.get_content_type() == "multipart/report" and dsn.get_param("report-type") == "delivery-status"
    assert dsn["Delivered-To"] == f"bounces+{tag_of(ctx, delivery['id'])}@example.org"  # Postfix answered the VERP sender
    out = run(runner, ctx, "bounces", "process")
    assert "hard 1" in out, out
    assert ctx.store.get_subscriber("nobody-here@example.org")["status"] == "bounced"
    assert {s["status"] for s in ctx.store.subscribers() if s["id"] != ghost["id"]} == {"active"}
    assert relay.count("bounces") == 0  # moved to the processed folder, not deleted
