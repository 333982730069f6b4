"""Reader segments, defined in segments.toml so a new one is an edit, not code."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SECTION_NAMES = ("findings", "patients", "caregivers", "clinicians", "details", "limitations")
CADENCES = ("weekly", "monthly")


class SegmentError(Exception):
    pass


@dataclass(frozen=True)
class Segment:
    name: str
    display_name: str
    audience: str
    intro: str
    sections: tuple[str, ...]


def bundled_segments_file() -> Path:
    return Path(str(resources.files("newsletter._subscribers").joinpath("segments.toml")))


def read_site_file(path: Path, error: type[Exception], what: str) -> dict:
    """One of the site's TOML files beside the subscribers (segments, topics), or `error` naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def load_segments(path: str | Path | None = None) -> dict[str, Segment]:
    path = Path(path) if path else bundled_segments_file()
    data = read_site_file(path, SegmentError, "segments")
    segments = {}
    for name, table in data.items():
        where = f"{path}: [{name}]"
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            raise SegmentError(f"{where}: name: use lowercase letters, digits, - and _ (it names files and URLs)")
        if not isinstance(table, dict):
            raise SegmentError(f"{where}: expected a table")
        for key in ("display_name", "intro", "sections"):
            if not table.get(key):
                raise SegmentError(f"{where}: {key}: missing")
        sections = list(table["sections"])
        bad = [s for s in sections if s not in SECTION_NAMES]
        if bad:
            raise SegmentError(f"{where}: sections: unknown {bad[0]!r} (use {', '.join(SECTION_NAMES)})")
        if "limitations" not in sections:
            sections.append("limitations")  # never dropped, for any segment
        segments[name] = Segment(name, table["display_name"], table.get("audience", table["display_name"]),
                                 table["intro"], tuple(sections))
    if not segments:
        raise SegmentError(f"{path}: defines no segments")
    return segments
