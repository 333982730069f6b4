"""Bounce mail: DSNs, free-text bounces and ARF complaints from several MTAs and providers (tests/data/bounces/),
matched to a real delivery of a real digest by what we put in the message, each handled once, then moved.
The same soft/hard rules for SendGrid's events."""

from __future__ import annotations

import mailbox
import os
import secrets
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from newsletter.cli import cli
from newsletter.feedback import SOFT_BOUNCE_LIMIT, process_report, record_events
from newsletter.sources.bounces import parse_report, verp_deliveries

from .conftest import delivery_of, load_samples, read_maildir
from .test_digest_basic import run_digest

DATA = Path(__file__).resolve().parent / "data" / "bounces"
DOMAIN = "example.org"  # the sender_email's domain: our Message-IDs end in it
#: fixture -> (verdict recorded, status code, subscriber status after it)
FIXTURES = {
    "postfix_user_unknown": ("hard", "5.1.1", "bounced"),
    "exim_free_text": ("hard", "5.1.1", "bounced"),
    "outlook_mailbox_unavailable": ("hard", "5.5.0", "bounced"),
    "gmail_mailbox_full_delayed": ("soft", "4.2.2", "active"),
    "yahoo_arf_abuse": ("complaint", None, "complained"),
    "outlook_jmrp_complaint": ("complaint", None, "complained"),
    "sendmail_host_unknown": ("hard", "5.1.2", "bounced"),
    "amazon_ses_suppressed": ("hard", "5.1.1", "bounced"),
    "qmail_free_text": ("hard", "5.1.1", "bounced"),
}


def fill(name: str, *, email: str, message_id: str, delivery: int | str, issue: int | str) -> bytes:
    text = (DATA / f"{name}.eml").read_text(encoding="utf-8")
    for key, value in {"DOMAIN": DOMAIN, "EMAIL": email, "MESSAGE_ID": message_id, "DELIVERY": str(delivery),
                       "ISSUE": str(issue)}.items():
        text = text.replace("{{" + key + "}}", value)
    return text.encode("utf-8")


def bounce_of(name: str, sent_message) -> bytes:
    """The fixture as that MTA would have returned this very message (its real Message-ID and headers)."""
    return fill(name, email=sent_message["To"].addresses[0].addr_spec, message_id=sent_message["Message-ID"],
                delivery=sent_message["X-Newsletter-Delivery"], issue=sent_message["X-Newsletter-Issue"])


@pytest.fixture
def sent(make_site):
    """A site whose weekly digest went out into its Maildir outbox; bounces arrive in ./bounces."""
    ctx = make_site(bounce_mailbox="maildir:bounces")
    load_samples(ctx)
    run_digest(ctx)
    ctx.outbox_messages = sorted(read_maildir(ctx.config.outbox), key=delivery_of)
    assert len(ctx.outbox_messages) >= len(FIXTURES) + 2  # some readers get no bounce at all
    return ctx


def bounce_box(ctx) -> mailbox.Maildir:
    return mailbox.Maildir(ctx.config.bounce_mailbox.removeprefix("maildir:"), create=True)


def deliver(ctx, *raws: bytes) -> None:
    box = bounce_box(ctx)
    for raw in raws:
        box.add(raw)
    box.close()


def folder_sizes(ctx) -> dict[str, int]:
    box = bounce_box(ctx)
    sizes = {"inbox": len(box)}
    sizes.update({name: len(box.get_folder(name)) for name in box.list_folders()})
    box.close()
    return sizes


def process(runner, ctx):
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "bounces", "process"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def subscriber_of(ctx, message) -> dict:
    return ctx.store.get_subscriber(message["To"].addresses[0].addr_spec)


