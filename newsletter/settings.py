"""Every setting in one table: defaults, then newsletter.toml, then NEWSLETTER_* variables.

Secrets never live in the file: they come from the environment (or, for the
signing secret only, from an owner-only file that `newsletter init` writes
beside the database so the embedded default works without any set-up).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .roles import entry_problem


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the file and the setting."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: type = str
    path: bool = False  # relative to the config file's folder
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("site_name", "MS Research Digest", "Name of the site, shown in every email and page."),
    Setting("site_url", "http://127.0.0.1:8000", "Public base URL of the site; links in emails start with it."),
    Setting("sender_email", "digest@example.org", "From address of every digest (use your sending domain)."),
    Setting("sender_name", "MS Research Digest", "Display name in the From header."),
    Setting("reply_to", "", "Reply-To address; empty means replies go to the sender."),
    Setting("postal_address", "", "Postal address printed in every footer. Required before anything is sent (CAN-SPAM)."),
    Setting("editors_email", "", "Where draft issues awaiting approval are announced."),
    Setting("database", "newsletter.db", "SQLite database file.", path=True),
    Setting("backend", "maildir", "Delivery backend.", choices=("maildir", "smtp", "sendgrid")),
    Setting("outbox", "outbox", "Maildir folder written by the maildir backend.", path=True),
    Setting("timezone", "UTC", "IANA time zone in which digest periods (weeks, months) are counted."),
    Setting("lang", "en", "Language of the emails (the html lang attribute)."),
    Setting("max_summaries", 10, "Most summaries in one digest; more fall back to teaser links.", int),
    Setting("max_age_days", 45, "Summaries older than this many days are never selected.", int),
    Setting("max_html_bytes", 90_000, "Largest rendered HTML allowed (Gmail clips at about 102 KB).", int),
    Setting("require_approval", "auto", "Drafts wait for an editor: yes, no, or auto (yes for smtp and sendgrid).",
            choices=("auto", "yes", "no")),
    Setting("rate_limit", 0.0, "Most messages per second sent (0 = no limit).", float),
    Setting("templates_dir", "", "Folder of templates that override the bundled ones (same names).", path=True),
    Setting("segments_file", "", "segments.toml defining the reader segments; empty = the bundled one.", path=True),
    Setting("smtp_host", "127.0.0.1", "SMTP server for the smtp backend."),
    Setting("smtp_port", 587, "SMTP port.", int),
    Setting("smtp_security", "starttls", "SMTP transport security.", choices=("starttls", "ssl", "none")),
    Setting("smtp_username", "", "SMTP login name; the password comes from NEWSLETTER_SMTP_PASSWORD."),
    Setting("smtp_batch_size", 20, "Messages recorded per ledger step over SMTP (smaller = fewer unknown after a crash).", int),
    Setting("smtp_connections", 1, "SMTP connections used at once (more help when the relay is far away).", int),
    Setting("smtp_timeout", 30.0, "Seconds before an SMTP command times out.", float),
    Setting("sendgrid_host", "https://api.sendgrid.com", "SendGrid API base URL (tests point it at a local server)."),
    Setting("sendgrid_timeout", 30.0, "Seconds before a SendGrid request times out.", float),
    Setting("sendgrid_sandbox", False, "Ask SendGrid to validate but not deliver (sandbox mode).", bool),
    Setting("sendgrid_asm_group_id", 0, "SendGrid unsubscribe group id (0 = none).", int),
    Setting("sendgrid_max_attempts", 5, "Attempts per SendGrid request on 429, 5xx and refused connections.", int),
    Setting("webhook_public_key", "", "SendGrid Event Webhook verification key (base64 ECDSA public key)."),
    Setting("editors", {}, "Editor logins as a table: name = {hash, role} (set with `newsletter editors add`; a bare "
            "hash is read as role admin).", dict),
    Setting("require_2fa_for_admins", False, "Admins must log in with a second factor (TOTP); an admin without one "
            "can only enrol until they do.", bool),
)

#: Environment variables that carry secrets; a config file naming them is refused.
SECRETS = {"secret": "NEWSLETTER_SECRET", "sendgrid_api_key": "SENDGRID_API_KEY",
           "smtp_password": "NEWSLETTER_SMTP_PASSWORD"}
SECRET_FILE = ".newsletter-secret"
BY_NAME = {s.name: s for s in SETTINGS}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def _convert(setting: Setting, value: Any, where: str) -> Any:
    try:
        if setting.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE | FALSE:
                return text in TRUE
            raise ValueError
        if setting.kind is dict:
            if not isinstance(value, dict):
                raise ValueError
            for key, entry in value.items():
                problem = entry_problem(entry)
                if problem:
                    raise ConfigError(f"{where}: {setting.name}: {key}: {problem}")
            return dict(value)
        if setting.kind in (int, float) and isinstance(value, bool):
            raise ValueError
        value = setting.kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {setting.name}: expected {setting.kind.__name__}, got {value!r}") from None
    if setting.kind is int and setting.name.endswith(("_connections", "_batch_size", "_attempts")) and value < 1:
        raise ConfigError(f"{where}: {setting.name}: must be at least 1, got {value!r}")
    if setting.name == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}: timezone: not an IANA time zone (e.g. Europe/Paris): {value!r}") from None
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{where}: {setting.name}: must be one of {', '.join(setting.choices)}, got {value!r}")
    return value


class Config:
    """Resolved settings; attribute access by setting name."""

    def __init__(self, values: dict[str, Any], source: Path | None, env: Mapping[str, str]):
        self._values = values
        self.source = source
        self.env = env

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> "Config":
        return Config({**self._values, **changes}, self.source, self.env)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def secret_file(self) -> Path:
        return Path(self.database).parent / SECRET_FILE

    @property
    def secret(self) -> str | None:
        if self.env.get(SECRETS["secret"]):
            return self.env[SECRETS["secret"]]
        if self.secret_file.exists():
            mode = self.secret_file.stat().st_mode
            if mode & 0o077:
                raise ConfigError(f"{self.secret_file}: readable by others (mode {mode & 0o777:o}); "
                                  f"run chmod 600 on it or set NEWSLETTER_SECRET")
            return self.secret_file.read_text().strip() or None
        return None

    def require_secret(self) -> str:
        secret = self.secret
        if not secret:
            raise ConfigError(f"NEWSLETTER_SECRET is not set and {self.secret_file} does not exist "
                              "(run `newsletter init` or export NEWSLETTER_SECRET)")
        return secret

    @property
    def sendgrid_api_key(self) -> str | None:
        return self.env.get(SECRETS["sendgrid_api_key"]) or None

    @property
    def smtp_password(self) -> str | None:
        return self.env.get(SECRETS["smtp_password"]) or None

    @property
    def approval_required(self) -> bool:
        if self.require_approval == "auto":
            return self.backend != "maildir"
        return self.require_approval == "yes"

    def require_sendable(self) -> None:
        """Refuse to send without what the law and the footer need."""
        if not self.postal_address.strip():
            raise ConfigError(f"{self.source or 'settings'}: postal_address: required before anything is sent "
                              "(CAN-SPAM); set it in newsletter.toml or NEWSLETTER_POSTAL_ADDRESS")


def find_config_file(explicit: str | Path | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """--config, then NEWSLETTER_CONFIG, then ./newsletter.toml, else none (pure defaults)."""
    if explicit:
        path = Path(explicit)
    elif env.get("NEWSLETTER_CONFIG"):
        path = Path(env["NEWSLETTER_CONFIG"])
    else:
        path = cwd / "newsletter.toml"
        return path.resolve() if path.exists() else None
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    return path.resolve()


def load_config(explicit: str | Path | None = None, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    cwd = Path.cwd() if cwd is None else cwd
    source = find_config_file(explicit, env, cwd)
    base = source.parent if source else cwd
    values = {s.name: s.default for s in SETTINGS}
    if source:
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        for key, value in data.items():
            if key in SECRETS:
                raise ConfigError(f"{source}: {key}: secrets come only from the environment ({SECRETS[key]})")
            if key not in BY_NAME:
                raise ConfigError(f"{source}: {key}: unknown setting")
            values[key] = _convert(BY_NAME[key], value, str(source))
    for setting in SETTINGS:
        var = "NEWSLETTER_" + setting.name.upper()
        if var in env:
            values[setting.name] = _convert(setting, env[var], var)
    for setting in SETTINGS:
        if setting.path and values[setting.name]:
            values[setting.name] = str((base / values[setting.name]).resolve())
    values["site_url"] = values["site_url"].rstrip("/")
    return Config(values, source, env)


def render_config_file(overrides: Mapping[str, Any] | None = None) -> str:
    """A commented newsletter.toml listing every setting with its default."""
    overrides = overrides or {}
    lines = ["# newsletter settings. Every key is optional; the commented value is the default.",
             "# NEWSLETTER_<KEY> environment variables override this file.",
             "# Secrets never go here: SENDGRID_API_KEY, NEWSLETTER_SECRET, NEWSLETTER_SMTP_PASSWORD.", ""]
    for s in SETTINGS:
        if s.kind is dict:
            continue  # tables go last in TOML
        lines.append(f"# {s.help}")
        value = overrides.get(s.name, s.default)
        rendered = _toml_value(value)
        prefix = "" if s.name in overrides else "# "
        lines.append(f"{prefix}{s.name} = {rendered}")
        lines.append("")
    lines += ["# Editor logins (name = {hash, role}), written by `newsletter editors add NAME --role ROLE`.",
              "[editors]", ""]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def write_secret_file(path: Path) -> bool:
    """Create an owner-only signing secret once; returns whether it was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48) + "\n")
    return True
