"""An operator's mistakes are refused with one line, never papered over: a database path with a typo, an empty,
damaged, foreign, read-only or full database, and settings of the wrong kind, range or scheme."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from newsletter.cli import cli
from newsletter.cli.subscribers import subscribers as subscribers_group
from newsletter.context import Context
from newsletter.settings import ConfigError, load_config
from newsletter.store import Store, StoreError
from newsletter.web import create_app

from .conftest import POSTAL
from .test_settings import one_line_error, write_toml

#: Commands that read or write the database; each must refuse a bad one before doing anything.
COMMANDS = [["subscribers", "list"], ["status"], ["issues", "list"], ["digest", "run", "--send-only"],
            ["summaries", "list"], ["bounces", "process"]]


def site_with_database(tmp_path: Path, database: str = "newsletter.db", **settings: str) -> Path:
    """A newsletter.toml naming `database`; the database itself is whatever the test puts there."""
    lines = [f'database = "{database}"', f'postal_address = "{POSTAL}"',
             f'bounce_mailbox = "maildir:{tmp_path / "bounces"}"']
    lines += [f'{k} = "{v}"' for k, v in settings.items()]
    return write_toml(tmp_path / "newsletter.toml", "\n".join(lines) + "\n")


def run(runner, config: Path, *args: str):
    return runner.invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


# -- the database ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_database_path_with_a_typo_is_refused_and_not_created(tmp_path, runner, command):
    config = site_with_database(tmp_path, "newsleter.db")
    line = one_line_error(run(runner, config, *command))
    assert line == (f"Error: {tmp_path / 'newsleter.db'}: no database here: correct the `database` setting, "
                    "or run `newsletter init` to create a new one")
    assert not (tmp_path / "newsleter.db").exists()


def bad_database(kind: str, path: Path) -> str:
    """Make `path` a bad database of this kind; returns what the refusal must say."""
    if kind == "empty":
        path.write_bytes(b"")
        return "empty file (0 bytes), not a newsletter database"
    if kind == "random bytes":
        path.write_bytes(os.urandom(8192))
        return "not an SQLite database (damaged, or another kind of file)"
    if kind == "foreign SQLite":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
        conn.commit()
        conn.close()
        return "an SQLite file, but not a newsletter database"
    if kind == "a folder":
        path.mkdir()
        return "not a file"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty", "random bytes", "foreign SQLite", "a folder"])
def test_an_empty_damaged_or_foreign_database_is_refused_with_one_line(tmp_path, runner, kind):
    config = site_with_database(tmp_path)
    database = tmp_path / "newsletter.db"
    said = bad_database(kind, database)
    before = database.read_bytes() if database.is_file() else None
    for command in COMMANDS:
        line = one_line_error(run(runner, config, *command))
        assert line.startswith(f"Error: {database}: {said}"), line
    assert (database.read_bytes() if database.is_file() else None) == before  # left exactly as it was


@pytest.mark.parametrize("kind", ["empty", "random bytes", "foreign SQLite"])
def test_serve_refuses_to_start_on_a_bad_database(tmp_path, runner, kind):
    config = site_with_database(tmp_path)
    said = bad_database(kind, tmp_path / "newsletter.db")
    line = one_line_error(run(runner, config, "serve", "--port", "0"))
    assert said in line
    with pytest.raises(StoreError, match="newsletter.db"):
        create_app(load_config(config))


def test_serve_refuses_a_missing_database(tmp_path, runner):
    config = site_with_database(tmp_path, "gone/newsletter.db")
    assert "no database here" in one_line_error(run(runner, config, "serve", "--port", "0"))
    assert not (tmp_path / "gone").exists()


def test_only_init_creates_a_database_and_it_may_fill_an_empty_file(tmp_path, runner):
    site = tmp_path / "site"
    site.mkdir()
    (site / "newsletter.db").write_bytes(b"")
    result = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ctx = Context(load_config(site / "newsletter.toml"))
    try:
        assert ctx.store.applied_migrations()  # a real newsletter database now
    finally:
        ctx.close()
    with pytest.raises(StoreError, match="no database here"):
        Store(tmp_path / "elsewhere.db")
    bad_database("foreign SQLite", tmp_path / "photos.db")
    with pytest.raises(StoreError, match="not a newsletter database"):
        Store(tmp_path / "photos.db", create=True)  # not even init writes into someone else's database


@contextlib.contextmanager
def as_another_user():
    """Run as `nobody` (effective uid) when root, so a read-only mode really binds; as is otherwise."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="newsletter-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_read_only_database_is_refused_with_one_line(shared_dir, runner):
    result = runner.invoke(cli, ["init", str(shared_dir)], catch_exceptions=False)
    assert result.exit_code == 0
    database = shared_dir / "newsletter.db"
    create_app(load_config(shared_dir / "newsletter.toml"))  # starts while writable (and loads its modules now:
    # this interpreter's standard library may be unreadable to the other user)
    database.chmod(0o444)
    before = database.read_bytes()
    with as_another_user():
        for command in (["subscribers", "list"], ["status"]):
            line = one_line_error(run(runner, shared_dir / "newsletter.toml", *command))
            assert line == f"Error: {database}: not writable by this user: fix the owner or mode of the file"
        with pytest.raises(StoreError, match="not writable"):
            create_app(load_config(shared_dir / "newsletter.toml"))
    assert database.read_bytes() == before


def test_a_folder_the_database_cannot_write_its_journal_in_is_refused(shared_dir, runner):
    assert runner.invoke(cli, ["init", str(shared_dir)], catch_exceptions=False).exit_code == 0
    database = shared_dir / "newsletter.db"
    database.chmod(0o666)
    shared_dir.chmod(0o555)
    try:
        with as_another_user():
            line = one_line_error(run(runner, shared_dir / "newsletter.toml", "status"))
    finally:
        shared_dir.chmod(0o755)
    assert "folder not writable by this user (SQLite keeps its -wal and -shm files there)" in line


