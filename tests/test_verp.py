"""VERP: with `bounce_address` set, each delivery goes out with MAIL FROM `local+<delivery id>@domain`, read back
from the bounce. End to end through a real Postfix: a digest to a recipient Postfix does not have, the DSN Postfix
itself writes into the bounce Maildir, `bounces process`, and the reader marked bounced (no Postfix: a failure)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from newsletter.cli import cli
from newsletter.model import Sender
from newsletter.sources.bounces import verp_deliveries
from tests.conftest import SAMPLE_NOW, load_samples
from tests.test_smtp_postfix import relay_site

BOUNCES = "bounces@example.org"


def run(runner, ctx, *args):
    result = runner.invoke(cli, ["--config", str(ctx.config.source), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@given(st.integers(min_value=1, max_value=10**18 - 1))
def test_the_envelope_sender_is_read_back_as_its_delivery(delivery_id):
    sender = Sender("digest@example.org", bounce_address=BOUNCES)
    address = sender.envelope_from(delivery_id)
    assert address == f"bounces+{delivery_id}@example.org"
    assert verp_deliveries([address], BOUNCES) == {delivery_id}
    assert Sender("digest@example.org").envelope_from(delivery_id) == "digest@example.org"  # no bounce_address


def test_each_smtp_delivery_goes_out_from_its_verp_address(make_site, smtp_server, runner):
    ctx = make_site(backend="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                    bounce_address=BOUNCES)
    load_samples(ctx)
    run(runner, ctx, "digest", "run", "--cadence", "weekly", "--now", SAMPLE_NOW.isoformat())
    sent = {d["email"]: d["id"] for d in ctx.store.deliveries(status="sent")}
    assert sent and smtp_server.wait_for(len(sent), 10)
    assert {m.rcpt_tos[0]: m.mail_from for m in smtp_server.messages} == {
        email: f"bounces+{delivery}@example.org" for email, delivery in sent.items()}
    assert all(m["From"].addresses[0].addr_spec == "digest@example.org" for m in smtp_server.messages)


def test_a_bounce_postfix_itself_writes_marks_the_reader_bounced(make_site, make_postfix_relay, runner):
    relay = make_postfix_relay(
        mailboxes={r"^bounces(\+[0-9]+)?@example[.]org$": "bounces", r"^reader[0-9]+@example[.]org$": "inbox"},
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
    assert dsn["Delivered-To"] == f"bounces+{delivery['id']}@example.org"  # Postfix answered the VERP sender
    out = run(runner, ctx, "bounces", "process")
    assert "hard 1" in out, out
    assert ctx.store.get_subscriber("nobody-here@example.org")["status"] == "bounced"
    assert {s["status"] for s in ctx.store.subscribers() if s["id"] != ghost["id"]} == {"active"}
    assert relay.count("bounces") == 0  # moved to the processed folder, not deleted
