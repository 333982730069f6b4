"""Configuration: defaults < newsletter.toml < NEWSLETTER_* variables; where the file is found; secrets; init."""

from __future__ import annotations

import sqlite3
import stat
import tomllib
from pathlib import Path

import pytest

from newsletter.cli import cli
from newsletter.settings import SECRET_FILE, SECRETS, SETTINGS, ConfigError, load_config, render_config_file

from .conftest import SECRET


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def settings_value(output: str, name: str) -> str:
    """The value printed by `newsletter settings` for one setting."""
    for line in output.splitlines():
        if line.startswith(f"{name} = "):
            return line.split(" = ", 1)[1].split("    #", 1)[0]
    raise AssertionError(f"{name} not in `newsletter settings` output:\n{output}")


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# -- the table itself ---------------------------------------------------------

def test_every_setting_has_a_help_line_and_a_default_of_its_kind():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for s in SETTINGS:
        assert s.help.strip(), s.name
        assert isinstance(s.default, s.kind), s.name
        if s.choices:
            assert s.default in s.choices, s.name
    # What the issue names as settings is all there.
    for required in ("site_name", "site_url", "sender_email", "sender_name", "reply_to", "postal_address",
                     "database", "backend", "outbox", "timezone", "max_summaries"):
        assert required in names


def test_defaults_without_any_file(tmp_path):
    config = load_config(env={}, cwd=tmp_path)
    assert config.source is None
    assert config.backend == "maildir"
    assert config.database == str(tmp_path / "newsletter.db")
    assert config.outbox == str(tmp_path / "outbox")
    for s in SETTINGS:
        if not s.path and s.name != "site_url":
            assert getattr(config, s.name) == s.default, s.name


def test_rendered_config_file_is_valid_toml_and_lists_every_setting(tmp_path):
    text = render_config_file({"site_name": 'A "quoted" name', "max_summaries": 4})
    data = tomllib.loads(text)
    assert data["site_name"] == 'A "quoted" name'
    assert data["max_summaries"] == 4
    for s in SETTINGS:
        assert s.name in text, s.name
    config = load_config(write_toml(tmp_path / "newsletter.toml", text), env={}, cwd=tmp_path)
    assert config.site_name == 'A "quoted" name'
    assert config.max_summaries == 4


# -- precedence -----------------------------------------------------------------

def test_file_overrides_defaults_and_environment_overrides_file(tmp_path):
    path = write_toml(tmp_path / "newsletter.toml",
                      'site_name = "From the file"\nmax_summaries = 7\nsender_name = "File sender"\n')
    config = load_config(path, env={}, cwd=tmp_path)
    assert (config.site_name, config.max_summaries, config.sender_name) == ("From the file", 7, "File sender")
    assert config.timezone == "UTC"  # untouched default

    env = {"NEWSLETTER_SITE_NAME": "From the environment", "NEWSLETTER_MAX_SUMMARIES": "3",
           "NEWSLETTER_SENDGRID_SANDBOX": "yes"}
    config = load_config(path, env=env, cwd=tmp_path)
    assert config.site_name == "From the environment"
    assert config.max_summaries == 3  # converted to the setting's type
    assert config.sendgrid_sandbox is True
    assert config.sender_name == "File sender"  # the file still wins over the default


