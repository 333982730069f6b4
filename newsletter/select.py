"""The select stage: which period an issue covers, and which summaries it carries.

A summary is chosen once per (segment, cadence): published in the window,
not older than max_age_days, and not yet carried by a live issue of that
audience. Readers' topics pick among an issue's summaries (its variants).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Period:
    key: str  # 2026-W48 or 2026-11
    start: date

    @property
    def label(self) -> str:
        if "-W" in self.key:
            return f"Week of {self.start.day} {self.start:%B %Y}"
        return f"{self.start:%B %Y}"

    @classmethod
    def from_key(cls, key: str) -> "Period":
        if "-W" in key:
            year, week = key.split("-W")
            return cls(key, date.fromisocalendar(int(year), int(week), 1))
        return cls(key, date.fromisoformat(key + "-01"))


def period_for(now: datetime, cadence: str, tz: str = "UTC") -> Period:
    """The week (ISO, Monday first) or month that `now` falls in, in the configured zone."""
    day = local_today(now, tz)
    if cadence == "monthly":
        return Period(f"{day:%Y-%m}", day.replace(day=1))
    year, week, _ = day.isocalendar()
    return Period(f"{year}-W{week:02d}", day - timedelta(days=day.weekday()))


def local_today(now: datetime, tz: str) -> date:
    """Naive datetimes are read as already local."""
    return (now.astimezone(ZoneInfo(tz)) if now.tzinfo else now).date()


def topic_key(topics: list[str]) -> str:
    return "+".join(sorted(t.lower().replace(" ", "-") for t in topics)) or "all"


def matching(summaries: list[dict[str, Any]], topics: list[str]) -> list[dict[str, Any]]:
    """No topics chosen means every topic."""
    if not topics:
        return summaries
    wanted = {t.lower() for t in topics}
    return [s for s in summaries if wanted & {t.lower() for t in s["topics"]}]


def select_summaries(store: Any, segment: str, cadence: str, today: date, max_age_days: int,
                     limit: int) -> list[dict[str, Any]]:
    """Published, recent, and not yet carried by any live issue of this segment and cadence."""
    sent = store.sent_slugs(segment, cadence)
    since = (today - timedelta(days=max_age_days)).isoformat()
    fresh = [s for s in store.summaries(since=since, until=today.isoformat())
             if s["slug"] not in sent and not s.get("draft")]  # a feed's drafts wait for an editor
    return fresh[:limit]
