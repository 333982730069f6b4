"""`newsletter bench --search`: the editors' subscriber search at scale, in a scratch database.

Builds N subscribers with varied addresses (names, numbers, a dozen domains) and times the searches an editor
types, each the median of repeated runs: a one- and two-letter prefix, a rare and a common substring, a
substring with filters, the next page. Also what the trigram index costs: its size and the insert time.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .store import Store

FIRST = ("ana", "ben", "chloe", "dev", "emma", "farid", "grace", "hugo", "ines", "jamal", "kim", "liam", "maria",
         "noor", "oscar", "priya", "quinn", "rosa", "sam", "tomas", "uma", "victor", "wei", "yara", "zoe")
LAST = ("smith", "garcia", "nguyen", "muller", "rossi", "kowalski", "okafor", "tanaka", "silva", "dubois")
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me", "web.de",
           "orange.fr", "example.org", "hospital.example.net", "ms-society.example.org", "uni.example.edu")
SEGMENTS = ("patients", "caregivers", "clinicians")
TOPICS = ([], ["MS"], ["NMOSD", "MOGAD"], ["MS", "PML"], [])
#: (label, search arguments): what an editor types, from the first letter on.
SEARCHES = (
    ("prefix, 1 character", {"text": "m"}),
    ("prefix, 2 characters", {"text": "ma"}),
    ("substring, rare (one address)", {"text": "tanaka4242"}),
    ("substring, common (every gmail address)", {"text": "gmail"}),
    ("substring + status, segment, topic", {"text": "smith", "status": "active", "segment": "clinicians",
                                            "topic": "MS"}),
    ("no text, segment + cadence", {"segment": "caregivers", "cadence": "monthly"}),
    ("no text, filters nothing matches (worst case)", {"topic": "PML", "status": "pending"}),
)


def rows(n: int):
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        email = f"{first}.{last}{i}@{DOMAINS[(i * 7) % len(DOMAINS)]}"
        yield (email, "", SEGMENTS[i % 3], "monthly" if i % 10 == 9 else "weekly", json.dumps(TOPICS[i % len(TOPICS)]))


@dataclass
class Timing:
    label: str
    results: int
    median_ms: float
    next_page_ms: float | None


def run(n: int, repeats: int = 15) -> tuple[dict[str, float], list[Timing]]:
    with tempfile.TemporaryDirectory(prefix="newsletter-search-") as tmp:
        path = Path(tmp) / "search.db"
        store = Store(path, create=True)
        try:
            started = time.perf_counter()
            store.bulk_add_subscribers(rows(n))
            insert_s = time.perf_counter() - started
            facts = {"subscribers": n, "insert_s": insert_s, "index_mb": store.table_bytes("subscriber_search") / 1e6}
            timings = [_time(store, label, args, repeats) for label, args in SEARCHES]
        finally:
            store.close()  # the last connection checkpoints the WAL into the file
        facts["database_mb"] = path.stat().st_size / 1e6
    return facts, timings


def _time(store: Store, label: str, args: dict, repeats: int) -> Timing:
    samples, page = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        page = store.search_subscribers(limit=51, **args)
        samples.append(time.perf_counter() - started)
    next_ms = None
    if len(page) == 51:
        after = page[49]["id"]
        more = []
        for _ in range(repeats):
            started = time.perf_counter()
            store.search_subscribers(after_id=after, limit=51, **args)
            more.append(time.perf_counter() - started)
        next_ms = statistics.median(more) * 1000
    return Timing(label, len(page), statistics.median(samples) * 1000, next_ms)
