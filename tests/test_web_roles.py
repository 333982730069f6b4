"""Roles against every editor route: a table of the least role each /editor rule needs, walked for every role over
the app's url_map (a new route without a line here fails), forged POSTs refused with 403 and nothing changed."""

from __future__ import annotations

import re

import pytest

from newsletter.roles import ROLES, accounts, allowed, least_role
from newsletter.web.security import permission_of
from tests.test_web import (EDITOR, HASH, PASSWORD, active_subscriber, clock, drafts, form_token, login,  # noqa: F401
                            make_app)
from tests.test_web_safety import ARGUMENT, snapshot

#: Every rule under /editor: "anyone" (no login needed), or the least role that may use it.
EXPECTED = {
    "/editor/login": "anyone",
    "/editor/login/code": "anyone",
    "/editor/logout": "anyone",
    "/editor/": "author",
    "/editor/summaries": "author",
    "/editor/issues/<int:issue_id>": "author",
    "/editor/issues/<int:issue_id>/email.html": "author",
    "/editor/issues/<int:issue_id>/email.txt": "author",
    "/editor/issues/<int:issue_id>/test": "author",
    "/editor/issues/<int:issue_id>/approve": "approver",
    "/editor/issues/<int:issue_id>/cancel": "approver",
    "/editor/issues/<int:issue_id>/schedule": "approver",
    "/editor/reports": "approver",
    "/editor/reports/issues.svg": "approver",
    "/editor/reports/subscribers.svg": "approver",
    "/editor/reports/issues.csv": "approver",
    "/editor/reports/subscribers.csv": "approver",
    "/editor/account": "author",
    "/editor/account/2fa": "author",
    "/editor/account/2fa/confirm": "author",
    "/editor/account/2fa/disable": "author",
    "/editor/editors": "admin",
    "/editor/editors/<editor_name>/2fa-reset": "admin",
    "/editor/subscribers": "admin",
    "/editor/subscribers/export": "admin",
    "/editor/subscribers/<int:subscriber_id>": "admin",
    "/editor/subscribers/<int:subscriber_id>/preferences": "admin",
    "/editor/subscribers/<int:subscriber_id>/suppress": "admin",
    "/editor/subscribers/<int:subscriber_id>/lift": "admin",
    "/editor/subscribers/<int:subscriber_id>/resend": "admin",
    "/editor/subscribers/<int:subscriber_id>/erase": "admin",
    "/editor/audit": "admin",
}
#: One editor per role (alice is in the old bare-hash form: read as admin), and one the admin may reset.
STAFF = {"ann": {"hash": HASH, "role": "author"}, "abe": {"hash": HASH, "role": "approver"}, EDITOR: HASH,
         "zed": {"hash": HASH, "role": "author"}}
BY_ROLE = {"author": "ann", "approver": "abe", "admin": EDITOR}


@pytest.fixture
def staff_app(drafts, make_app):
    return make_app(drafts, editors=STAFF)


def clients(app) -> dict[str, object]:
    out = {}
    for role, name in BY_ROLE.items():
        client = app.test_client()
        assert login(client, name, PASSWORD).status_code == 303
        out[role] = client
    return out


def editor_rules(app):
    return [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/editor")]


def test_the_old_bare_hash_form_is_read_as_admin():
    assert {name: a.role for name, a in accounts(STAFF).items()} == {"ann": "author", "abe": "approver",
                                                                     EDITOR: "admin", "zed": "author"}


def test_every_editor_route_has_a_line_in_the_table_and_its_view_says_the_same(staff_app):
    served = {rule.rule for rule in editor_rules(staff_app)}
    assert served == set(EXPECTED), f"routes without a line: {served - set(EXPECTED)}; gone: {set(EXPECTED) - served}"
    for rule in editor_rules(staff_app):
        permission = permission_of(staff_app.view_functions[rule.endpoint])
        wanted = EXPECTED[rule.rule]
        if wanted == "anyone":
            assert permission is None, rule.rule
        else:
            assert permission is not None and least_role(permission) == wanted, (rule.rule, permission)


def test_each_role_against_every_editor_route(staff_app, drafts):
    sub = active_subscriber(drafts)
    values = {"issue_id": "1", "subscriber_id": str(sub["id"]), "editor_name": "zed"}
    by_role = clients(staff_app)
    anonymous = staff_app.test_client()
    tokens = {role: form_token(client, "/editor/account") for role, client in by_role.items()}
    seen = set()
    # The forged form names the subscriber's address, so the admin's erase works: it comes last.
    for rule in sorted(editor_rules(staff_app), key=lambda r: r.rule.endswith("/erase")):
        wanted = EXPECTED[rule.rule]
        if wanted == "anyone":
            continue
        path = ARGUMENT.sub(lambda m: values[m.group(1)], rule.rule)
        method = "POST" if "POST" in rule.methods else "GET"
        for role in ROLES:
            may = ROLES.index(role) >= ROLES.index(wanted)
            before = snapshot(drafts)
            data = {"csrf_token": tokens[role]} if method == "POST" else None
            # A forged form: whatever it says, a role without the permission is refused.
            if method == "POST":
                data.update({"confirm": sub["email"], "reason": "forged", "segment": "clinicians",
                             "cadence": "monthly", "bounce_confirmed": "yes", "address": "x@example.org"})
            response = by_role[role].open(path, method=method, data=data)
            if may:
                assert response.status_code not in (403, 500), f"{role} {method} {path}: {response.status_code}"
            else:
                assert response.status_code == 403, f"{role} {method} {path}: {response.status_code}, not 403"
                assert snapshot(drafts) == before, f"{role} {method} {path}: refused, yet something changed"
            seen.add((rule.rule, role, may))
        response = anonymous.open(path, method=method, data={"csrf_token": form_token(anonymous, "/editor/login")}
                                  if method == "POST" else None)
        assert response.status_code == (403 if method == "POST" else 302), f"anonymous {method} {path}"
    assert ("/editor/subscribers", "approver", False) in seen and ("/editor/audit", "admin", True) in seen


def test_pages_show_only_what_the_role_may_do(staff_app, drafts):
    by_role = clients(staff_app)
    for role, client in by_role.items():
        nav = client.get("/editor/").get_data(as_text=True)
        page = client.get("/editor/issues/1").get_data(as_text=True)
        assert ("/editor/subscribers" in nav) == allowed(role, "subscribers"), role
        assert ("/editor/audit" in nav) == allowed(role, "audit"), role
        assert ("Approve for sending" in page) == allowed(role, "approve"), role
        assert ("Cancel this issue" in page) == allowed(role, "cancel"), role
        assert "Send test" in page


def test_a_demoted_editor_loses_the_permission_at_once(drafts, make_app):
    client = make_app(drafts, editors={EDITOR: {"hash": HASH, "role": "admin"}}).test_client()
    assert login(client).status_code == 303
    token = form_token(client, "/editor/")
    assert client.get("/editor/audit").status_code == 200
    demoted = make_app(drafts, editors={EDITOR: {"hash": HASH, "role": "author"}})  # the config changed
    replay = demoted.test_client()
    replay.set_cookie("__Host-newsletter", client.get_cookie("__Host-newsletter").value)
    assert replay.get("/editor/").status_code == 200  # the same session, the same password
    assert replay.get("/editor/audit").status_code == 403
    response = replay.post("/editor/issues/1/approve", data={"csrf_token": token})
    assert response.status_code == 403 and drafts.store.get_issue(1)["status"] == "draft"
    assert re.search(r"role \(author\)", response.get_data(as_text=True))