def test_a_full_database_names_the_real_cause_and_keeps_what_was_there(site, runner, tmp_path):
    """SQLite rolls a transaction back by itself when the disk is full; the old second ROLLBACK then said
    `cannot rollback - no transaction is active` instead. max_page_count makes the file full for real."""
    site.store.upsert_subscribers([{"email": "first@example.org", "segment": "patients", "status": "active"}])
    pages = site.store.query("PRAGMA page_count")[0]["page_count"]
    site.store.conn.execute(f"PRAGMA max_page_count = {pages}")
    rows = "\n".join(f"reader{i}@example.org,Reader {i} {'x' * 150},patients,weekly,MS,active" for i in range(400))
    csv = tmp_path / "people.csv"
    csv.write_text("email,name,segment,cadence,topics,status\n" + rows + "\n", encoding="utf-8")
    result = runner.invoke(subscribers_group, ["import", str(csv)], obj=site, catch_exceptions=False)
    line = one_line_error(result)
    assert line == (f"Error: {site.config.database}: the disk (or the database) is full; nothing of this change "
                    "was written: free some space")
    assert "rollback" not in result.output
    assert [s["email"] for s in site.store.subscribers()] == ["first@example.org"]


def test_a_write_error_inside_a_transaction_is_a_store_error_naming_the_file(site):
    with pytest.raises(StoreError, match=f"^{site.config.database}: database error: no such table: missing_table"):
        with site.store.transaction() as conn:
            conn.execute("INSERT INTO missing_table VALUES (1)")
    assert not site.store.conn.in_transaction


# -- settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, said", [
    ('site_url = "ftp://example.org"', "site_url", "must be an http or https URL with a host"),
    ('site_url = "example.org"', "site_url", "must be an http or https URL with a host"),
    ('sendgrid_host = "file:///etc/passwd"', "sendgrid_host", "must be an http or https URL"),
    ("smtp_port = 70000", "smtp_port", "must be a port number from 1 to 65535"),
    ("smtp_port = 0", "smtp_port", "must be at least 1"),
    ("rate_limit = -1.5", "rate_limit", "must not be negative"),
    ("rate_limit = nan", "rate_limit", "must be a finite number"),
    ("max_html_bytes = -5", "max_html_bytes", "must be at least 1"),
    ("max_age_days = -1", "max_age_days", "must not be negative"),
    ("max_summaries = 2.5", "max_summaries", "expected int"),
    ("smtp_timeout = 0", "smtp_timeout", "must be more than 0 seconds"),
    ("site_name = 7", "site_name", "expected str"),
    ('templates_dir = "no-such-templates"', "templates_dir", "no such folder"),
    ('segments_file = "no-such.toml"', "segments_file", "no such file"),
    ('bounce_mailbox = "pop3://host/INBOX"', "bounce_mailbox", "expected maildir:PATH or imaps://"),
    ('bounce_mailbox = "imaps://u:secret@host/INBOX"', "bounce_mailbox", "NEWSLETTER_BOUNCE_PASSWORD"),
    ('bounce_address = "bounces+x@example.org"', "bounce_address", "without '+'"),
    ("require_approval = 3", "require_approval", "expected str"),
])
def test_a_bad_setting_is_one_line_naming_the_file_and_the_setting(tmp_path, runner, text, key, said):
    path = write_toml(tmp_path / "newsletter.toml", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, cwd=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ") and said in message, message
    assert one_line_error(run(runner, path, "settings")) == f"Error: {message}"


def test_a_bad_setting_from_the_environment_names_the_variable(tmp_path):
    path = write_toml(tmp_path / "newsletter.toml", "")
    with pytest.raises(ConfigError, match="^NEWSLETTER_TEMPLATES_DIR: templates_dir: no such folder"):
        load_config(path, env={"NEWSLETTER_TEMPLATES_DIR": "missing"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="^NEWSLETTER_SMTP_PORT: smtp_port: must be a port number"):
        load_config(path, env={"NEWSLETTER_SMTP_PORT": "99999"}, cwd=tmp_path)


@pytest.mark.parametrize("text, expected", [("require_approval = false", "no"), ("require_approval = true", "yes"),
                                            ('require_approval = "no"', "no"), ('require_approval = "auto"', "auto")])
def test_toml_booleans_are_accepted_where_a_setting_takes_yes_or_no(tmp_path, text, expected):
    path = write_toml(tmp_path / "newsletter.toml", text + "\n")
    assert load_config(path, env={}, cwd=tmp_path).require_approval == expected


@pytest.mark.parametrize("value, expected", [("false", "no"), ("off", "no"), ("1", "yes"), ("yes", "yes")])
def test_boolean_words_in_the_environment_are_accepted_for_yes_or_no(tmp_path, value, expected):
    path = write_toml(tmp_path / "newsletter.toml", "")
    config = load_config(path, env={"NEWSLETTER_REQUIRE_APPROVAL": value}, cwd=tmp_path)
    assert config.require_approval == expected


def test_an_existing_templates_dir_and_a_maildir_bounce_mailbox_are_resolved_beside_the_file(tmp_path):
    (tmp_path / "mytemplates").mkdir()
    path = write_toml(tmp_path / "newsletter.toml",
                      'templates_dir = "mytemplates"\nbounce_mailbox = "maildir:bounces"\n')
    config = load_config(path, env={}, cwd=tmp_path / "..")
    assert config.templates_dir == str(tmp_path / "mytemplates")
    assert config.bounce_mailbox == f"maildir:{tmp_path / 'bounces'}"
