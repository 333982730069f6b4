"""The site's topic list with aliases (topics.toml, beside the segments), so feed categories map onto it.

A category becomes a topic only through this list: "Neuromyelitis optica" -> NMOSD,
while "Uncategorized" is reported and ignored instead of reaching the sign-up form.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .segments import read_site_file


class TopicError(Exception):
    pass


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class Topics:
    names: tuple[str, ...]
    by_key: dict[str, str]  # casefolded name or alias -> topic name

    def canonical(self, term: str) -> str | None:
        """The topic a category names, or None when the list does not know it."""
        return self.by_key.get(_key(term))

    def map(self, terms: list[str]) -> tuple[list[str], list[str]]:
        """(topics, unknown terms), each once and in order of first appearance."""
        topics: list[str] = []
        unknown: list[str] = []
        for term in terms:
            topic = self.canonical(term)
            if topic is None:
                if term.strip() and term.strip() not in unknown:
                    unknown.append(term.strip())
            elif topic not in topics:
                topics.append(topic)
        return topics, unknown


def bundled_topics_file() -> Path:
    return Path(str(resources.files("newsletter._subscribers").joinpath("topics.toml")))


@functools.lru_cache(maxsize=8)
def load_topics(path: str | Path | None = None) -> Topics:
    path = Path(path) if path else bundled_topics_file()
    data = read_site_file(path, TopicError, "topics")
    by_key: dict[str, str] = {}
    for name, table in data.items():
        where = f"{path}: [{name}]"
        if not isinstance(table, dict):
            raise TopicError(f"{where}: expected a table (with an optional aliases list)")
        aliases = table.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise TopicError(f"{where}: aliases: expected a list of names")
        for term in (name, *aliases):
            if by_key.get(_key(term), name) != name:
                raise TopicError(f"{where}: {term!r} already names topic {by_key[_key(term)]!r}")
            by_key[_key(term)] = name
    if not data:
        raise TopicError(f"{path}: defines no topics")
    return Topics(tuple(data), by_key)
