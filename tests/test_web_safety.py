"""What link scanners, robots and guessers can do to the web app: nothing but read. Every route walked with the
safe methods over a real SQLite file; sign-up and login limits in that file; editors' sessions ended server-side."""

from __future__ import annotations

import re
import sqlite3
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import template_rendered
from hypothesis import given, strategies as st
from werkzeug.security import generate_password_hash

from newsletter.cli import cli
from newsletter.settings import load_config
from newsletter.sources.subscribers import SubscriberError, normalise_email
from newsletter.web import create_app
from newsletter.web.limits import mailbox_of, network_of
from newsletter.web.security import EDITOR_SESSION_KEY
from tests.test_web import (EDITOR, PASSWORD, active_subscriber, app, client, clock, drafts,  # noqa: F401
                            form_token, logged_in, login, mails_to, make_app, messages, subscribe, text_of, tokens)

SAFE = ("HEAD", "OPTIONS", "GET")


def snapshot(ctx) -> list[str]:
    """Every table of the database file, schema and rows, as SQL text (read on a connection of its own)."""
    conn = sqlite3.connect(ctx.config.database)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# -- safe methods change nothing ------------------------------------------------------------------

def valid_arguments(ctx) -> dict[str, str]:
    """A working value for every URL argument name the app uses. A new name must be added here."""
    t = tokens(ctx)
    pending = ctx.store.sign_up("walker@example.org", "patients", "weekly", [])
    active = active_subscriber(ctx)
    ctx.store.set_issue_status(2, "sent")
    return {"confirm_token": t.sign("confirm", pending["id"]), "preferences_token": t.sign("preferences", active["id"]),
            "unsubscribe_token": t.sign("unsubscribe", active["id"]), "access_token": t.sign("access", active["id"]),
            "issue_id": "2", "variant": "all",
            "filename": "site.css", "slug": ctx.store.summaries()[0]["slug"], "subscriber_id": str(active["id"]),
            "editor_name": EDITOR}


ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def test_every_route_answers_head_options_and_get_without_changing_any_table(app, drafts):
    values = valid_arguments(drafts)
    anonymous, editor = app.test_client(), app.test_client()
    assert login(editor).status_code == 303
    before = snapshot(drafts)
    walked = set()
    for rule in app.url_map.iter_rules():
        unknown = set(rule.arguments) - set(values)
        if unknown:
            pytest.fail(f"{rule.rule}: no valid value for <{', '.join(sorted(unknown))}>: add one to valid_arguments")
        path = ARGUMENT.sub(lambda m: values[m.group(1)], rule.rule)
        for who, client in (("anonymous", anonymous), ("editor", editor)):
            answers = {}
            for method in SAFE:
                with client.open(path, method=method) as response:
                    body = response.get_data()
                answers[method] = response.status_code
                assert response.status_code < 500, f"{method} {path} ({who}): {response.status_code}"
                assert snapshot(drafts) == before, f"{method} {path} ({who}) changed the database"
                if method == "HEAD":
                    assert body == b""
                if method == "OPTIONS":
                    assert response.status_code == 200 and "GET" in response.headers["Allow"] or \
                        "GET" not in rule.methods
            assert answers["HEAD"] == answers["GET"], f"{path} ({who}): HEAD {answers['HEAD']}, GET {answers['GET']}"
            walked.add((rule.rule, who, answers["GET"]))
    assert ("/", "anonymous", 200) in walked
    assert ("/confirm/<confirm_token>", "anonymous", 200) in walked
    assert ("/editor/issues/<int:issue_id>", "editor", 200) in walked  # the editor's walk was logged in
    for reading in ("/summaries/<slug>", "/archive", "/archive.atom"):
        assert (reading, "anonymous", 200) in walked, reading
    assert editor.get("/editor/").status_code == 200


def test_head_to_the_links_in_a_mail_changes_nothing(client, drafts):
    """The issue's cases: a HEAD to one-click unsubscribe, delete and confirm links acted as a POST."""
    sub = active_subscriber(drafts)
    pending = drafts.store.sign_up("new@example.org", "patients", "weekly", [])
    t = tokens(drafts)
    before = snapshot(drafts)
    for path in (f"/u/{t.sign('unsubscribe', sub['id'])}", f"/p/{t.sign('preferences', sub['id'])}/delete",
                 f"/confirm/{t.sign('confirm', pending['id'])}", "/"):
        assert client.head(path).status_code == 200, path
        assert client.options(path).status_code == 200, path
    assert snapshot(drafts) == before


