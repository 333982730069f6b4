"""Validate subscriber rows (one address, one subscriber) from the CLI or a CSV file."""

from __future__ import annotations

import csv
import functools
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name

from ..model import SUBSCRIBER_STATUSES
from ..segments import CADENCES

CSV_COLUMNS = ("email", "name", "segment", "cadence", "topics", "status")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class SubscriberError(Exception):
    pass


def one_line(name: str) -> str:
    """A name as CRM exports write it (line breaks, tabs, stray control characters) on one line, single-spaced."""
    return " ".join(_CONTROLS.sub(" ", name).split())


def normalise_email(address: str) -> str:
    """Syntax check and normal form; no DNS (deliverability is the provider's job)."""
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"email: {address.strip()!r}: {exc}") from None
    return result.normalized.lower()


class EmailNormaliser:
    """`normalise_email` for the rows of one file, each distinct domain checked once.

    email-validator stays the judge: an address takes the short way only when it is ASCII with one plain
    local part (the dot-atom form, so no quotes, display name or second @ before the domain) and a domain
    that email-validator's own domain check passed (its result kept, at most `domains` of them); the local
    part is then the one email-validator would return unchanged, and the three lengths it checks are
    checked. Anything else, and every address it would refuse, goes to `normalise_email` itself: the same
    normal form and the same error (tests/test_email_fast_path.py compares the two with Hypothesis)."""

    def __init__(self, domains: int = 16384):
        self._domain = functools.lru_cache(maxsize=domains)(_domain_forms)

    def __call__(self, address: str) -> str:
        text = address.strip()
        if text.isascii():
            local, at, domain = text.partition("@")
            if at and DOT_ATOM_TEXT.match(local) and domain and not (domain[0] == "[" and domain[-1] == "]"):
                forms = self._domain(domain)
                if forms is not None:
                    normalized = f"{local}@{forms[0]}"
                    if (len(text) <= EMAIL_MAX_LENGTH and len(normalized.encode()) <= EMAIL_MAX_LENGTH
                            and len(local) + 1 + len(forms[1]) <= EMAIL_MAX_LENGTH):
                        return normalized.lower()
        return normalise_email(address)


def _domain_forms(domain: str) -> tuple[str, str] | None:
    """The domain's normal and ASCII forms by email-validator's own check, or None if it refuses it."""
    try:
        checked = validate_email_domain_name(domain, test_environment=False, globally_deliverable=True)
    except EmailNotValidError:
        return None
    return checked["domain"], checked["ascii_domain"]


def subscriber_cleaner(segments: Iterable[str], known_topics: Iterable[str] = (),
                       normalise: Callable[[str], str] = normalise_email) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`clean_subscriber` with its lists prepared once, for the rows of a whole file."""
    segments = list(segments)
    allowed = set(segments)
    canonical = {t.lower(): t for t in known_topics}

    @functools.lru_cache(maxsize=1024)
    def topics_of(text: str) -> tuple[str, ...]:
        """A file's topics cell as the sorted, canonical topics (a file has few distinct cells)."""
        return tuple(sorted(set(checked_topics([t.strip() for t in text.replace(",", ";").split(";") if t.strip()]))))

    def checked_topics(topics: list[str]) -> list[str]:
        if canonical:
            unknown = [t for t in topics if t.lower() not in canonical]
            if unknown:
                raise SubscriberError(f"topics: {unknown[0]!r} is not one of {', '.join(canonical.values())}")
            topics = [canonical[t.lower()] for t in topics]
        return topics

    def clean(raw: dict[str, Any]) -> dict[str, Any]:
        email = normalise(raw.get("email") or "")
        segment = (raw.get("segment") or "").strip()
        if segment not in allowed:
            raise SubscriberError(f"segment: {segment!r} is not one of {', '.join(segments)}")
        cadence = (raw.get("cadence") or "weekly").strip()
        if cadence not in CADENCES:
            raise SubscriberError(f"cadence: {cadence!r} is not one of {', '.join(CADENCES)}")
        status = (raw.get("status") or "").strip() or None  # None: pending if new, unchanged if known
        if status is not None and status not in SUBSCRIBER_STATUSES:
            raise SubscriberError(f"status: {status!r} is not one of {', '.join(SUBSCRIBER_STATUSES)}")
        topics = raw.get("topics") or []
        topics = list(topics_of(topics)) if isinstance(topics, str) else sorted(set(checked_topics(topics)))
        name = raw.get("name") or ""
        if not name.isprintable() or "  " in name or name != name.strip():
            name = one_line(name)
        if len(name) > 200 or "<" in name or ">" in name:
            raise SubscriberError(f"name: {name[:40]!r}: at most 200 characters, no < or >")
        return {"email": email, "name": name, "segment": segment, "cadence": cadence, "topics": topics,
                "status": status}
    return clean


