"""The audit log: a row for every action reachable from the web and the CLI, the subscriber actions' rules
(suppress, lift, erase), `/editor/audit`, `newsletter audit --since --json`, and who approved an issue."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from newsletter.cli import cli
from newsletter.store import Refused
from tests.test_web import (EDITOR, HASH, PASSWORD, active_subscriber, clock, drafts, form_token, login,  # noqa: F401
                            mails_to, make_app)

CLI_ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def admin(drafts, make_app):
    client = make_app(drafts).test_client()
    assert login(client).status_code == 303
    return client


def post(client, path: str, **data):
    return client.post(path, data={"csrf_token": form_token(client, "/"), **data})


def newest(ctx, action: str) -> dict:
    rows = ctx.store.audit_entries(action=action, limit=1)
    assert rows, f"no audit row {action}"
    return rows[0]


def test_issue_actions_and_logins_from_the_web_are_recorded(drafts, make_app, admin):
    assert post(admin, "/editor/issues/1/approve").status_code == 303
    assert post(admin, "/editor/issues/2/cancel").status_code == 303
    assert post(admin, "/editor/issues/1/test", address="Editor@Example.org").status_code == 303
    assert newest(drafts, "issue.approve") | {"at": None, "id": None} == {
        "at": None, "id": None, "actor": EDITOR, "action": "issue.approve", "target": "issue:1",
        "detail": {"status": ["draft", "approved"]}}
    assert newest(drafts, "issue.cancel")["target"] == "issue:2"
    assert newest(drafts, "issue.test-send")["detail"] == {"to": "editor@example.org"}
    page = admin.get("/editor/issues/1").get_data(as_text=True)
    assert f"by {EDITOR}" in page  # the issue page shows who approved it
    post(admin, "/editor/logout")
    other = make_app(drafts).test_client()
    assert login(other, password="wrong password").status_code == 401
    assert login(other, name="mallory", password="x").status_code == 401
    actions = [(r["actor"], r["action"]) for r in drafts.store.audit_entries(action="login.")]
    assert actions[:2] == [("unknown", "login.failed"), (EDITOR, "login.failed")]  # the typed name is not kept
    assert "mallory" not in str(drafts.store.audit_entries(limit=None))
    assert (EDITOR, "login") in actions and newest(drafts, "logout")["actor"] == EDITOR


def test_every_subscriber_action_from_the_web_is_recorded(drafts, admin):
    sub = active_subscriber(drafts)
    base = f"/editor/subscribers/{sub['id']}"
    assert post(admin, f"{base}/preferences", segment="clinicians", cadence="monthly", topics=[]).status_code == 303
    row = newest(drafts, "subscriber.preferences")
    assert row["target"] == f"subscriber:{sub['id']}" and row["detail"]["segment"] == [sub["segment"], "clinicians"]
    assert post(admin, f"{base}/suppress", reason="asked by phone").status_code == 303
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "unsubscribed"
    assert post(admin, f"{base}/lift").status_code == 303
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"
    pending = drafts.store.sign_up("late@example.org", "patients", "weekly", [])
    assert post(admin, f"/editor/subscribers/{pending['id']}/resend").status_code == 303
    assert len(mails_to(drafts, "late@example.org")) == 1
    export = post(admin, "/editor/subscribers/export", segment="clinicians")
    assert export.status_code == 200 and sub["email"] in export.get_data(as_text=True)
    assert newest(drafts, "subscriber.export")["detail"] == {"segment": "clinicians"}
    assert post(admin, f"{base}/erase", confirm="not the address").status_code == 303
    assert drafts.store.get_subscriber(id=sub["id"]) is not None
    assert post(admin, f"{base}/erase", confirm=sub["email"]).status_code == 303
    assert drafts.store.get_subscriber(id=sub["id"]) is None and drafts.store.is_suppressed(sub["email"])
    history = drafts.store.audit_entries(target=f"subscriber:{sub['id']}", limit=None)
    assert [r["action"] for r in history] == ["subscriber.erase", "subscriber.lift", "subscriber.suppress",
                                              "subscriber.preferences"]
    assert all(r["detail"] == {} for r in history)  # the erasure left no segment, reason or topic behind
    assert newest(drafts, "subscriber.resend-confirmation")["target"] == f"subscriber:{pending['id']}"


def test_the_audit_page_filters_by_actor_and_action_and_pages(drafts, make_app, admin):
    for n in range(105):
        drafts.store.record_audit("bob" if n % 2 else "carol", "issue.approve", f"issue:{n}")
    page = admin.get("/editor/audit?actor=bob").get_data(as_text=True)
    assert "carol" not in page.split("<tbody>")[1] and "issue:103" in page
    first = admin.get("/editor/audit").get_data(as_text=True)
    assert "Older entries" in first and "issue:104" in first and "issue:0<" not in first
    older_link = first.split("Older entries")[0].split('href="')[-1].split('"')[0]  # the last link before it
    older = admin.get(older_link.replace("&amp;", "&")).get_data(as_text=True)
    assert "issue:0<" in older
    only_logins = admin.get("/editor/audit?action=login").get_data(as_text=True)
    assert "issue.approve" not in only_logins.split("<tbody>")[1]


def test_editor_and_issue_commands_are_recorded_with_the_os_user(drafts, runner, tmp_path):
    path = Path(drafts.config.source)

    def run(*args, **kw):
        result = runner.invoke(cli, ["--config", str(path), *args], catch_exceptions=False, **kw)
        assert result.exit_code == 0, result.output
        return result

    run("editors", "add", "bob", "--role", "approver", input=f"{PASSWORD}\n{PASSWORD}\n")
    run("editors", "add", "bob", input="another password\nanother password\n")
    run("editors", "role", "bob", "admin")
    run("issues", "approve", "1")
    run("issues", "cancel", "2")
    run("issues", "test-send", "1", "--to", "ed@example.org")
    run("editors", "remove", "bob")
    rows = drafts.store.audit_entries(limit=None)
    assert {r["actor"] for r in rows} == {CLI_ACTOR}
    assert [(r["action"], r["target"]) for r in reversed(rows)] == [
        ("editor.add", "editor:bob"), ("editor.password", "editor:bob"), ("editor.role", "editor:bob"),
        ("issue.approve", "issue:1"), ("issue.cancel", "issue:2"), ("issue.test-send", "issue:1"),
        ("editor.remove", "editor:bob")]
    assert rows[-3]["detail"] == {"role": ["approver", "admin"]}


def test_editors_list_shows_roles_and_second_factors(drafts, runner):
    path = Path(drafts.config.source)
    runner.invoke(cli, ["--config", str(path), "editors", "add", "bob", "--role", "approver"],
                  input=f"{PASSWORD}\n{PASSWORD}\n", catch_exceptions=False)
    result = runner.invoke(cli, ["--config", str(path), "editors", "list"], catch_exceptions=False)
    assert result.output.split() == ["bob", "approver", "2fa", "off"]


def test_newsletter_audit_since_and_json(drafts, runner):
    store = drafts.store
    store.record_audit("alice", "issue.approve", "issue:1", {"status": ["draft", "approved"]})
    store.conn.execute("UPDATE audit_log SET at = '2026-01-05T10:00:00+00:00'")
    store.record_audit("bob", "subscriber.suppress", "subscriber:3", {"reason": "asked"})
    path = str(drafts.config.source)
    plain = runner.invoke(cli, ["--config", path, "audit"], catch_exceptions=False)
    assert plain.exit_code == 0 and len(plain.output.splitlines()) == 2 and "reason: asked" in plain.output
    recent = runner.invoke(cli, ["--config", path, "audit", "--since", "2026-02-01", "--json"],
                           catch_exceptions=False)
    [line] = recent.output.splitlines()
    assert json.loads(line)["actor"] == "bob" and json.loads(line)["detail"] == {"reason": "asked"}
    group = runner.invoke(cli, ["--config", path, "audit", "--action", "issue."], catch_exceptions=False)
    assert "issue.approve" in group.output and "subscriber" not in group.output
    bad = runner.invoke(cli, ["--config", path, "audit", "--since", "last week"])
    assert bad.exit_code == 2 and "not an ISO date" in bad.output


# -- the rules of suppressing and lifting ------------------------------------------------------------------

def test_lifting_never_undoes_a_complaint_or_the_readers_own_unsubscribe(drafts):
    store = drafts.store
    sub = active_subscriber(drafts)
    store.set_subscriber_status(sub["id"], "complained")
    with pytest.raises(Refused, match="spam"):
        store.editor_lift(sub["id"], EDITOR, bounce_confirmed=True)
    store.set_subscriber_status(sub["id"], "unsubscribed")  # the reader's own link
    with pytest.raises(Refused, match="themselves"):
        store.editor_lift(sub["id"], EDITOR)
    store.set_subscriber_status(sub["id"], "bounced")
    with pytest.raises(Refused, match="tick the box"):
        store.editor_lift(sub["id"], EDITOR)
    assert store.editor_lift(sub["id"], EDITOR, bounce_confirmed=True) == "active"
    store.editor_suppress(sub["id"], "  wrong   person ", EDITOR)
    assert store.manual_suppression(sub["id"])["reason"] == "wrong person"
    store.set_subscriber_status(sub["id"], "unsubscribed")  # ...and then the reader unsubscribed too
    with pytest.raises(Refused, match="themselves"):
        store.editor_lift(sub["id"], EDITOR)
    with pytest.raises(Refused, match="reason"):
        store.editor_suppress(active_subscriber(drafts)["id"], "   ", EDITOR)


def test_a_refused_lift_changes_nothing_and_says_why_on_the_page(drafts, admin):
    sub = active_subscriber(drafts)
    drafts.store.set_subscriber_status(sub["id"], "complained")
    before = drafts.store.get_subscriber(id=sub["id"])
    response = post(admin, f"/editor/subscribers/{sub['id']}/lift", bounce_confirmed="yes")
    assert response.status_code == 303
    assert drafts.store.get_subscriber(id=sub["id"]) == before
    page = admin.get(f"/editor/subscribers/{sub['id']}").get_data(as_text=True)
    assert "no editor can lift that" in page and "Lift the" not in page
    assert drafts.store.audit_entries(action="subscriber.lift") == []


def test_the_subscriber_page_shows_their_consent_records(drafts, admin):
    sub = active_subscriber(drafts)
    before = drafts.store.consent_records(sub["id"])  # the samples' own, from their import
    drafts.store.record_consent(sub["id"], "form", "sign-up form", opted_in_at="2026-01-02T00:00:00+00:00")
    [record] = [r for r in drafts.store.consent_records(sub["id"]) if r not in before]
    assert record["basis"] == "sign-up form"
    assert "basis: sign-up form" in admin.get(f"/editor/subscribers/{sub['id']}").get_data(as_text=True)


def test_an_editor_is_told_at_once_when_a_resent_confirmation_is_not_taken(drafts, make_app, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    client = make_app(drafts, outbox=str(blocker / "outbox")).test_client()
    assert login(client).status_code == 303
    pending = drafts.store.sign_up("late@example.org", "patients", "weekly", [])
    page = client.post(f"/editor/subscribers/{pending['id']}/resend", data={"csrf_token": form_token(client, "/")},
                       follow_redirects=True).get_data(as_text=True)
    assert "Not sent: maildir: cannot open the outbox" in page
    assert drafts.store.audit_entries(action="subscriber.resend-confirmation") == []
    assert drafts.store.queued_notices() == []  # the editor decides what next; nothing queued behind their back
