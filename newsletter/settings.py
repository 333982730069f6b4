"""Every setting in one table: defaults, then newsletter.toml, then NEWSLETTER_* variables.

Secrets never live in the file: they come from the environment (or, for the
signing secret only, from an owner-only file that `newsletter init` writes
beside the database so the embedded default works without any set-up).
Every value is checked when loaded (type, range, URL scheme, folders that must
exist), and an error is one line naming the file (or variable) and the setting.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


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
    Setting("sendgrid_host", "https://api.sendgrid.com", "SendGrid API base URL (tests point it at a local server)."),
    Setting("sendgrid_timeout", 30.0, "Seconds before a SendGrid request times out.", float),
    Setting("sendgrid_sandbox", False, "Ask SendGrid to validate but not deliver (sandbox mode).", bool),
    Setting("sendgrid_asm_group_id", 0, "SendGrid unsubscribe group id (0 = none).", int),
    Setting("sendgrid_max_attempts", 5, "Attempts per SendGrid request on 429, 5xx and refused connections.", int),
    Setting("webhook_public_key", "", "SendGrid Event Webhook verification key (base64 ECDSA public key)."),
    Setting("bounce_mailbox", "", "Where bounces and complaints arrive: maildir:PATH, or imaps://USER@HOST[:PORT]/MAILBOX "
            "(imap:// uses STARTTLS); the IMAP password comes from NEWSLETTER_BOUNCE_PASSWORD."),
    Setting("bounce_address", "", "Bounce address for VERP: mail goes out with MAIL FROM bounces+DELIVERY@domain, "
            "so a bounce names its delivery; empty = the sender_email, no VERP."),
    Setting("bounce_ca_file", "", "PEM bundle trusted for the IMAP server (a private CA); empty = the system's.",
            path=True),
    Setting("editors", {}, "Editor logins as a table: name = password hash (set with `newsletter editors add`).", dict),
)

#: Environment variables that carry secrets; a config file naming them is refused.
SECRETS = {"secret": "NEWSLETTER_SECRET", "sendgrid_api_key": "SENDGRID_API_KEY",
           "smtp_password": "NEWSLETTER_SMTP_PASSWORD", "bounce_password": "NEWSLETTER_BOUNCE_PASSWORD"}
SECRET_FILE = ".newsletter-secret"
BY_NAME = {s.name: s for s in SETTINGS}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}
#: URL settings and the schemes they take.
URL_SCHEMES = {"site_url": ("http", "https"), "sendgrid_host": ("http", "https")}
#: Path settings that must name something that exists, when set: (setting, a folder?).
MUST_EXIST = {"templates_dir": True, "segments_file": False, "bounce_ca_file": False}
#: Numbers must not be negative; these must be at least 1 (by name or by ending).
AT_LEAST_ONE = ("max_summaries", "max_html_bytes", "_connections", "_batch_size", "_attempts", "_port")


def _typed(setting: Setting, value: Any) -> Any:
    """The value as the setting's kind; a TOML value of another kind is refused, text (the environment) is parsed."""
    if setting.kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE | FALSE:
            return text in TRUE
        raise ValueError
    if setting.kind is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError
        return dict(value)
    if setting.choices and {"yes", "no"} <= set(setting.choices):
        if isinstance(value, bool):  # TOML's `require_approval = false`
            return "yes" if value else "no"
        text = str(value).strip().lower() if isinstance(value, str) else value
        if text in TRUE - {"yes"}:
            return "yes"
        if text in FALSE - {"no", ""}:
            return "no"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError
    if setting.kind is int and isinstance(value, float):
        raise ValueError  # 3.7 would silently become 3
    if setting.kind is str and not isinstance(value, str):
        raise ValueError
    return setting.kind(value)


def _check_number(setting: Setting, value: float, where: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {setting.name}: must be a finite number, got {value!r}")
    if setting.name.endswith(AT_LEAST_ONE) and value < 1:
        raise ConfigError(f"{where}: {setting.name}: must be at least 1, got {value!r}")
    if setting.name.endswith("_port") and value > 65535:
        raise ConfigError(f"{where}: {setting.name}: must be a port number from 1 to 65535, got {value!r}")
    if setting.name.endswith("_timeout") and value <= 0:
        raise ConfigError(f"{where}: {setting.name}: must be more than 0 seconds, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where}: {setting.name}: must not be negative, got {value!r}")


def _check_url(setting: Setting, value: str, where: str) -> None:
    schemes = URL_SCHEMES[setting.name]
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{where}: {setting.name}: must be an {' or '.join(schemes)} URL with a host "
                          f"(e.g. https://example.org), got {value!r}")


