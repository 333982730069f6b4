"""CSRF tokens (in Flask's signed cookie) and editors' sessions (server-side: the cookie holds a random id)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import abort, current_app, g, redirect, request, session, url_for

from .state import get_ctx, web_state

CSRF_FIELD = "csrf_token"
CSRF_SESSION_KEY = "_csrf"
EDITOR_SESSION_KEY = "editor_sid"
#: Methods that never change anything: views answer them without a side effect.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
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
    if request.method in SAFE_METHODS:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, _EXEMPT_ATTR, False):
        return
    if not csrf_valid():
        abort(400, description="This form has expired or did not come from this site. "
                               "Go back, reload the page and try again.")


def password_fingerprint(password_hash: str) -> str:
    """What a session remembers of the hash it was opened with: a new hash in the config ends it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_editor_session(name: str) -> None:
    """A fresh cookie (and CSRF token) holding only a new random id; the row says who and until when."""
    state = web_state()
    session.clear()
    session_id = secrets.token_urlsafe(32)
    now = state.clock()
    get_ctx().store.start_editor_session(_id_hash(session_id), name, password_fingerprint(state.config.editors[name]),
                                         now, now + EDITOR_SESSION_SECONDS)
    session[EDITOR_SESSION_KEY] = session_id
    g.pop("editor", None)
    csrf_token()


def end_editor_session() -> None:
    session_id = session.get(EDITOR_SESSION_KEY)
    if isinstance(session_id, str):
        get_ctx().store.end_editor_session(_id_hash(session_id))
    session.clear()
    g.pop("editor", None)


def current_editor() -> str | None:
    """The editor whose live session this cookie names, while the config still has their same password hash."""
    if "editor" in g:
        return g.editor
    name = None
    session_id = session.get(EDITOR_SESSION_KEY)
    if isinstance(session_id, str) and session_id:
        state = web_state()
        row = get_ctx().store.editor_session(_id_hash(session_id), state.clock())
        stored = state.config.editors.get(row["editor"]) if row else None
        if stored and hmac.compare_digest(row["password_fingerprint"], password_fingerprint(stored)):
            name = row["editor"]
    g.editor = name
    return name


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_editor() is None:
            if request.method not in SAFE_METHODS:
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
