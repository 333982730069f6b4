"""Every setting in one table: defaults, then newsletter.toml, then NEWSLETTER_* variables.

Secrets never live in the file: they come from the environment (or, for the
signing secret only, from an owner-only file that `newsletter init` writes
beside the database so the embedded default works without any set-up).
Every value is checked when loaded (type, range, URL scheme, folders that must
exist), and an error is one line naming the file (or variable) and the setting.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any, Mapping

from .setting_values import MUST_EXIST, ConfigError, Setting, check_exists, convert


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
    Setting("max_reading_grade", 8.0, "Highest reading grade (Flesch-Kincaid, SMOG) of a teaser or a patients' or "
            "caregivers' paragraph before it is flagged (NIH: about 8).", float),
    Setting("enforce_reading_grade", False, "Refuse to send an issue whose summaries are flagged above "
            "max_reading_grade (otherwise they are only reported).", bool),
    Setting("require_approval", "auto", "Drafts wait for an editor: yes, no, or auto (yes for smtp and sendgrid).",
            choices=("auto", "yes", "no")),
    Setting("rate_limit", 0.0, "Most messages per second sent (0 = no limit).", float),
    Setting("templates_dir", "", "Folder of templates that override the bundled ones (same names).", path=True),
    Setting("segments_file", "", "segments.toml defining the reader segments; empty = the bundled one.", path=True),
    Setting("topics_file", "", "topics.toml listing the site's topics and their aliases; empty = the bundled one.",
            path=True),
    Setting("feeds", [], "Feeds `summaries pull` polls: [[feeds]] tables with url (or a file), optional topics "
            "(added to every item) and drafts (items wait for an editor).", list),
    Setting("feed_timeout", 20.0, "Seconds before a feed request times out.", float),
    Setting("smtp_host", "127.0.0.1", "SMTP server for the smtp backend."),
    Setting("smtp_port", 587, "SMTP port.", int),
    Setting("smtp_security", "starttls", "SMTP transport security.", choices=("starttls", "ssl", "none")),
    Setting("smtp_username", "", "SMTP login name; the password comes from NEWSLETTER_SMTP_PASSWORD."),
    Setting("smtp_batch_size", 20, "Messages recorded per ledger step over SMTP (smaller = fewer unknown after a crash).", int),
    Setting("smtp_connections", 1, "SMTP connections used at once (more help when the relay is far away).", int),
    Setting("smtp_timeout", 30.0, "Seconds before an SMTP command times out.", float),
    Setting("smtp_ca_file", "", "PEM bundle of the CA that signed the relay's certificate (a private CA); "
            "empty = the system's trusted CAs.", path=True),
    Setting("retry_deferred_days", 3.0, "Days a deferred delivery (relay down, 4xx) is retried by later runs "
            "before it becomes failed.", float),
    Setting("sendgrid_host", "https://api.sendgrid.com", "SendGrid API base URL (tests point it at a local server)."),
    Setting("sendgrid_timeout", 30.0, "Seconds before a SendGrid request times out.", float),
    Setting("sendgrid_sandbox", False, "Ask SendGrid to validate but not deliver (sandbox mode).", bool),
    Setting("sendgrid_asm_group_id", 0, "SendGrid unsubscribe group id (0 = none).", int),
    Setting("sendgrid_max_attempts", 5, "Attempts per SendGrid request on 429, 5xx and refused connections.", int),
    Setting("track_opens", False, "Let SendGrid track opens (a pixel); reports show them only in aggregate.", bool),
    Setting("track_clicks", False, "Let SendGrid rewrite links to track clicks; reports show them only in aggregate.",
            bool),
    Setting("webhook_public_key", "", "SendGrid Event Webhook verification key (base64 ECDSA public key)."),
    Setting("bounce_mailbox", "", "Where bounces and complaints arrive: maildir:PATH, or imaps://USER@HOST[:PORT]/MAILBOX "
            "(imap:// uses STARTTLS); the IMAP password comes from NEWSLETTER_BOUNCE_PASSWORD."),
    Setting("bounce_address", "", "Bounce address for VERP: mail goes out with MAIL FROM bounces+TAG@domain "
            "(TAG: the delivery, signed), so a bounce names its delivery; empty = the sender_email, no VERP."),
    Setting("bounce_ca_file", "", "PEM bundle trusted for the IMAP server (a private CA); empty = the system's.",
            path=True),
    Setting("webhook_tolerance_seconds", 300, "Signed webhook requests older or newer than this many seconds are refused.",
            int),
    Setting("editors", {}, "Editor logins as a table: name = {hash, role} (set with `newsletter editors add`; a bare "
            "hash is read as role admin).", dict),
    Setting("privacy_contact", "", "Where readers write about their data (an address or URL), named on /privacy."),
    Setting("record_consent_ip", False, "Keep the network address a sign-up came from with its consent record.",
            bool),
    Setting("legacy_consent", False, "This list predates consent records: smtp and sendgrid may send to "
            "subscribers who have none (otherwise they are skipped).", bool),
    Setting("retention_events_days", 90, "Days provider events (webhooks) are kept before `newsletter purge` "
            "removes them.", int),
    Setting("retention_pending_days", 30, "Days a sign-up never confirmed is kept before `newsletter purge` "
            "removes it.", int),
    Setting("retention_erased_days", 0, "Days the delivery detail of an erased subscriber is kept (0 = none: "
            "the ledger keeps counts, not people).", int),
    Setting("ledger_retention_days", 90, "Days after an issue is sent before `newsletter purge` compacts its delivery "
            "rows to counts per status and the readers it reached (0 = never; otherwise at least 7).", int),
    Setting("require_2fa_for_admins", False, "Admins must log in with a second factor (TOTP); an admin without one "
            "can only enrol until they do.", bool),
)

#: Environment variables that carry secrets; a config file naming them is refused.
SECRETS = {"secret": "NEWSLETTER_SECRET", "sendgrid_api_key": "SENDGRID_API_KEY",
           "smtp_password": "NEWSLETTER_SMTP_PASSWORD", "bounce_password": "NEWSLETTER_BOUNCE_PASSWORD"}
SECRET_FILE = ".newsletter-secret"
BY_NAME = {s.name: s for s in SETTINGS}


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

    def __reduce__(self) -> tuple:
        """Picklable (a worker process gets the resolved config): __getattr__ must not run before _values exists."""
        return Config, (self._values, self.source, dict(self.env))

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
    def bounce_password(self) -> str | None:
        return self.env.get(SECRETS["bounce_password"]) or None

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
    origin: dict[str, str] = {}
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
            values[key] = convert(BY_NAME[key], value, str(source))
            origin[key] = str(source)
    for setting in SETTINGS:
        var = "NEWSLETTER_" + setting.name.upper()
        if var in env:
            values[setting.name] = convert(setting, env[var], var)
            origin[setting.name] = var
    for setting in SETTINGS:
        if setting.path and values[setting.name]:
            values[setting.name] = str((base / values[setting.name]).resolve())
        if setting.name in MUST_EXIST and values[setting.name]:
            check_exists(setting.name, Path(values[setting.name]), origin.get(setting.name, "settings"))
    if values["bounce_mailbox"].startswith("maildir:"):
        values["bounce_mailbox"] = "maildir:" + str((base / values["bounce_mailbox"][len("maildir:"):]).resolve())
    for feed in values["feeds"]:  # a feed may be a file, relative to the config file like other paths
        if not re.match(r"^https?://", feed["url"], re.I):
            feed["url"] = str((base / feed["url"]).resolve())
    values["site_url"] = values["site_url"].rstrip("/")
    return Config(values, source, env)


def render_config_file(overrides: Mapping[str, Any] | None = None) -> str:
    """A commented newsletter.toml listing every setting with its default."""
    overrides = overrides or {}
    lines = ["# newsletter settings. Every key is optional; the commented value is the default.",
             "# NEWSLETTER_<KEY> environment variables override this file.",
             "# Secrets never go here: SENDGRID_API_KEY, NEWSLETTER_SECRET, NEWSLETTER_SMTP_PASSWORD, "
             "NEWSLETTER_BOUNCE_PASSWORD.", ""]
    for s in SETTINGS:
        if s.kind in (dict, list):
            continue  # tables go last in TOML
        lines.append(f"# {s.help}")
        value = overrides.get(s.name, s.default)
        rendered = _toml_value(value)
        prefix = "" if s.name in overrides else "# "
        lines.append(f"{prefix}{s.name} = {rendered}")
        lines.append("")
    lines += ["# Feeds polled by `newsletter summaries pull` (conditional GET; a file path works too).",
              "# One [[feeds]] table per feed; topics are added to every item, drafts = true holds items",
              "# for an editor. Categories become topics only through topics_file.",
              "# [[feeds]]", '# url = "https://example.org/feed/"', '# topics = ["MS"]', "# drafts = false", ""]
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
