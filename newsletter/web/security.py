"""CSRF tokens (in Flask's signed cookie), editors' sessions (server-side: the cookie holds a random id) and what
each editor's role lets them do (`requires`: 403 for the rest, whatever a form says)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import abort, current_app, g, redirect, request, session, url_for

from ..roles import EditorAccount, accounts
from .state import get_ctx, web_state

CSRF_FIELD = "csrf_token"
CSRF_SESSION_KEY = "_csrf"
EDITOR_SESSION_KEY = "editor_sid"
#: Methods that never change anything: views answer them without a side effect.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Editors are logged out this long after logging in, whatever they do.
EDITOR_SESSION_SECONDS = 12 * 3600
#: A password accepted, the second factor awaited: kept in the signed cookie this long.
PENDING_LOGIN_KEY = "pending_login"
PENDING_LOGIN_SECONDS = 300
_PERMISSION_ATTR = "_newsletter_permission"

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


def editor_accounts() -> dict[str, EditorAccount]:
    return accounts(web_state().editors())


def start_editor_session(name: str, second_factor: bool = False) -> None:
    """A fresh cookie (and CSRF token) holding only a new random id; the row says who and until when."""
    state = web_state()
    session.clear()
    session_id = secrets.token_urlsafe(32)
    now = state.clock()
    store = get_ctx().store
    store.start_editor_session(_id_hash(session_id), name, password_fingerprint(editor_accounts()[name].password_hash),
                               now, now + EDITOR_SESSION_SECONDS)
    if second_factor:
        store.mark_session_second_factor(_id_hash(session_id))
    session[EDITOR_SESSION_KEY] = session_id
    g.pop("editor_row", None)
    csrf_token()


def mark_second_factor() -> None:
    """This session has just proved the second factor (an enrolment confirmed)."""
    session_id = session.get(EDITOR_SESSION_KEY)
    if isinstance(session_id, str):
        get_ctx().store.mark_session_second_factor(_id_hash(session_id))
        g.pop("editor_row", None)


def end_editor_session() -> None:
    session_id = session.get(EDITOR_SESSION_KEY)
    if isinstance(session_id, str):
        get_ctx().store.end_editor_session(_id_hash(session_id))
    session.clear()
    g.pop("editor_row", None)


def _session_row() -> dict[str, Any] | None:
    """This cookie's live session, while the config still has the editor with the same password hash."""
    if "editor_row" in g:
        return g.editor_row
    found = None
    session_id = session.get(EDITOR_SESSION_KEY)
    if isinstance(session_id, str) and session_id:
        row = get_ctx().store.editor_session(_id_hash(session_id), web_state().clock())
        account = editor_accounts().get(row["editor"]) if row else None
        if account and hmac.compare_digest(row["password_fingerprint"], password_fingerprint(account.password_hash)):
            found = {**row, "account": account}
    g.editor_row = found
    return found


def current_account() -> EditorAccount | None:
    row = _session_row()
    return row["account"] if row else None


def current_editor() -> str | None:
    """The name of the editor logged in with this cookie (None: nobody)."""
    account = current_account()
    return account.name if account else None


def must_enrol() -> bool:
    """An admin without a second factor on a site that requires one: they may only enrol (or log out)."""
    row = _session_row()
    return bool(row and web_state().config.require_2fa_for_admins and row["account"].role == "admin"
                and not row["second_factor"])


def may(permission: str) -> bool:
    """Whether this request's editor may do it (the templates show only what they may)."""
    account = current_account()
    if account is None or (permission != "account" and must_enrol()):
        return False
    return account.may(permission)


def requires(permission: str) -> Callable[[Callable], Callable]:
    """Only a logged-in editor whose role grants `permission`; others get the login page or a 403."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            account = current_account()
            if account is None:
                if request.method not in SAFE_METHODS:
                    abort(403, description="Log in again to do this.")
                return redirect(url_for("editor.login", next=request.full_path.rstrip("?")))
            if permission != "account" and must_enrol():
                if request.method not in SAFE_METHODS:
                    abort(403, description="Set up two-step login first: this site requires it for admins.")
                return redirect(url_for("account.page"))
            if not account.may(permission):
                abort(403, description=f"Your role ({account.role}) does not let you do this.")
            return view(*args, **kwargs)
        setattr(wrapper, _PERMISSION_ATTR, permission)
        return wrapper
    return decorate


def permission_of(view: Callable) -> str | None:
    """What a view requires (None: no login at all)."""
    return getattr(view, _PERMISSION_ATTR, None)


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: never //host or a scheme, so login cannot redirect elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
