"""What each issue did and how the list changes, as plain rows: the numbers behind `newsletter report`.

Statuses are counted as the ledger holds them, so a status added later shows up by
itself. Bounces and complaints come from provider events and from subscribers'
statuses (one per recipient, whichever says it first); opens and clicks only where
tracking is on, and only as unique counts per issue, never per reader.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any, Iterable
from zoneinfo import ZoneInfo

#: Ledger statuses shown first, in this order, even at zero; any other status follows.
STATUS_ORDER = ("sent", "deferred", "failed", "unknown", "skipped", "pending", "sending")
WINDOW_DAYS = 7
PROXY_NOTE = ("Opens are unique per recipient and inflated by privacy proxies (Apple Mail Privacy Protection and "
              "image caches open every message); read them as a ceiling, and clicks as the better signal.")
SOFT = {"blocked", "soft", "transient", "deferred", "temporary"}


def tracking_on(config: Any) -> bool:
    """Only SendGrid reports opens and clicks back (and only when the account's tracking is on)."""
    return config.backend == "sendgrid"


def classify(event: dict[str, Any]) -> str | None:
    """hard_bounces | soft_bounces | complaints | unsubscribes for a provider event; None for the others."""
    kind = str(event.get("type") or "").lower()
    payload = event.get("payload") or "{}"
    details = json.loads(payload) if isinstance(payload, str) else payload
    detail = str(details.get("type") or details.get("classification") or "").lower() if isinstance(details, dict) else ""
    status = str(details.get("status") or "") if isinstance(details, dict) else ""
    if kind in ("bounce", "hard_bounce", "hardbounce"):
        return "soft_bounces" if detail in SOFT or status.startswith("4") else "hard_bounces"
    if kind in ("deferred", "soft_bounce", "softbounce", "blocked"):
        return "soft_bounces"
    if kind == "dropped":
        return "hard_bounces" if "bounce" in str(details.get("reason", "")).lower() else None
    if kind in ("spamreport", "complaint", "abuse"):
        return "complaints"
    if kind in ("unsubscribe", "group_unsubscribe"):
        return "unsubscribes"
    return None


LEFT_AS = {"unsubscribed": "unsubscribes", "bounced": "hard_bounces", "complained": "complaints"}


def _statuses(counts: Iterable[dict[str, int]]) -> list[str]:
    seen = {status for c in counts for status in c}
    return [s for s in STATUS_ORDER if s in seen or s in STATUS_ORDER[:4]] + sorted(seen - set(STATUS_ORDER))


def issue_rows(store: Any, issue_id: int | None = None, tracking: bool = False,
               days: int = WINDOW_DAYS) -> list[dict[str, Any]]:
    """One row per issue (an issue is one segment's): planned, each ledger status, bounces, complaints,
    unsubscribes in the `days` after its deliveries were planned, and unique opens and clicks when tracked."""
    issues = store.reported_issues(issue_id)
    if issue_id is not None and not issues:
        raise LookupError(f"issue {issue_id}: no such issue, or nothing of it reached the ledger yet")
    by_issue = store.status_counts_by_issue()
    statuses = _statuses(by_issue.get(i["id"], {}) for i in issues)
    rows = []
    for issue in issues:
        counts = by_issue.get(issue["id"], {})
        since = issue["planned_at"]
        until = (datetime.fromisoformat(since) + timedelta(days=days)).isoformat()
        who: dict[str, set[Any]] = {k: set() for k in ("hard_bounces", "soft_bounces", "complaints", "unsubscribes")}
        for event in store.issue_events(issue["id"], since, until):
            kind = classify(event)
            if kind:
                who[kind].add(event["subscriber_id"] or event["email"] or event["event_id"])
        for left in store.recipients_who_left(issue["id"], since, until):
            who[LEFT_AS[left["status"]]].add(left["id"])
        who["soft_bounces"] -= who["hard_bounces"]  # a soft bounce that turned hard counts once, as hard
        row = {"issue": issue["id"], "segment": issue["segment"], "cadence": issue["cadence"],
               "period": issue["period"], "issue_status": issue["status"], "planned": sum(counts.values())}
        row.update({status: counts.get(status, 0) for status in statuses})
        row.update({kind: len(ids) for kind, ids in who.items()})
        tracked = store.tracked_counts(issue["id"]) if tracking else {"opens": None, "clicks": None}
        row.update(tracked)
        rows.append(row)
    return rows


def _week(stamp: str, zone: ZoneInfo) -> str:
    year, week, _ = datetime.fromisoformat(stamp).astimezone(zone).isocalendar()
    return f"{year}-W{week:02d}"


def subscriber_rows(store: Any, tz: str = "UTC") -> list[dict[str, Any]]:
    """Per ISO week (in the configured zone) and segment: new, confirmed, unsubscribed, bounced, complained.

    Read from each subscriber's dates and present status: someone who left is counted in the week they left."""
    zone = ZoneInfo(tz)
    table: dict[tuple[str, str], dict[str, int]] = {}

    def add(stamp: str | None, segment: str, column: str) -> None:
        if stamp:
            cell = table.setdefault((_week(stamp, zone), segment), dict.fromkeys(
                ("new", "confirmed", "unsubscribed", "bounced", "complained"), 0))
            cell[column] += 1

    for segment, created, confirmed, left, status in store.subscriber_dates():
        add(created, segment, "new")
        add(confirmed, segment, "confirmed")
        if status in ("unsubscribed", "bounced", "complained"):
            add(left, segment, status)
    return [{"week": week, "segment": segment, **cells} for (week, segment), cells in sorted(table.items())]


def as_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()


def as_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns for a terminal; untracked numbers show as `-`."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[str(c) for c in columns]] + [["-" if r[c] is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(w) if i and cell.lstrip("-").isdigit() else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in cells) + "\n"
