"""`newsletter bench --import`: `newsletter subscribers import` of an N-row CSV at scale, in a scratch site.

Writes N rows of our own CSV format (varied names, numbers, a dozen domains in mixed case, segments,
cadences, topics; every row valid), then runs the real command twice, each time in a fresh interpreter so
its peak RSS is its own: into the new site (every row added), and the same file again (every row an update).
Reports wall time of the whole command (interpreter start included), CPU time, peak RSS and rows a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import bootstrap
from .bench_search import DOMAINS, FIRST, LAST, SEGMENTS

TOPICS = ("", "MS", "NMOSD;MOGAD", "MS;PML", "", "Autoimmune encephalitis", "", "MS")
CASES = ("new", "again")


@dataclass
class ImportRun:
    rows: int
    case: str  # new: into an empty site; again: the same file a second time
    added: int
    updated: int
    rejected: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    rows_per_s: int


def write_file(path: Path, n: int) -> None:
    """N rows, streamed to the file (never a list of them)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,name,segment,cadence,topics,status\n")
        for i in range(n):
            first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
            domain = DOMAINS[(i * 7) % len(DOMAINS)]
            if i % 5 == 4:
                domain = domain.upper()
            cadence = "monthly" if i % 10 == 9 else "weekly"
            status = "" if i % 20 == 19 else "active"
            fh.write(f"{first}.{last}{i}@{domain},{first.title()} {last.title()},{SEGMENTS[i % 3]},{cadence},"
                     f"{TOPICS[i % len(TOPICS)]},{status}\n")


def run(n: int) -> list[ImportRun]:
    """Both cases at N rows, in a scratch folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="newsletter-import-") as tmp:
        env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret"}
        site = bootstrap.init(Path(tmp) / "site", {"postal_address": "Bench, 1 Example Street",
                                                   "require_approval": "no",
                                                   "site_url": "https://digest.example.org"}, env=env)
        path = Path(tmp) / "people.csv"
        write_file(path, n)
        return [_run_isolated(n, case, site.config_path, path, env) for case in CASES]


_CHILD = """import json, resource, sys
from newsletter.cli import cli
try:
    cli.main(sys.argv[1:], standalone_mode=False)
finally:
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print("USAGE " + json.dumps({"cpu": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                                 "rss_kb": own.ru_maxrss + children.ru_maxrss}), file=sys.stderr)
"""


def _run_isolated(n: int, case: str, config: Path, path: Path, env: dict[str, str]) -> ImportRun:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, "--config", str(config), "subscribers", "import", str(path)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    usage = [line for line in done.stderr.splitlines() if line.startswith("USAGE ")]
    if done.returncode != 0 or not usage:
        raise RuntimeError(f"bench import {n} {case} failed:\n{done.stderr[-2000:]}")
    measured = json.loads(usage[-1][len("USAGE "):])
    counts = done.stdout.strip().splitlines()[-1].split(", ")  # "N added, M updated, K rejected[, ...]"
    added, updated, rejected = (int(part.split()[0]) for part in counts[:3])
    return ImportRun(rows=n, case=case, added=added, updated=updated, rejected=rejected, wall_s=round(wall, 2),
                     cpu_s=round(measured["cpu"], 2), peak_rss_mb=round(measured["rss_kb"] / 1024, 1),
                     rows_per_s=round(n / wall) if wall else 0)
