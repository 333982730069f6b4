"""Reading the outside world over HTTP: a feed URL's bytes, or a one-line error naming the URL.

A conditional GET (`If-None-Match`, `If-Modified-Since`) lets an unchanged feed cost one 304.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

FEED_TIMEOUT = 20
USER_AGENT = "newsletter-feed-reader/0.1"


class FetchError(Exception):
    pass


@dataclass
class Fetched:
    """What the server answered: 200 with a body, or 304 (nothing changed since the validators)."""
    status: int
    body: bytes
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def fetch(url: str, timeout: float = FEED_TIMEOUT, etag: str | None = None,
          last_modified: str | None = None) -> Fetched:
    """GET `url`, conditional on the validators kept from the last answer; a 304 keeps them."""
    headers = {"User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return Fetched(resp.status, resp.read(), resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return Fetched(304, b"", exc.headers.get("ETag") or etag,
                           exc.headers.get("Last-Modified") or last_modified)
        raise FetchError(f"{url}: url: could not fetch: HTTP {exc.code} {exc.reason}") from None
    except (OSError, ValueError) as exc:  # ValueError: a malformed URL; OSError includes timeouts
        raise FetchError(f"{url}: url: could not fetch: {exc}") from None


def fetch_url(url: str, timeout: float = FEED_TIMEOUT) -> bytes:
    return fetch(url, timeout).body
