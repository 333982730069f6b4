"""Subscriber files from other tools (Mailchimp, listmonk, Substack, Buttondown, Ghost) or any CSV with
--map: each layout's columns and statuses turned into ours, so a move keeps who unsubscribed or bounced
and when each person opted in. Rows are then checked by `clean_subscriber`'s rules like our own CSV."""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

from .subscribers import (CSV_COLUMNS, EmailNormaliser, SubscriberError, clean_rows, read_csv, read_header,
                          subscriber_cleaner)

#: What a column can be mapped to with --map COLUMN=FIELD.
FIELDS = ("email", "name", "first_name", "last_name", "segment", "cadence", "topics", "status", "opted_in_at", "ip")
Row = Mapping[str, str]


def _choice(column: str, table: Mapping[str, str]) -> Callable[[Row], str]:
    """A status read from one column through a table of that tool's values; any other value is a bad row."""
    def status(row: Row) -> str:
        value = (row.get(column) or "").strip()
        if value.lower() not in table:
            shown = ", ".join(sorted(v for v in table if v))
            raise SubscriberError(f"{column}: {value!r} is not one of {shown}")
        return table[value.lower()]
    return status


def _mailchimp_status(row: Row) -> str:
    # Mailchimp exports each audience as three files; which one this is shows in its columns.
    if "CLEAN_TIME" in row:
        return "bounced"     # cleaned: hard bounces, never mailed again
    if "UNSUB_TIME" in row:
        return "unsubscribed"
    return "active"


_ghost_subscribed = _choice("subscribed_to_emails", {"true": "active", "false": "unsubscribed"})


def _ghost_status(row: Row) -> str:
    return "unsubscribed" if (row.get("deleted_at") or "").strip() else _ghost_subscribed(row)


@dataclass(frozen=True)
class Layout:
    name: str
    label: str
    signature: tuple[str, ...]                    # columns whose presence identifies the export
    fields: Mapping[str, tuple[str, ...]]         # our field -> the columns that may carry it, first filled wins
    status: Callable[[Row], str] | None = None    # the tool's status, from its own columns
    status_columns: tuple[str, ...] = ()          # where each layout was read: tests/data/imports/README.md


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("mailchimp", "Mailchimp", ("Email Address", "MEMBER_RATING", "OPTIN_TIME"),
           {"email": ("Email Address",), "first_name": ("First Name",), "last_name": ("Last Name",),
            "opted_in_at": ("CONFIRM_TIME", "OPTIN_TIME"), "ip": ("CONFIRM_IP", "OPTIN_IP")},
           _mailchimp_status, ("CLEAN_TIME", "UNSUB_TIME")),
    Layout("listmonk", "listmonk", ("uuid", "email", "attributes", "status"),
           {"email": ("email",), "name": ("name",), "opted_in_at": ("created_at",)},
           _choice("status", {"enabled": "active", "disabled": "unsubscribed", "blocklisted": "unsubscribed"}),
           ("status",)),
    Layout("substack", "Substack", ("email", "email_disabled", "expiry"),
           {"email": ("email",), "opted_in_at": ("created_at",)},
           _choice("email_disabled", {"false": "active", "": "active", "true": "unsubscribed"}), ("email_disabled",)),
    Layout("buttondown", "Buttondown", ("email", "creation_date", "subscriber_type"),
           {"email": ("email",), "opted_in_at": ("creation_date",)},
           _choice("subscriber_type", {
               **dict.fromkeys(("regular", "premium", "trialed", "unpaid", "gifted", "churning", "paused",
                                "past_due"), "active"),     # all still receive the newsletter
               "unactivated": "pending", "unsubscribed": "unsubscribed", "removed": "unsubscribed",
               "spammy": "complained"}), ("subscriber_type",)),
    Layout("ghost", "Ghost", ("email", "subscribed_to_emails", "complimentary_plan"),
           {"email": ("email",), "name": ("name",), "opted_in_at": ("created_at",)},
           _ghost_status, ("subscribed_to_emails", "deleted_at")),
)}
#: Our own CSV (the export format): strict, an unknown column is refused rather than ignored.
OWN = Layout("newsletter", "newsletter CSV", ("email",), {c: (c,) for c in CSV_COLUMNS})