def test_every_fixture_is_matched_to_its_delivery_and_applied_once(sent, runner):
    messages = dict(zip(FIXTURES, sent.outbox_messages))
    bystanders = sent.outbox_messages[len(FIXTURES):]
    deliver(sent, *(bounce_of(name, messages[name]) for name in FIXTURES))
    line = process(runner, sent)
    assert line.endswith(f"{len(FIXTURES)} message(s): hard 6, soft 1, complaint 2, delivered 0, ignored 0, "
                         "unmatched 0, unreadable 0"), line
    for name, (verdict, code, status) in FIXTURES.items():
        message = messages[name]
        assert subscriber_of(sent, message)["status"] == status, name
        rows = sent.store.query("SELECT * FROM bounce_reports WHERE delivery_id = ?",
                                (delivery_of(message),))
        assert [(r["verdict"], r["status_code"], r["issue_id"]) for r in rows] == [
            (verdict, code, int(message["X-Newsletter-Issue"]))], name
    assert all(subscriber_of(sent, m)["status"] == "active" for m in bystanders)
    assert folder_sizes(sent) == {"inbox": 0, "processed": len(FIXTURES)}
    # A second run finds nothing left, and a copy of a report delivered again is recognised.
    assert process(runner, sent).endswith("0 message(s): hard 0, soft 0, complaint 0, delivered 0, ignored 0, "
                                          "unmatched 0, unreadable 0")
    deliver(sent, bounce_of("gmail_mailbox_full_delayed", messages["gmail_mailbox_full_delayed"]))
    assert "soft 1" in process(runner, sent)
    subscriber = subscriber_of(sent, messages["gmail_mailbox_full_delayed"])
    assert sent.store.soft_bounce_count(subscriber["id"]) == 1  # not counted twice
    assert sent.store.query("SELECT COUNT(*) AS n FROM bounce_reports")[0]["n"] == len(FIXTURES)


def test_status_shows_bounces_and_complaints_per_issue(sent, runner):
    first, second, third = sent.outbox_messages[:3]
    deliver(sent, bounce_of("postfix_user_unknown", first), bounce_of("yahoo_arf_abuse", second),
            bounce_of("gmail_mailbox_full_delayed", third))
    process(runner, sent)
    result = runner.invoke(cli, ["--config", str(sent.config.source), "status"], catch_exceptions=False)
    issues = sorted({int(m["X-Newsletter-Issue"]) for m in (first, second, third)})
    lines = [line for line in result.output.splitlines() if line.startswith("Bounces: ")]
    assert [int(line.split()[2].rstrip(":")) for line in lines] == issues
    totals = [sum(int(n) for n in line.split(":")[2].replace(",", " ").split() if n.isdigit()) for line in lines]
    assert sum(totals) == 3


def test_a_verp_address_names_the_delivery_when_bounce_address_is_set(sent, runner, tmp_path):
    message = sent.outbox_messages[0]
    raw = bounce_of("verp_only_postfix", message).replace(b"bounces+", b"Bounces+")  # local parts are compared
    deliver(sent, raw)                                                                 # case-insensitively
    without = process(runner, sent)
    assert "unmatched 1" in without and subscriber_of(sent, message)["status"] == "active"
    assert folder_sizes(sent)["unreadable"] == 1

    config = Path(sent.config.source)
    config.write_text(f'bounce_address = "bounces@{DOMAIN}"\n' + config.read_text())  # before [editors]
    deliver(sent, raw.replace(b"<20261123070040.", b"<20261130070040."))  # the next bounce, a week later
    assert "hard 1" in process(runner, sent)
    assert subscriber_of(sent, message)["status"] == "bounced"


def test_an_address_alone_or_a_forged_issue_marks_nobody(sent, runner):
    a, b = sent.outbox_messages[:2]
    email = a["To"].addresses[0].addr_spec
    # The original is not returned: only the address is known. Nobody is marked.
    no_original = fill("postfix_user_unknown", email=email, message_id="<x@elsewhere.example>", delivery="",
                       issue="").replace(b"X-Newsletter-Delivery: \n", b"").replace(b"X-Newsletter-Issue: \n", b"")
    # Our headers, but the Message-ID's issue is not the delivery's: a forgery or a mix-up.
    delivery, issue = b["X-Newsletter-Delivery"], int(b["X-Newsletter-Issue"])
    forged = fill("postfix_user_unknown", email=b["To"].addresses[0].addr_spec,
                  message_id=f"<{issue + 50}.{delivery}.{secrets.token_hex(6)}@{DOMAIN}>", delivery=delivery,
                  issue=issue + 50)
    deliver(sent, no_original, forged, fill("out_of_office", email=email, message_id=a["Message-ID"], delivery="",
                                            issue=""), os.urandom(300))
    line = process(runner, sent)
    assert "unmatched 2" in line and "unreadable 2" in line, line
    assert subscriber_of(sent, a)["status"] == subscriber_of(sent, b)["status"] == "active"
    assert folder_sizes(sent) == {"inbox": 0, "unreadable": 4}  # kept for a person to read, never deleted


