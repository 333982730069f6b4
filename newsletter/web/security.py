"""CSRF tokens, editor login checks and an in-memory throttle. No database access."""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import abort, current_app, redirect, request, session, url_for

CSRF_FIELD = "csrf_token"
CSRF_SESSION_KEY = "_csrf"
#: Editors are logged out this long after logging in, whatever they do.
EDITOR_SESSION_SECONDS = 12 * 3600

_EXEMPT_ATTR = "_newsletter_csrf_exempt"


def csrf_token() -> str:
    """This session's CSRF token, created on first use (the form template calls it)."""
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def csrf_valid() -> bool:
    sent = request.form.get(CSRF_FIELD, "")
    expected = session.get(CSRF_SESSION_KEY, "")
    return bool(sent and expected) and hmac.compare_digest(sent.encode(), expected.encode())


def csrf_exempt(view: Callable) -> Callable:
    """Mark a view that checks the request itself (signed webhook, RFC 8058 one-click)."""
    setattr(view, _EXEMPT_ATTR, True)
    return view


def protect_csrf() -> None:
    """before_request hook: every state-changing request carries this session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, _EXEMPT_ATTR, False):
        return
    if not csrf_valid():
        abort(400, description="This form has expired or did not come from this site. "
                               "Go back, reload the page and try again.")


class Throttle:
    """At most `limit` events per key within `window` seconds, in memory, thread-safe.

    The clock is injectable so tests move time instead of sleeping.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._events: dict[Any, deque[float]] = {}
        self._lock = threading.Lock()

    def _fresh(self, key: Any, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def blocked(self, key: Any) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        with self._lock:
            now = self.clock()
            events = self._fresh(key, now)
            if len(events) < self.limit:
                return 0.0
            return max(1.0, events[0] + self.window - now)

    def hit(self, key: Any) -> None:
        with self._lock:
            now = self.clock()
            self._fresh(key, now)
            self._events.setdefault(key, deque()).append(now)
            if len(self._events) > 10_000:  # bound memory under a flood of distinct keys
                for stale in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window]:
                    del self._events[stale]

    def clear(self, key: Any) -> None:
        with self._lock:
            self._events.pop(key, None)


def current_editor() -> str | None:
    name = session.get("editor")
    login_at = session.get("login_at", 0)
    state = current_app.extensions["newsletter"]
    if not name or name not in state.config.editors:
        return None
    if not isinstance(login_at, (int, float)) or time.time() - login_at > EDITOR_SESSION_SECONDS:
        return None
    return name


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_editor() is None:
            if request.method != "GET":
                abort(403, description="Log in again to do this.")
            return redirect(url_for("editor.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapper


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: never //host or a scheme, so login cannot redirect elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
