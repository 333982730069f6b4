"""Rate limits kept in SQLite, so a restart resets nothing: each attempt is counted and recorded in one
IMMEDIATE transaction, so parallel requests cannot all slip under a limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .connection import Tables


@dataclass(frozen=True)
class Limit:
    """At most `limit` hits of (scope, key) within `window` seconds.

    With `cap` set, delays grow instead: hits are remembered for `cap` seconds, and once `limit` is
    reached each further hit doubles the wait after the newest one (window, 2x, 4x... up to cap).
    """
    scope: str
    key: str
    limit: int
    window: float
    cap: float = 0.0

    @property
    def horizon(self) -> float:
        return max(self.window, self.cap)

    def wait(self, count: int, newest: float | None, nth: float | None, now: float) -> float:
        """Seconds until one more hit is allowed (0: now), from the hits within the horizon: how many, the
        newest, and the limit-th newest."""
        if count < self.limit:
            return 0.0
        if self.cap:
            delay = min(self.window * 2 ** min(count - self.limit, 40), self.cap)
            until = (now if newest is None else newest) + delay
        else:
            until = (now if nth is None else nth) + self.window
        return max(0.0, until - now)


@dataclass(frozen=True)
class Attempt:
    waits: dict[str, float]  # scope -> seconds to wait (0: under that limit)
    hit_ids: tuple[int, ...]  # the hits recorded, so a successful login can take its own back

    @property
    def wait(self) -> float:
        return max(self.waits.values(), default=0.0)


class Throttles(Tables):
    def throttle_attempt(self, limits: Sequence[Limit], now: float, record_blocked: bool = False) -> Attempt:
        """Count the recent hits of every limit and record one more for each: always when `record_blocked`,
        else only when no limit is reached. The same statements run whatever the counts are."""
        waits: dict[str, float] = {}
        ids: list[int] = []
        with self.transaction() as conn:
            conn.execute("DELETE FROM throttle_hits WHERE expires_at <= ?", (now,))
            for limit in limits:
                since = now - (limit.horizon if limit.cap else limit.window)
                row = conn.execute("""SELECT COUNT(*), MAX(at), (SELECT at FROM throttle_hits
                                      WHERE scope = ? AND key = ? AND at > ? ORDER BY at DESC LIMIT 1 OFFSET ?)
                                      FROM throttle_hits WHERE scope = ? AND key = ? AND at > ?""",
                                   (limit.scope, limit.key, since, max(limit.limit - 1, 0),
                                    limit.scope, limit.key, since)).fetchone()
                waits[limit.scope] = limit.wait(row[0], row[1], row[2], now)
            if record_blocked or not any(waits.values()):
                for limit in limits:
                    cur = conn.execute("INSERT INTO throttle_hits (scope, key, at, expires_at) VALUES (?, ?, ?, ?)",
                                       (limit.scope, limit.key, now, now + limit.horizon))
                    ids.append(int(cur.lastrowid or 0))
        return Attempt(waits, tuple(ids))

    def throttle_release(self, hit_ids: Iterable[int], clear: Iterable[tuple[str, str]] = ()) -> None:
        """Take back recorded hits, and forget every hit of the (scope, key) pairs in `clear`."""
        with self.transaction() as conn:
            conn.executemany("DELETE FROM throttle_hits WHERE id = ?", [(i,) for i in hit_ids])
            conn.executemany("DELETE FROM throttle_hits WHERE scope = ? AND key = ?", list(clear))
