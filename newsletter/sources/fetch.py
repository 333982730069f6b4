"""Reading the outside world over HTTP: a feed URL's bytes, or a one-line error naming the URL."""

from __future__ import annotations

import urllib.error
import urllib.request

FEED_TIMEOUT = 20


class FetchError(Exception):
    pass


def fetch_url(url: str, timeout: float = FEED_TIMEOUT) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"{url}: url: could not fetch: HTTP {exc.code} {exc.reason}") from None
    except (OSError, ValueError) as exc:  # ValueError: a malformed URL
        raise FetchError(f"{url}: url: could not fetch: {exc}") from None