def test_only_post_routes_change_state_and_each_route_has_one_view_per_method(app):
    for rule in app.url_map.iter_rules():
        methods = rule.methods - {"HEAD", "OPTIONS"}
        assert len(methods) == 1, f"{rule.rule}: one view per method, not {sorted(methods)}"


# -- sign-ups ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address,mailbox", [
    ("john.smith+news@gmail.com", "johnsmith@gmail.com"), ("J.O.H.N.smith@googlemail.com", "johnsmith@gmail.com"),
    ("ann.lee+x+y@example.org", "ann.lee@example.org"), ("+only@example.org", "+only@example.org")])
def test_mailbox_of_folds_plus_tags_and_gmails_dots(address, mailbox):
    assert mailbox_of(normalise_email(address)) == mailbox


def test_network_of_takes_an_ipv6_slash_64_as_one_network():
    assert network_of("2001:db8:1:2::5") == network_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:3::5") != network_of("2001:db8:1:2::5")
    assert network_of("::ffff:203.0.113.9") == "203.0.113.9" == network_of("203.0.113.9")


def test_confirmations_to_one_mailbox_are_capped_across_its_spellings(drafts, make_app):
    client = make_app(drafts, SUBSCRIBE_MAX_PER_MAILBOX=2).test_client()
    spellings = ["john.smith+a@gmail.com", "johnsmith+b@googlemail.com", "j.ohnsmith@gmail.com", "johnsmith@gmail.com"]
    pages = {subscribe(client, email=address).get_data() for address in spellings}
    assert len(pages) == 1
    assert sum(len(mails_to(drafts, normalise_email(a))) for a in spellings) == 2


def test_signup_limits_survive_a_restart_and_pass_with_the_window(drafts, make_app, clock):
    client = make_app(drafts, SUBSCRIBE_MAX_PER_IP=2).test_client()
    assert subscribe(client, email="a@example.org").status_code == 200
    assert subscribe(client, email="b@example.org").status_code == 200
    restarted = make_app(drafts, SUBSCRIBE_MAX_PER_IP=2).test_client()  # a new process on the same file
    assert subscribe(restarted, email="c@example.org").status_code == 429
    assert drafts.store.get_subscriber("c@example.org") is None
    clock.now += 3601
    assert subscribe(restarted, email="c@example.org").status_code == 200


def test_signups_from_one_ipv6_network_count_together(drafts, make_app):
    client = make_app(drafts, SUBSCRIBE_MAX_PER_IP=1).test_client()
    token = form_token(client, "/")
    data = {"segment": "patients", "cadence": "weekly", "consent": "yes", "consent_health": "yes", "csrf_token": token}
    assert client.post("/", data={**data, "email": "a@example.org"},
                       environ_base={"REMOTE_ADDR": "2001:db8::1"}).status_code == 200
    assert client.post("/", data={**data, "email": "b@example.org"},
                       environ_base={"REMOTE_ADDR": "2001:db8::ff:2"}).status_code == 429
    assert client.post("/", data={**data, "email": "b@example.org"},
                       environ_base={"REMOTE_ADDR": "2001:db8:0:1::2"}).status_code == 200


def test_a_filled_honeypot_gets_the_usual_answer_and_nothing_is_stored_or_sent(client, drafts):
    reference = subscribe(client, email="person@example.org")
    before = snapshot(drafts)
    sent_before = len(messages(drafts))
    robot = subscribe(client, email="robot@example.org", website="https://spam.example/")
    assert (robot.status_code, robot.get_data()) == (reference.status_code, reference.get_data())
    assert snapshot(drafts) == before
    assert len(messages(drafts)) == sent_before


def test_the_honeypot_is_in_the_form_but_never_shown(client):
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<div class="honeypot">\s*<label for="website">', html)
    with client.get("/static/site.css") as response:
        css = response.get_data(as_text=True)
    assert re.search(r"\.honeypot\s*\{\s*display:\s*none", css)


def normalised(statement: str) -> str:
    """An SQL statement with its values taken out: what was done, not to whom."""
    statement = re.sub(r"'(?:[^']|'')*'", "?", statement)
    return re.sub(r"\b\d+(?:\.\d+)?\b", "?", " ".join(statement.split()))


