"""A rich progress bar on a terminal; silence elsewhere (cron logs)."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_callbacks() -> Iterator[tuple[Callable[[int, int], None] | None, Callable[[int], None] | None]]:
    if not sys.stderr.isatty():
        yield None, None
        return
    with Progress(TextColumn("issue {task.fields[issue]}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=False) as bar:
        task: dict[str, int] = {}

        def on_issue(issue_id: int, pending: int) -> None:
            task["id"] = bar.add_task("send", total=pending, issue=issue_id)

        def on_progress(count: int) -> None:
            if "id" in task:
                bar.advance(task["id"], count)

        yield on_issue, on_progress
