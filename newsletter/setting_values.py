"""Checking each setting's value as it is loaded: its kind, its range, URL schemes, paths that must exist,
the feeds table and the bounce mailbox. Every error is one line naming where the value came from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
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


TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}
#: URL settings and the schemes they take.
URL_SCHEMES = {"site_url": ("http", "https"), "sendgrid_host": ("http", "https")}
#: Path settings that must name something that exists, when set: (setting, a folder?).
MUST_EXIST = {"templates_dir": True, "segments_file": False, "bounce_ca_file": False, "smtp_ca_file": False}
#: Numbers must not be negative; these must be at least 1 (by name or by ending).
#: The shortest ledger_retention_days other than 0: bounce reports and provider events about an issue arrive for days.
LEDGER_RETENTION_MIN = 7
AT_LEAST_ONE = ("max_summaries", "max_html_bytes", "_connections", "_batch_size", "_attempts", "_port",
                "_tolerance_seconds")


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
        if not isinstance(value, dict):
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
    if setting.name == "retry_deferred_days" and value <= 0:
        raise ConfigError(f"{where}: {setting.name}: must be more than 0, got {value!r}")
    if setting.name == "ledger_retention_days" and 0 < value < LEDGER_RETENTION_MIN:
        raise ConfigError(f"{where}: {setting.name}: must be 0 (never compact) or at least {LEDGER_RETENTION_MIN} "
                          f"days (bounces and provider events still arrive), got {value!r}")
    if value < 0:
        raise ConfigError(f"{where}: {setting.name}: must not be negative, got {value!r}")


def _check_url(setting: Setting, value: str, where: str) -> None:
    schemes = URL_SCHEMES[setting.name]
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{where}: {setting.name}: must be an {' or '.join(schemes)} URL with a host "
                          f"(e.g. https://example.org), got {value!r}")


def convert(setting: Setting, value: Any, where: str) -> Any:
    if setting.kind is list:
        return _feeds(value, where)
    try:
        value = _typed(setting, value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: {setting.name}: expected {setting.kind.__name__}, got {value!r}") from None
    if setting.name == "editors":
        for key, entry in value.items():
            problem = entry_problem(entry)
            if problem:
                raise ConfigError(f"{where}: {setting.name}: {key}: {problem}")
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


def check_exists(name: str, path: Path, where: str) -> None:
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