def test_a_signup_does_the_same_work_whatever_the_state_of_the_address(drafts, make_app):
    app = make_app(drafts, SUBSCRIBE_MAX_PER_ADDRESS=1)
    recording: list[str] = []

    @app.before_request
    def trace() -> None:  # every SQL statement the request runs, on the app's own connection
        from newsletter.web.state import get_ctx
        get_ctx().store.conn.set_trace_callback(lambda sql: record(sql))

    def record(sql: str) -> None:
        # What SQLite runs itself for a row that is stored follows from the same statement, as its B-tree inserts
        # do unseen: the search index's shadow tables (traced with a "-- " prefix), and each trigger program,
        # traced as its parent statement again (so a repeat of the statement just traced is not a new one).
        if sql.startswith("-- "):
            return
        text = normalised(sql)
        if not recording or recording[-1] != text:
            recording.append(text)

    def rendered(sender, template, context, **extra):
        recording.append(f"template {template.name}")

    store = drafts.store
    states = ("pending", "active", "unsubscribed", "bounced", "complained")
    for status in states:
        sub = store.sign_up(f"{status}@example.org", "patients", "weekly", [])
        if status != "pending":
            store.set_subscriber_status(sub["id"], status)
    client = app.test_client()
    assert subscribe(client, email="limited@example.org").status_code == 200  # its one mail this hour
    work: dict[str, list[str]] = {}
    token = form_token(client, "/")
    template_rendered.connect(rendered, app)
    try:
        for name in ["new", *states, "limited"]:
            recording.clear()
            response = subscribe(client, email=f"{name}@example.org", csrf_token=token)
            assert response.status_code == 200
            work[name] = list(recording)
    finally:
        template_rendered.disconnect(rendered, app)
    reference = work["new"]
    assert "template public/confirmation.txt" in reference and "template public/check_inbox.html" in reference
    assert any(s.startswith("INSERT INTO subscribers") for s in reference)
    for name, done in work.items():
        assert done == reference, f"{name}: did other work than a new address"
    # ...and yet only the ones that may be mailed were.
    mailed = {name for name in work if len(mails_to(drafts, f"{name}@example.org")) > (name == "limited")}
    assert mailed == {"new", "pending", "active", "unsubscribed"}


# -- confirmation links ----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_an_old_confirmation_link_never_revives_a_bounced_or_complained_address(client, drafts, status):
    sub = drafts.store.sign_up("old@example.org", "patients", "weekly", [])
    link = f"/confirm/{tokens(drafts).sign('confirm', sub['id'])}"
    drafts.store.set_subscriber_status(sub["id"], status)
    page = client.get(link)
    assert page.status_code == 200 and "cannot restart the digest" in page.get_data(as_text=True)
    assert "Yes, subscribe me" not in page.get_data(as_text=True)
    done = client.post(link, data={"csrf_token": form_token(client, "/")})
    assert "cannot restart the digest" in done.get_data(as_text=True)
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == status


def test_an_unsubscribed_person_may_confirm_again_with_their_own_link(client, drafts):
    sub = drafts.store.sign_up("back@example.org", "patients", "weekly", [])
    link = f"/confirm/{tokens(drafts).sign('confirm', sub['id'])}"
    drafts.store.set_subscriber_status(sub["id"], "unsubscribed")
    done = client.post(link, data={"csrf_token": form_token(client, link)})
    assert "you are subscribed" in done.get_data(as_text=True)
    assert drafts.store.get_subscriber(id=sub["id"])["status"] == "active"


# -- logins ----------------------------------------------------------------------------------------------

def test_parallel_guesses_cannot_pass_the_limit(drafts, make_app):
    slow = generate_password_hash(PASSWORD, method="pbkdf2:sha256:200000")  # a wide window for a race
    app = make_app(drafts, editors={EDITOR: slow}, LOGIN_MAX_FAILURES=3, LOGIN_MAX_FAILURES_IP=100)
    clients = [app.test_client() for _ in range(8)]
    tokens_ = [form_token(c, "/editor/login") for c in clients]
    start = threading.Barrier(len(clients))
    statuses: list[int] = []

    def guess(client, token) -> None:
        start.wait()
        response = client.post("/editor/login", data={"name": EDITOR, "password": "guess", "csrf_token": token})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=guess, args=pair) for pair in zip(clients, tokens_)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [401] * 3 + [429] * 5