def clean_subscriber(raw: dict[str, Any], segments: Iterable[str], known_topics: Iterable[str] = ()) -> dict[str, Any]:
    return subscriber_cleaner(segments, known_topics)(raw)


@dataclass
class CsvResult:
    good: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def read_csv(handle: TextIO, segments: Iterable[str], known_topics: Iterable[str] = (),
             where: str = "csv", stream: bool = False) -> CsvResult:
    """Each row checked alone; a bad row is reported by the line it starts on (a quoted name may span lines).
    With `stream`, see clean_rows."""
    segments, known_topics = list(segments), list(known_topics)
    reader = csv.reader(handle)
    fieldnames = read_header(reader, where)
    if "email" not in fieldnames or "segment" not in fieldnames:
        raise SubscriberError(f"{where}: line 1: header must name at least email and segment "
                              f"(columns: {', '.join(CSV_COLUMNS)})")
    unknown = [c for c in fieldnames if c not in CSV_COLUMNS]
    if unknown:
        raise SubscriberError(f"{where}: line 1: unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})")
    return clean_rows(reader, fieldnames, subscriber_cleaner(segments, known_topics, EmailNormaliser()), stream)


def read_header(reader: Any, where: str) -> list[str]:
    """The first row of a csv.reader: the column names (a byte-order mark left by Excel dropped)."""
    try:
        return [name.lstrip("\ufeff") if i == 0 else name for i, name in enumerate(next(reader, []))]
    except csv.Error as exc:
        raise SubscriberError(f"{where}: line 1: not CSV: {exc}") from None


def clean_rows(reader: Any, fieldnames: list[str], clean: Callable[[dict[str, Any]], dict[str, Any]],
               stream: bool = False) -> CsvResult:
    """Each row of a csv.reader (past its header, `fieldnames`) through `clean`: a bad row (or a second row for
    one address) is kept with the line it starts on.

    With `stream`, `good` is an iterator read once (each record with its `line`) and `bad` fills as it is
    read; a second row for one address is then the writer's to find (store.import_subscribers does), so
    that nothing grows with the file but its bad rows."""
    result = CsvResult()
    records = _records(reader, fieldnames, clean, result.bad)
    if stream:
        result.good = records  # type: ignore[assignment]
        return result
    seen: dict[str, int] = {}
    for rec in records:
        line = rec.pop("line")
        if rec["email"] in seen:
            result.bad.append((line, f"email: {rec['email']} already on line {seen[rec['email']]}"))
            continue
        seen[rec["email"]] = line
        result.good.append(rec)
    return result


def _records(reader: Any, fieldnames: list[str], clean: Callable[[dict[str, Any]], dict[str, Any]],
             bad: list[tuple[int, str]]) -> Iterator[dict[str, Any]]:
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader, None)
        except csv.Error as exc:  # e.g. a bare carriage return, a field over the size limit: that record is bad
            bad.append((line, f"not CSV: {exc}"))
            continue
        if values is None:
            return
        if not values:  # a blank line
            continue
        try:
            rec = clean(dict(zip(fieldnames, values)))
        except SubscriberError as exc:
            bad.append((line, str(exc)))
            continue
        rec["line"] = line
        yield rec


def read_csv_file(path: Path, segments: Iterable[str]) -> CsvResult:
    """A CSV file as UTF-8 (a byte-order mark is fine), or a one-line error naming it."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return read_csv(fh, segments, where=str(path))
    except UnicodeDecodeError:
        raise SubscriberError(f"{path}: encoding: not UTF-8 text (save the CSV as UTF-8)") from None


def write_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{c: row.get(c, "") for c in CSV_COLUMNS}, "topics": ";".join(row.get("topics") or [])})
    return out.getvalue()