@dataclass
class ImportResult:
    layout: Layout
    detected: bool = False
    good: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    ignored: list[str] = field(default_factory=list)           # columns read by nobody


def detect(header: Iterable[str]) -> Layout | None:
    columns = set(header)
    found = [layout for layout in LAYOUTS.values() if set(layout.signature) <= columns]
    return found[0] if len(found) == 1 else None


def parse_map(pairs: Iterable[str]) -> dict[str, str]:
    """--map COLUMN=FIELD options as {column: field}; a bad one is refused naming it."""
    mapping = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        if not sep or not column.strip() or target.strip() not in FIELDS:
            raise SubscriberError(f"--map: {pair!r}: write COLUMN=FIELD, FIELD one of {', '.join(FIELDS)}")
        mapping[column.strip()] = target.strip()
    return mapping


def parse_time(value: str, column: str) -> str | None:
    """A tool's timestamp as ISO 8601 in UTC (no zone given = UTC, as Mailchimp writes them)."""
    text = value.strip()
    if not text:
        return None
    # listmonk writes Go's time.String(): "2024-05-01 09:30:00.123456 +0000 UTC"
    go = re.fullmatch(r"(\S+ \S+?)(?:\.\d+)? ([+-]\d{4})(?: \S+)?", text)
    try:
        moment = (datetime.strptime(f"{go[1]} {go[2]}", "%Y-%m-%d %H:%M:%S %z") if go
                  else datetime.fromisoformat(text))
    except ValueError:
        raise SubscriberError(f"{column}: {text[:40]!r} is not a date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat()


def parse_ip(value: str, column: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SubscriberError(f"{column}: {text[:40]!r} is not an IP address") from None


def split_tags(value: str) -> list[str]:
    """Tags or labels as tools write them: a JSON list, quoted CSV ("A","B") or a plain list split by , or ;."""
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
            if isinstance(items, list):
                return [str(i).strip() for i in items if str(i).strip()]
        except ValueError:
            pass
    items = next(csv.reader([text.replace(";", ",")], skipinitialspace=True), [])
    return [item.strip().strip('"').strip() for item in items if item.strip().strip('"').strip()]


def _read_fields(row: Row, sources: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, str], dict[str, str]]:
    """Each field's value (the first of its columns that is filled) and the column it came from."""
    values, origin = {}, {}
    for name, columns in sources.items():
        for column in columns:
            if (row.get(column) or "").strip():
                values[name], origin[name] = row[column], column
                break
    return values, origin


def convert_row(row: Row, layout: Layout, sources: Mapping[str, tuple[str, ...]],
                clean: Callable[[dict[str, Any]], dict[str, Any]], defaults: Mapping[str, str | None]) -> dict[str, Any]:
    """One row as a clean subscriber record (with its opt-in time and address for the consent record)."""
    values, origin = _read_fields(row, sources)
    name = values.get("name") or " ".join(p.strip() for p in (values.get("first_name", ""),
                                                              values.get("last_name", "")) if p.strip())
    status = values.get("status")
    if "status" not in sources and layout.status:
        status = layout.status(row)
    raw = {"email": values.get("email", ""), "name": name, "status": status,
           "segment": values.get("segment") or defaults.get("segment") or "",
           "cadence": values.get("cadence") or defaults.get("cadence") or "weekly",
           "topics": split_tags(values.get("topics", ""))}
    record = clean(raw)
    record["opted_in_at"] = parse_time(values.get("opted_in_at", ""), origin.get("opted_in_at", "opted_in_at"))
    record["ip"] = parse_ip(values.get("ip", ""), origin.get("ip", "ip"))
    return record


def read_import(handle: TextIO, segments: Iterable[str], known_topics: Iterable[str] = (), *,
                tool: str | None = None, mapping: Mapping[str, str] | None = None,
                defaults: Mapping[str, str | None] | None = None, where: str = "csv",
                stream: bool = False) -> ImportResult:
    """Read a subscriber file in any known layout: bad rows reported by line, the good ones cleaned.
    The header is checked at once; with `stream` the rows are read as `good` is iterated (clean_rows).

    Our own CSV without --map keeps its strict header (read_csv); another tool's export, or any file with
    --map, has its unknown columns ignored and listed once.
    """
    segments, known_topics, mapping, defaults = list(segments), list(known_topics), dict(mapping or {}), defaults or {}
    reader = csv.reader(handle)
    fieldnames = read_header(reader, where)
    header = [c for c in fieldnames if c is not None]
    if not header:
        raise SubscriberError(f"{where}: line 1: no header (the first line names the columns)")
    layout = LAYOUTS[tool] if tool else detect(header) or OWN
    result = ImportResult(layout, detected=tool is None and layout is not OWN)
    absent = [c for c in layout.signature if c not in header] if tool else []
    if absent:
        raise SubscriberError(f"{where}: line 1: not a {layout.label} export: no column {absent[0]!r}")
    absent = [c for c in mapping if c not in header]
    if absent:
        raise SubscriberError(f"{where}: line 1: --map: no column {absent[0]!r} (columns: {', '.join(header)})")
    if (layout is OWN and not mapping and "email" in header
            and (set(header) - set(CSV_COLUMNS) or not any(defaults.values()))):
        handle.seek(0)  # our own format, as it always was read (an unknown column is refused at line 1)
        strict = read_csv(handle, segments, known_topics, where=where, stream=stream)
        result.good, result.bad = strict.good, strict.bad
        return result
    sources = {name: cols for name, cols in layout.fields.items() if not set(cols) & set(mapping)}
    for column, target in mapping.items():
        sources[target] = (column,)
    if not any(c in header for c in sources.get("email", ())):
        raise SubscriberError(f"{where}: line 1: no email column; name the tool with --from "
                              f"({', '.join(LAYOUTS)}) or map one with --map COLUMN=email")
    if not any(c in header for c in sources.get("segment", ())) and not defaults.get("segment"):
        raise SubscriberError(f"{where}: line 1: no segment column; give --segment for this file")
    used = {c for cols in sources.values() for c in cols} | set(layout.status_columns)
    result.ignored = [c for c in header if c not in used]
    clean_record = subscriber_cleaner(segments, known_topics, EmailNormaliser())

    def clean(row: dict[str, Any]) -> dict[str, Any]:
        if None in row:
            raise SubscriberError(f"row: {len(header) + len(row[None])} cells for {len(header)} columns")
        return convert_row(row, layout, sources, clean_record, defaults)

    cleaned = clean_rows(reader, fieldnames, clean, stream)
    result.good, result.bad = cleaned.good, cleaned.bad
    return result


@contextlib.contextmanager
def open_import_file(path: Path, segments: Iterable[str], known_topics: Iterable[str] = (), **options: Any
                     ) -> Iterator[ImportResult]:
    """A subscriber file as UTF-8 (a byte-order mark is fine, as Mailchimp and Excel write it), open while
    the caller reads it; with stream=True its rows are read as `good` is iterated, never all at once."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            yield read_import(fh, segments, known_topics, where=str(path), **options)
    except UnicodeDecodeError:
        raise SubscriberError(f"{path}: encoding: not UTF-8 text (save the CSV as UTF-8)") from None


# -- the site's topic list ------------------------------------------------------------------------------

def topics_file(segments_file: str | None) -> Path:
    """topics.toml beside the site's segments.toml, else beside the bundled one."""
    if segments_file:
        return Path(segments_file).parent / "topics.toml"
    return Path(str(resources.files("newsletter._subscribers").joinpath("topics.toml")))


def site_topics(path: Path) -> list[str]:
    """Topic names a topics.toml defines, if there is one: a `topics` list (of names or of tables with a
    name) or one table per topic. The file belongs to the site; nothing here writes it."""
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SubscriberError(f"{path}: not valid TOML: {exc}") from None
    listed = data.get("topics")
    if isinstance(listed, list):
        return [str(t.get("name", "")) if isinstance(t, dict) else str(t) for t in listed
                if (t.get("name") if isinstance(t, dict) else str(t).strip())]
    return [str(table.get("name", key)) for key, table in data.items() if isinstance(table, dict)]


def known_topics(stored: Iterable[str], segments_file: str | None) -> list[str]:
    """The topics a subscriber may follow: those of stored summaries and the site's topic list, one spelling each."""
    seen: dict[str, str] = {}
    for topic in (*site_topics(topics_file(segments_file)), *stored):
        if topic.strip():
            seen.setdefault(topic.strip().lower(), topic.strip())
    return sorted(seen.values(), key=str.lower)