def test_failures_from_another_network_never_lock_the_editor_out(drafts, make_app):
    client = make_app(drafts, LOGIN_MAX_FAILURES=3).test_client()
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    answers = [login(client, password="guess", environ_base=attacker).status_code for _ in range(6)]
    assert answers == [401] * 3 + [429] * 3
    assert login(client, environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 303


def test_each_failure_past_the_limit_doubles_the_wait(drafts, make_app, clock):
    client = make_app(drafts, LOGIN_MAX_FAILURES=2, LOGIN_WINDOW_SECONDS=100).test_client()
    assert [login(client, password="guess").status_code for _ in range(2)] == [401, 401]
    assert int(login(client).headers["Retry-After"]) == 100
    clock.now += 101
    assert login(client, password="guess").status_code == 401  # allowed again, and wrong again
    blocked = login(client)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) == 200
    clock.now += 199
    assert login(client).status_code == 429
    clock.now += 2
    assert login(client).status_code == 303
    client.post("/editor/logout", data={"csrf_token": form_token(client, "/editor/")})
    assert login(client, password="guess").status_code == 401  # the success cleared this account's failures


def test_login_counters_survive_a_restart(drafts, make_app):
    client = make_app(drafts, LOGIN_MAX_FAILURES=2).test_client()
    for _ in range(2):
        login(client, password="guess")
    assert login(make_app(drafts, LOGIN_MAX_FAILURES=2).test_client()).status_code == 429