def _convert(setting: Setting, value: Any, where: str) -> Any:
    if setting.kind is list:
        return _feeds(value, where)
    try:
        value = _typed(setting, value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: {setting.name}: expected {setting.kind.__name__}, got {value!r}") from None
    if setting.kind in (int, float):
        _check_number(setting, value, where)
    if setting.name in URL_SCHEMES:
        _check_url(setting, value, where)
    if setting.name == "bounce_mailbox" and value:
        parse_mailbox(value, where)
    if setting.name == "bounce_address" and value:
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain or "+" in local or any(c.isspace() or c in "<>" for c in value):
            raise ConfigError(f"{where}: bounce_address: must be a plain address without '+' "
                              f"(e.g. bounces@example.org), got {value!r}")
    if setting.name == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}: timezone: not an IANA time zone (e.g. Europe/Paris): {value!r}") from None
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{where}: {setting.name}: must be one of {', '.join(setting.choices)}, got {value!r}")
    return value


FEED_KEYS = {"url": str, "topics": list, "drafts": bool}


def _feeds(value: Any, where: str) -> list[dict[str, Any]]:
    """[[feeds]] tables, or (from the environment) URLs separated by spaces; each checked by key."""
    if isinstance(value, str):
        value = [{"url": url} for url in value.split()]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: feeds: expected [[feeds]] tables with a url, got {value!r}")
    feeds = []
    for index, table in enumerate(value):
        label = f"{where}: feeds[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: expected a table with a url, got {table!r}")
        for key, item in table.items():
            if key not in FEED_KEYS:
                raise ConfigError(f"{label}: {key}: unknown key (use {', '.join(FEED_KEYS)})")
            if not isinstance(item, FEED_KEYS[key]):
                raise ConfigError(f"{label}: {key}: expected {FEED_KEYS[key].__name__}, got {item!r}")
        url = str(table.get("url", "")).strip()
        if not url:
            raise ConfigError(f"{label}: url: missing")
        topics = table.get("topics", [])
        if not all(isinstance(t, str) and t.strip() for t in topics):
            raise ConfigError(f"{label}: topics: expected a list of topic names, got {topics!r}")
        feeds.append({"url": url, "topics": [t.strip() for t in topics], "drafts": table.get("drafts", False)})
    urls = [f["url"] for f in feeds]
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{where}: feeds: the same url twice: {next(u for u in urls if urls.count(u) > 1)!r}")
    return feeds


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
            values[key] = _convert(BY_NAME[key], value, str(source))
            origin[key] = str(source)
    for setting in SETTINGS:
        var = "NEWSLETTER_" + setting.name.upper()
        if var in env:
            values[setting.name] = _convert(setting, env[var], var)
            origin[setting.name] = var
    for setting in SETTINGS:
        if setting.path and values[setting.name]:
            values[setting.name] = str((base / values[setting.name]).resolve())
        if setting.name in MUST_EXIST and values[setting.name]:
            _check_exists(setting.name, Path(values[setting.name]), origin.get(setting.name, "settings"))
    if values["bounce_mailbox"].startswith("maildir:"):
        values["bounce_mailbox"] = "maildir:" + str((base / values["bounce_mailbox"][len("maildir:"):]).resolve())
    for feed in values["feeds"]:  # a feed may be a file, relative to the config file like other paths
        if not re.match(r"^https?://", feed["url"], re.I):
            feed["url"] = str((base / feed["url"]).resolve())
    values["site_url"] = values["site_url"].rstrip("/")
    return Config(values, source, env)


def _check_exists(name: str, path: Path, where: str) -> None:
    folder = MUST_EXIST[name]
    if not (path.is_dir() if folder else path.is_file()):
        kind = "folder" if folder else "file"
        raise ConfigError(f"{where}: {name}: no such {kind}: {path} (correct the path, or leave it empty)")


@dataclass(frozen=True)
class Mailbox:
    """A parsed `bounce_mailbox`: a Maildir folder, or an IMAP mailbox over TLS (imaps) or STARTTLS (imap)."""
    kind: str  # maildir | imaps | imap
    path: str = ""  # the Maildir folder, or the IMAP mailbox name
    host: str = ""
    port: int = 0
    user: str = ""


def parse_mailbox(value: str, where: str = "bounce_mailbox") -> Mailbox:
    """`maildir:/srv/bounces` or `imaps://bounces%40example.org@imap.example.org/INBOX`."""
    if value.startswith("maildir:"):
        path = value[len("maildir:"):]
        if not path:
            raise ConfigError(f"{where}: bounce_mailbox: maildir: needs a folder (maildir:/path/to/Maildir)")
        return Mailbox("maildir", path)
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("imaps", "imap") or not parts.hostname or not parts.username or port == -1:
        raise ConfigError(f"{where}: bounce_mailbox: expected maildir:PATH or imaps://USER@HOST[:PORT]/MAILBOX, "
                          f"got {value!r}")
    if parts.password is not None:
        raise ConfigError(f"{where}: bounce_mailbox: the password comes only from NEWSLETTER_BOUNCE_PASSWORD")
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    return Mailbox(parts.scheme, mailbox, parts.hostname, port or (993 if parts.scheme == "imaps" else 143),
                   unquote(parts.username))


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
    lines += ["# Editor logins (name = password hash), written by `newsletter editors add NAME`.", "[editors]", ""]
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