def test_a_report_naming_a_delivery_by_its_number_alone_marks_nobody(sent, runner):
    """Delivery numbers are sequential: a forger who knows one could name the next. Only the signed tag we put
    in the message counts, so a report with the bare number, or another delivery's MAC, is unmatched."""
    a, b = sent.outbox_messages[:2]
    number, issue = delivery_of(a), int(a["X-Newsletter-Issue"])
    mac_of_b = str(b["X-Newsletter-Delivery"]).partition("-")[2]
    forgeries = [fill("postfix_user_unknown", email=a["To"].addresses[0].addr_spec, delivery=tag, issue=issue,
                      message_id=f"<{issue}.{tag}.{secrets.token_hex(6)}@{DOMAIN}>")
                 for tag in (str(number), f"{number}-{mac_of_b}", f"{number}-{'0' * 12}")]
    deliver(sent, *forgeries)
    line = process(runner, sent)
    assert "hard 0" in line and "unmatched 3" in line, line
    assert subscriber_of(sent, a)["status"] == "active"
    deliver(sent, bounce_of("sendmail_host_unknown", a))  # the real one, as an MTA returned our message
    assert "hard 1" in process(runner, sent)
    assert subscriber_of(sent, a)["status"] == "bounced"


def test_three_soft_bounces_on_different_issues_in_a_row_mark_the_subscriber_bounced(loaded):
    store = loaded.store
    subscriber = store.subscribers(segment="patients", status="active")[0]
    summaries = [s["id"] for s in store.query("SELECT id FROM summaries ORDER BY id LIMIT 1")]
    deliveries = []
    for week in range(1, SOFT_BOUNCE_LIMIT + 2):
        issue_id, _ = store.create_issue("patients", subscriber["cadence"], f"2026-W{week:02}", summaries,
                                         status="approved")
        store.plan_deliveries(issue_id)
        row = [d for d in store.deliveries(issue_id=issue_id) if d["subscriber_id"] == subscriber["id"]][0]
        deliveries.append((issue_id, row["id"]))

    def soft(issue_id: int, delivery_id: int, copy: int = 0) -> str:
        raw = fill("gmail_mailbox_full_delayed", email=subscriber["email"], delivery=delivery_id, issue=issue_id,
                   message_id=f"<{issue_id}.{delivery_id}.{secrets.token_hex(6)}@{DOMAIN}>")
        return process_report(store, raw.replace(b"GMR@mx.google.com", f"{issue_id}-{copy}@mx.google.com".encode()))

    status = lambda: store.get_subscriber(id=subscriber["id"])["status"]  # noqa: E731
    assert [soft(*deliveries[0], copy) for copy in range(3)] == ["soft", "soft", "soft"]  # one issue, retried
    assert store.soft_bounce_count(subscriber["id"]) == 1 and status() == "active"
    soft(*deliveries[1])
    assert store.soft_bounce_count(subscriber["id"]) == 2 and status() == "active"
    # A successful delivery in between ends the run (SendGrid's delivered event here).
    record_events(store, "sendgrid", [{"event": "delivered", "sg_event_id": "d-1", "email": subscriber["email"],
                                       "issue_id": str(deliveries[1][0]), "subscriber_id": str(subscriber["id"]),
                                       "timestamp": 1795417200}])
    assert store.soft_bounce_count(subscriber["id"]) == 0
    for issue_id, delivery_id in deliveries[1:]:
        soft(issue_id, delivery_id, copy=1)
    assert store.soft_bounce_count(subscriber["id"]) == SOFT_BOUNCE_LIMIT
    assert status() == "bounced"


def sendgrid_event(kind: str, sub: dict, issue: int, n: int, **extra) -> dict:
    return {"event": kind, "sg_event_id": f"{kind}-{issue}-{n}", "email": sub["email"], "issue_id": str(issue),
            "subscriber_id": str(sub["id"]), "timestamp": 1795417200 + n, **extra}


@pytest.mark.parametrize("kind, extra", [("bounce", {"type": "blocked", "status": "5.7.1"}), ("deferred", {}),
                                         ("bounce", {"type": "bounce", "status": "4.2.2"})])
def test_sendgrid_blocks_deferrals_and_4xx_bounces_are_soft_under_the_same_rule(loaded, kind, extra):
    store = loaded.store
    sub = store.subscribers(status="active")[0]
    for issue in range(1, SOFT_BOUNCE_LIMIT):
        counts = record_events(store, "sendgrid", [sendgrid_event(kind, sub, issue, n, **extra) for n in range(2)])
        assert counts["stored"] == 2
    assert store.get_subscriber(id=sub["id"])["status"] == "active"
    assert store.soft_bounce_count(sub["id"]) == SOFT_BOUNCE_LIMIT - 1
    record_events(store, "sendgrid", [sendgrid_event(kind, sub, SOFT_BOUNCE_LIMIT, 9, **extra)])
    assert store.get_subscriber(id=sub["id"])["status"] == "bounced"
    assert store.bounce_counts()[1] == {"hard": 0, "soft": 2, "complaint": 0}