def test_the_throttle_table_names_no_address_and_no_editor(drafts, make_app):
    client = make_app(drafts).test_client()
    login(client, password="guess", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    subscribe(client, email="private.person@example.org")
    dump = "\n".join(line for line in snapshot(drafts) if "throttle_hits" in line)
    assert dump.count("INSERT") >= 5
    for secret in ("203.0.113.9", EDITOR, "private.person", "privateperson"):
        assert secret not in dump


# -- editors' sessions -----------------------------------------------------------------------------------

COOKIE = "__Host-newsletter"


def replay(app, cookie: str):
    client = app.test_client()
    client.set_cookie(COOKIE, cookie)
    return client


def test_the_cookie_holds_only_a_random_id_and_the_table_only_its_hash(client, drafts):
    login(client)
    with client.session_transaction() as session:
        assert set(session) <= {EDITOR_SESSION_KEY, "_csrf", "_flashes"}
        session_id = session[EDITOR_SESSION_KEY]
    assert len(session_id) >= 40 and EDITOR not in session_id
    [row] = drafts.store.query("SELECT * FROM editor_sessions")
    assert row["editor"] == EDITOR and session_id not in row["id_hash"]


def test_logout_ends_the_session_for_every_copy_of_the_cookie(app, client):
    login(client)
    cookie = client.get_cookie(COOKIE).value
    client.post("/editor/logout", data={"csrf_token": form_token(client, "/editor/")})
    assert not logged_in(replay(app, cookie))


def test_a_new_password_hash_in_the_config_ends_the_old_sessions(drafts, make_app, client):
    login(client)
    cookie = client.get_cookie(COOKIE).value
    changed = make_app(drafts, editors={EDITOR: generate_password_hash("a new password!", "pbkdf2:sha256:1000")})
    assert not logged_in(replay(changed, cookie))
    assert logged_in(replay(make_app(drafts), cookie))  # the same hash: the session stands


@pytest.fixture
def editor_site(site, runner):
    """A site whose config has editor alice (added by the command) and an app serving it."""
    path = Path(site.config.source)
    result = runner.invoke(cli, ["--config", str(path), "editors", "add", EDITOR], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    return path


def test_editors_add_with_a_new_password_ends_the_sessions_at_once(editor_site, runner, clock):
    app = create_app(editor_site, TESTING=True, CLOCK=clock)  # still running with the old password
    client = app.test_client()
    assert login(client).status_code == 303
    result = runner.invoke(cli, ["--config", str(editor_site), "editors", "add", EDITOR],
                           input="another password!\nanother password!\n")
    assert result.exit_code == 0 and "ended 1 open session(s)" in result.output
    assert not logged_in(client)


def test_editors_remove_drops_the_line_and_ends_the_sessions(editor_site, runner, clock):
    runner.invoke(cli, ["--config", str(editor_site), "editors", "add", "bob"], input="bobs password!\n" * 2)
    original = editor_site.read_text()
    client = create_app(editor_site, TESTING=True, CLOCK=clock).test_client()
    assert login(client).status_code == 303
    result = runner.invoke(cli, ["--config", str(editor_site), "editors", "remove", EDITOR], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"removed editor {EDITOR}" in result.output and "ended 1 open session(s)" in result.output
    assert not logged_in(client)
    after = editor_site.read_text()
    assert [line for line in original.splitlines() if not line.startswith(f"{EDITOR} = ")] == after.splitlines()
    assert set(load_config(editor_site).editors) == {"bob"}


def test_editors_remove_of_an_unknown_name_is_one_line_and_changes_nothing(editor_site, runner):
    original = editor_site.read_bytes()
    result = runner.invoke(cli, ["--config", str(editor_site), "editors", "remove", "mallory"])
    assert result.exit_code == 1
    assert "no editor 'mallory'" in result.output and len(result.output.strip().splitlines()) == 1
    assert editor_site.read_bytes() == original


# -- the sign-up form against any text -------------------------------------------------------------------

class EmailField(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.value: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("id") == "email":
            self.value = a.get("value") or ""


def email_like() -> st.SearchStrategy[str]:
    tricky = st.sampled_from(['"><script>alert(1)</script>', "a@b", "x@example.org<", "&amp;@example.org",
                              "ann+{{7*7}}@example.org", "\u202eevil@example.org", " A.B+c@Example.ORG "])
    return st.one_of(st.text(max_size=60), st.emails().map(lambda e: f"  {e.upper()} "), tricky,
                     st.builds(lambda a, b: a + b, tricky, st.text(max_size=10)))


@given(email=email_like(), segment=st.sampled_from(["patients", "clinicians", "robots", ""]),
       cadence=st.sampled_from(["weekly", "monthly", "daily"]), consent=st.sampled_from(["yes", "", "no"]),
       website=st.one_of(st.just(""), st.just(""), st.text(min_size=1, max_size=20)),
       topics=st.lists(st.one_of(st.sampled_from(["NMOSD", "mogad"]), st.text(max_size=12)), max_size=3))
def test_any_text_in_the_signup_form_never_fails_and_stores_only_valid_addresses(signup_form, email, segment,
                                                                                 cadence, consent, website, topics):
    client, ctx, token, known = signup_form
    try:
        expected = normalise_email(email)
    except SubscriberError:
        expected = None
    response = client.post("/", data={"email": email, "segment": segment, "cadence": cadence, "consent": consent,
                                      "consent_health": consent, "website": website, "topics": topics, "csrf_token": token})
    assert response.status_code in (200, 400), response.status_code
    html = response.get_data(as_text=True)
    rows = {row["email"] for row in ctx.store.query("SELECT email FROM subscribers")}
    for address in rows - known:
        assert normalise_email(address) == address
    if response.status_code == 400:
        field = EmailField()
        field.feed(html)
        assert field.value == email.strip()  # echoed, and escaped: the attribute parses back to the same text
        if "<" in email:
            assert email.strip() not in html
    elif not website:
        assert expected in rows
        known.add(expected)
    assert rows - known == set()


@pytest.fixture
def signup_form(drafts, make_app):
    client = make_app(drafts, SUBSCRIBE_MAX_PER_IP=10_000).test_client()
    known = {row["email"] for row in drafts.store.query("SELECT email FROM subscribers")}
    return client, drafts, form_token(client, "/"), known


# -- the README's routes table ---------------------------------------------------------------------------

def test_the_readme_routes_table_lists_every_path_with_its_methods(app):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The web app"):readme.index("### Speed")]
    documented: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (`/.*?) \| ([A-Z, ]+) \|", section, flags=re.M):
        for path in re.findall(r"`(/[^`]*)`", row[0]):
            documented[ARGUMENT.sub("<>", path)] = set(row[1].replace(" ", "").split(","))
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            served.setdefault(ARGUMENT.sub("<>", rule.rule), set()).update(rule.methods - {"HEAD", "OPTIONS"})
    assert documented == served