def test_config_flag_beats_env_variable_beats_working_directory(tmp_path, monkeypatch, runner):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "newsletter.toml", 'site_name = "cwd file"\n')
    env_file = write_toml(tmp_path / "env" / "site.toml", 'site_name = "env file"\n')
    flag_file = write_toml(tmp_path / "flag" / "site.toml", 'site_name = "flag file"\n')
    monkeypatch.chdir(cwd)

    result = runner.invoke(cli, ["settings"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert settings_value(result.stdout, "site_name") == "'cwd file'"
    assert str(cwd / "newsletter.toml") in result.stdout

    monkeypatch.setenv("NEWSLETTER_CONFIG", str(env_file))
    result = runner.invoke(cli, ["settings"], catch_exceptions=False)
    assert settings_value(result.stdout, "site_name") == "'env file'"

    result = runner.invoke(cli, ["--config", str(flag_file), "settings"], catch_exceptions=False)
    assert settings_value(result.stdout, "site_name") == "'flag file'"

    # And a NEWSLETTER_* variable beats whichever file was chosen.
    monkeypatch.setenv("NEWSLETTER_SITE_NAME", "variable")
    result = runner.invoke(cli, ["--config", str(flag_file), "settings"], catch_exceptions=False)
    assert settings_value(result.stdout, "site_name") == "'variable'"


def test_no_file_anywhere_means_pure_defaults(tmp_path, monkeypatch, runner):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["settings"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "defaults (no newsletter.toml found)" in result.stdout
    assert settings_value(result.stdout, "backend") == "'maildir'"


def test_missing_config_file_named_by_flag_or_variable_is_an_error(tmp_path, monkeypatch, runner):
    missing = tmp_path / "nowhere.toml"
    line = one_line_error(runner.invoke(cli, ["--config", str(missing), "settings"], catch_exceptions=False))
    assert str(missing) in line
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(cwd=tmp_path)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    folder = tmp_path / "etc" / "newsletter"
    path = write_toml(folder / "newsletter.toml",
                      'database = "data/site.db"\noutbox = "../mail/outbox"\ntemplates_dir = "my-templates"\n'
                      f'segments_file = "{tmp_path / "abs" / "segments.toml"}"\n')
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    (folder / "my-templates").mkdir()  # folders and files named by a setting must exist (checked below)
    write_toml(tmp_path / "abs" / "segments.toml", "")
    config = load_config(path, env={}, cwd=elsewhere)
    assert config.database == str(folder / "data" / "site.db")
    assert config.outbox == str(tmp_path / "etc" / "mail" / "outbox")
    assert config.templates_dir == str(folder / "my-templates")
    assert config.segments_file == str(tmp_path / "abs" / "segments.toml")  # absolute stays absolute
    assert config.secret_file == folder / "data" / SECRET_FILE


def test_default_database_sits_beside_the_config_file(tmp_path):
    path = write_toml(tmp_path / "site" / "newsletter.toml", 'site_name = "x"\n')
    config = load_config(path, env={}, cwd=tmp_path)
    assert config.database == str(tmp_path / "site" / "newsletter.db")
    assert config.outbox == str(tmp_path / "site" / "outbox")


# -- secrets --------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(SECRETS))
def test_a_secret_in_the_file_is_refused(tmp_path, key, runner):
    path = write_toml(tmp_path / "newsletter.toml", f'site_name = "x"\n{key} = "hunter2"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, cwd=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ")
    assert SECRETS[key] in message  # says where it belongs
    assert "hunter2" not in message  # and never echoes it
    line = one_line_error(runner.invoke(cli, ["--config", str(path), "settings"], catch_exceptions=False))
    assert str(path) in line and key in line and "hunter2" not in line


def test_secrets_come_from_the_environment(tmp_path):
    path = write_toml(tmp_path / "newsletter.toml", 'backend = "sendgrid"\n')
    config = load_config(path, env={"SENDGRID_API_KEY": "SG.from-env", "NEWSLETTER_SECRET": "s3",
                                    "NEWSLETTER_SMTP_PASSWORD": "pw"}, cwd=tmp_path)
    assert config.sendgrid_api_key == "SG.from-env"
    assert config.secret == "s3"
    assert config.smtp_password == "pw"
    config = load_config(path, env={}, cwd=tmp_path)
    assert config.sendgrid_api_key is None
    assert config.secret is None
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET"):
        config.require_secret()


# -- bad files --------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ('colour = "blue"\n', "colour"),
    ('max_summaries = "ten"\n', "max_summaries"),
    ("max_summaries = true\n", "max_summaries"),
    ("rate_limit = \"fast\"\n", "rate_limit"),
    ('sendgrid_sandbox = "maybe"\n', "sendgrid_sandbox"),
    ('backend = "carrier-pigeon"\n', "backend"),
    ('require_approval = "sometimes"\n', "require_approval"),
    ('editors = "alice"\n', "editors"),
    ("ledger_retention_days = 3\n", "ledger_retention_days"),
])
def test_unknown_key_or_bad_type_names_file_and_setting(tmp_path, runner, text, key):
    path = write_toml(tmp_path / "newsletter.toml", 'site_name = "ok"\n' + text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, cwd=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert "\n" not in message
    line = one_line_error(runner.invoke(cli, ["--config", str(path), "settings"], catch_exceptions=False))
    assert line == f"Error: {message}"


def test_bad_environment_value_names_the_variable(tmp_path):
    path = write_toml(tmp_path / "newsletter.toml", "")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"NEWSLETTER_MAX_SUMMARIES": "lots"}, cwd=tmp_path)
    assert str(info.value).startswith("NEWSLETTER_MAX_SUMMARIES: max_summaries: ")


def test_invalid_toml_names_the_file(tmp_path, runner):
    path = write_toml(tmp_path / "newsletter.toml", 'site_name = "unterminated\n')
    line = one_line_error(runner.invoke(cli, ["--config", str(path), "settings"], catch_exceptions=False))
    assert line.startswith(f"Error: {path}: ")


def test_postal_address_is_required_before_sending(tmp_path):
    path = write_toml(tmp_path / "newsletter.toml", 'postal_address = "   "\n')
    config = load_config(path, env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="postal_address"):
        config.require_sendable()
    config.replace(postal_address="1 Main St, Town").require_sendable()


# -- newsletter init ------------------------------------------------------------

def snapshot(directory: Path) -> dict[str, object]:
    """Everything init could have touched: each file's bytes, and the database's content."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm")):
            files[str(p.relative_to(directory))] = p.read_bytes() if p.suffix != ".db" else None
    conn = sqlite3.connect(directory / "newsletter.db")
    try:
        dump = list(conn.iterdump())
    finally:
        conn.close()
    return {"files": files, "dump": dump}


def test_init_twice_changes_nothing(tmp_path, runner):
    site = tmp_path / "site"
    first = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "wrote" in first.stdout
    config_text = (site / "newsletter.toml").read_text()
    tomllib.loads(config_text)  # a valid, commented file
    assert config_text.count("\n# ") >= len(SETTINGS) - 1
    before = snapshot(site)
    assert any("m001_initial" in line for line in before["dump"])  # migrations recorded

    second = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "kept" in second.stdout
    assert snapshot(site) == before


def test_init_keeps_an_edited_config_file(tmp_path, runner):
    site = tmp_path / "site"
    runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    edited = 'site_name = "Edited by hand"\npostal_address = "2 Road"\n'
    (site / "newsletter.toml").write_text(edited)
    result = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert result.exit_code == 0
    assert (site / "newsletter.toml").read_text() == edited


def test_init_writes_an_owner_only_secret_when_none_is_set(tmp_path, runner, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    site = tmp_path / "site"
    result = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    secret_file = site / SECRET_FILE
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert str(secret_file) in result.stdout
    assert secret not in result.output
    config = load_config(site / "newsletter.toml", env={}, cwd=tmp_path)
    assert config.secret == secret
    assert config.require_secret() == secret
    # The environment, when set, wins over the file.
    assert load_config(site / "newsletter.toml", env={"NEWSLETTER_SECRET": "env"}).secret == "env"

    before = snapshot(site)
    again = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert again.exit_code == 0
    assert "secret" not in again.stdout
    assert snapshot(site) == before
    assert secret_file.read_text().strip() == secret


def test_init_writes_no_secret_file_when_the_environment_has_one(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    site = tmp_path / "site"
    result = runner.invoke(cli, ["init", str(site)], catch_exceptions=False)
    assert result.exit_code == 0
    assert not (site / SECRET_FILE).exists()