def test_a_sendgrid_5xx_bounce_and_a_spam_report_are_hard_and_complaint(loaded):
    store = loaded.store
    a, b = store.subscribers(status="active")[:2]
    record_events(store, "sendgrid", [sendgrid_event("bounce", a, 4, 1, type="bounce", status="5.1.1"),
                                      sendgrid_event("spamreport", b, 4, 2)])
    assert store.get_subscriber(id=a["id"])["status"] == "bounced"
    assert store.get_subscriber(id=b["id"])["status"] == "complained"
    assert store.bounce_counts() == {4: {"hard": 1, "soft": 0, "complaint": 1}}


def test_a_removed_subscriber_leaves_no_soft_bounce_or_report_pointing_at_them(loaded):
    store = loaded.store
    sub = store.subscribers(status="active")[0]
    record_events(store, "sendgrid", [sendgrid_event("deferred", sub, 1, 1)])
    assert store.soft_bounce_count(sub["id"]) == 1
    store.remove_subscriber(sub["email"])
    assert store.soft_bounce_count(sub["id"]) == 0
    assert store.query("SELECT subscriber_id FROM bounce_reports") == [{"subscriber_id": None}]


def test_without_a_bounce_mailbox_the_command_says_which_setting(site, runner):
    result = runner.invoke(cli, ["--config", str(site.config.source), "bounces", "process"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: {site.config.source}: bounce_mailbox: not set (e.g. maildir:/srv/bounces "
                                     "or imaps://bounces@imap.example.org/INBOX)")


def test_a_missing_bounce_maildir_is_one_line(make_site, runner):
    ctx = make_site(bounce_mailbox="maildir:nowhere")
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "bounces", "process"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"Error: {ctx.config.bounce_mailbox.removeprefix('maildir:')}: "
                                            "bounce_mailbox: cannot read this Maildir")


# -- outside text: never a crash, never a match by accident -------------------------------------------

@given(st.binary(max_size=3000))
def test_any_bytes_parse_without_raising(raw):
    report = parse_report(raw)
    assert report.ref
    assert report.kind in ("dsn", "arf", "bounce", "unknown")


@given(st.text(max_size=400), st.sampled_from(sorted(FIXTURES)))
def test_any_text_inside_a_report_parses_without_raising(noise, name):
    raw = fill(name, email="ana@example.com", message_id=noise, delivery=noise, issue=noise)
    report = parse_report(raw + noise.encode("utf-8", "surrogatepass"))
    assert all(isinstance(d, str) and d.partition("-")[0].isdigit() for d in report.deliveries)


@given(st.text(max_size=60), st.integers(min_value=0, max_value=10**12))
def test_verp_reads_only_our_own_pattern(local, delivery):
    assert verp_deliveries([f"bounces+{delivery}@example.org"], "bounces@example.org") == {str(delivery)}
    assert verp_deliveries([f"bounces+{delivery}@example.org.evil"], "bounces@example.org") == set()
    assert verp_deliveries([f"{local}@example.org"], "bounces@example.org") <= (
        {local[8:].lower()} if local.lower().startswith("bounces+") else set())


def test_schedule_cron_processes_bounces_with_a_command_that_exists(runner):
    crontab = (Path(__file__).resolve().parent.parent / "schedule.cron").read_text()
    lines = [line for line in crontab.splitlines() if "bounces process" in line and not line.startswith("#")]
    assert len(lines) == 1
    minute, hour, day, month, weekday = lines[0].split()[:5]
    assert (hour, day, month, weekday) == ("*", "*", "*", "*") and minute.count(",") == 1  # twice an hour
    assert runner.invoke(cli, ["bounces", "process", "--help"], catch_exceptions=False).exit_code == 0


def test_digits_of_other_scripts_in_a_report_neither_crash_nor_match(sent, runner):
    """`\\d` takes Arabic-Indic digits too; no tag of ours holds them, and the run goes on to the next message."""
    a, b = sent.outbox_messages[:2]
    hostile = fill("postfix_user_unknown", email=a["To"].addresses[0].addr_spec, delivery="١٢",
                   issue=a["X-Newsletter-Issue"], message_id=f"<{a['X-Newsletter-Issue']}.١٢.{'a' * 12}@{DOMAIN}>")
    deliver(sent, hostile, bounce_of("sendmail_host_unknown", b))
    line = process(runner, sent)
    assert "hard 1" in line and "unmatched 1" in line, line
    assert subscriber_of(sent, a)["status"] == "active" and subscriber_of(sent, b)["status"] == "bounced"


def test_a_message_that_cannot_be_handled_goes_to_unreadable_and_the_rest_are_handled(sent, monkeypatch):
    import newsletter.feedback as feedback
    a, b = sent.outbox_messages[:2]
    deliver(sent, bounce_of("postfix_user_unknown", a), bounce_of("sendmail_host_unknown", b))
    real, calls = feedback.process_report, []

    def first_one_breaks(store, raw, *args):
        calls.append(raw)
        if len(calls) == 1:
            raise ValueError("an input nobody thought of")
        return real(store, raw, *args)

    monkeypatch.setattr(feedback, "process_report", first_one_breaks)
    from newsletter.sources.bounces import MaildirBounces
    box = MaildirBounces(sent.config.bounce_mailbox.removeprefix("maildir:"))
    counts = feedback.process_mailbox(sent.store, box, "", b"")
    box.close()
    assert counts["unreadable"] == 1 and sum(counts.values()) == 2
    assert folder_sizes(sent)["inbox"] == 0 and folder_sizes(sent)["unreadable"] >= 1


def test_bare_ids_of_mail_sent_before_tags_were_signed_match_for_a_while(sent, runner):
    """A site upgraded with mail in flight: its bounces carry bare ids, accepted up to the last such id, 30 days."""
    a, b = sent.outbox_messages[:2]
    last = max(d["id"] for d in sent.store.deliveries())
    sent.store.conn.execute("UPDATE ledger_marks SET value = ? WHERE name = 'unsigned_ids_upto'", (last,))
    bare = lambda m, name: fill(name, email=m["To"].addresses[0].addr_spec, delivery=delivery_of(m),  # noqa: E731
                                issue=m["X-Newsletter-Issue"],
                                message_id=f"<{m['X-Newsletter-Issue']}.{delivery_of(m)}.{'b' * 12}@{DOMAIN}>")
    deliver(sent, bare(a, "postfix_user_unknown"))
    assert "hard 1" in process(runner, sent)
    assert subscriber_of(sent, a)["status"] == "bounced"
    sent.store.conn.execute("UPDATE ledger_marks SET at = '2020-01-01T00:00:00+00:00'")  # the grace is over
    deliver(sent, bare(b, "sendmail_host_unknown"))
    assert "unmatched 1" in process(runner, sent)
    assert subscriber_of(sent, b)["status"] == "active"


def test_bounces_are_not_processed_without_the_secret_that_signs_the_tags(sent, runner, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    secret_file = Path(sent.config.source).parent / ".newsletter-secret"
    if secret_file.exists():
        secret_file.unlink()
    deliver(sent, bounce_of("postfix_user_unknown", sent.outbox_messages[0]))
    result = runner.invoke(cli, ["--config", str(sent.config.source), "bounces", "process"])
    assert result.exit_code == 1 and "NEWSLETTER_SECRET" in result.output, result.output
    assert folder_sizes(sent)["inbox"] == 1  # nothing was read, nothing moved


#: digits of many scripts (str.isdigit and `\\d` take them all), alone or as a tag with a MAC
DIGITS = st.text(alphabet="0123456789\u0660\u0661\u0662\u06f1\u0967\u07c1\uff11\U0001d7cf", min_size=1, max_size=8)
TAG_LIKE = st.one_of(DIGITS, st.builds(lambda d, mac: f"{d}-{mac}", DIGITS,
                                       st.text(alphabet="0123456789abcdef", min_size=12, max_size=12)))


@given(noise=st.one_of(st.text(max_size=60), TAG_LIKE), name=st.sampled_from(sorted(FIXTURES)))
def test_any_text_where_our_ids_go_is_handled_without_raising_and_marks_nobody_unsigned(sent, noise, name):
    """Whatever a report carries where our delivery tag, Message-ID or issue goes, handling it never raises, and
    nothing but a tag that verifies marks anyone."""
    a = sent.outbox_messages[0]
    before = subscriber_of(sent, a)["status"]
    raw = fill(name, email=a["To"].addresses[0].addr_spec, delivery=noise, issue=noise,
               message_id=f"<{noise}.{noise}.{'c' * 12}@{DOMAIN}>")
    verdict = process_report(sent.store, raw + noise.encode("utf-8", "surrogatepass"), "", b"key")
    assert isinstance(verdict, str)
    assert subscriber_of(sent, a)["status"] == before
