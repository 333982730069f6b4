"""An editor's own account and the second step of logging in: two-step login (TOTP) enrolment with an inline QR
code, the code asked after the password, and (for admins) the editors and their roles."""

from __future__ import annotations

import hmac
import math
from typing import Any

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, session, url_for

from .. import twofactor
from ..roles import GRANTS, ROLES
from .limits import network_of
from .security import (PENDING_LOGIN_KEY, current_account, editor_accounts, mark_second_factor, must_enrol,
                       password_fingerprint, requires, start_editor_session)
from .state import get_ctx, web_state

bp = Blueprint("account", __name__, url_prefix="/editor")


def _site_secret() -> str:
    return web_state().config.require_secret()


# -- the second step of logging in -------------------------------------------------------------------

def _pending_login() -> dict[str, Any] | None:
    """The password step this cookie passed, while fresh and while the editor's hash is unchanged."""
    pending = session.get(PENDING_LOGIN_KEY)
    if not isinstance(pending, dict) or pending.get("until", 0) < web_state().clock():
        return None
    account = editor_accounts().get(pending.get("name", ""))
    if account is None or not hmac.compare_digest(pending.get("fingerprint", ""),
                                                  password_fingerprint(account.password_hash)):
        return None
    return pending


@bp.get("/login/code")
def login_code() -> Any:
    if _pending_login() is None:
        return redirect(url_for("editor.login"))
    return render_template("editor/login_code.html", error=None)


@bp.post("/login/code")
def login_code_submit() -> Any:
    state = web_state()
    pending = _pending_login()
    if pending is None:
        flash("Log in again: the time for the code ran out.", "error")
        return redirect(url_for("editor.login"), code=303)
    name, ip = pending["name"], request.remote_addr or "unknown"
    store = get_ctx().store
    attempt = state.limiter.login(store, name, ip)  # codes are guessed too: the same limits as passwords
    if attempt.wait:
        minutes = max(1, math.ceil(attempt.wait / 60))
        response = make_response(render_template(
            "editor/login_code.html", error=f"Too many wrong codes. Try again in {minutes} minute(s)."), 429)
        response.headers["Retry-After"] = str(math.ceil(attempt.wait))
        return response
    used = twofactor.verify(store, _site_secret(), name, request.form.get("code", ""), state.clock())
    if used is None:
        store.record_audit(name, "login.failed", f"editor:{name}", {"network": network_of(ip), "step": "code"})
        return render_template("editor/login_code.html", error="That code is wrong or was already used."), 401
    state.limiter.login_succeeded(store, attempt, name, ip)
    next_url = pending.get("next")
    start_editor_session(name, second_factor=True)
    store.record_audit(name, "login", f"editor:{name}", {"network": network_of(ip), "second_factor": used})
    if used == "recovery":
        flash(f"You used a recovery code; {store.recovery_codes_left(name)} are left.")
    return redirect(next_url or url_for("editor.issues"), code=303)


# -- my account ----------------------------------------------------------------------------------------

def _account_page(status: int = 200, **extra: Any) -> Any:
    account = current_account()
    assert account is not None  # @requires("account")
    store = get_ctx().store
    issuer = web_state().config.site_name
    enrolment = twofactor.pending(store, _site_secret(), account.name, issuer)
    permissions = [p for role in ROLES for p in GRANTS[role] if account.may(p)]
    return render_template("editor/account.html", account=account, permissions=permissions,
                           second_factor=twofactor.is_on(store, account.name), enrolment=enrolment,
                           codes_left=store.recovery_codes_left(account.name), must_enrol=must_enrol(),
                           **extra), status


@bp.get("/account")
@requires("account")
def page() -> Any:
    return _account_page()


@bp.post("/account/2fa")
@requires("account")
def enrol() -> Any:
    account = current_account()
    store = get_ctx().store
    if twofactor.is_on(store, account.name):
        flash("Two-step login is already on. Turn it off first to move it to another phone.", "error")
    else:
        twofactor.begin(store, _site_secret(), account.name, web_state().config.site_name)
        store.record_audit(account.name, "editor.2fa-enrol", f"editor:{account.name}")
    return redirect(url_for("account.page"), code=303)


@bp.post("/account/2fa/confirm")
@requires("account")
def confirm() -> Any:
    account = current_account()
    store = get_ctx().store
    try:
        codes = twofactor.confirm(store, _site_secret(), account.name, request.form.get("code", ""),
                                  web_state().clock())
    except twofactor.TwoFactorError as exc:
        return _account_page(400, error=f"Not turned on: {exc}.")
    mark_second_factor()
    store.record_audit(account.name, "editor.2fa-on", f"editor:{account.name}")
    return _account_page(recovery_codes=codes)  # shown this once; only their hashes are kept


@bp.post("/account/2fa/disable")
@requires("account")
def disable() -> Any:
    account = current_account()
    store = get_ctx().store
    if web_state().config.require_2fa_for_admins and account.role == "admin":
        abort(403, description="This site requires two-step login for admins: it cannot be turned off.")
    if twofactor.verify(store, _site_secret(), account.name, request.form.get("code", ""),
                        web_state().clock()) is None:
        return _account_page(400, error="Not turned off: enter a current code (or a recovery code).")
    store.drop_editor_secret(account.name)
    store.record_audit(account.name, "editor.2fa-off", f"editor:{account.name}")
    flash("Two-step login is off.")
    return redirect(url_for("account.page"), code=303)


# -- the editors (admins) --------------------------------------------------------------------------------

@bp.get("/editors")
@requires("editors")
def editors() -> Any:
    store = get_ctx().store
    return render_template("editor/editors.html", accounts=sorted(editor_accounts().values(), key=lambda a: a.name),
                           second_factor=store.second_factor_editors(), roles=ROLES)


@bp.post("/editors/<editor_name>/2fa-reset")
@requires("editors")
def reset_second_factor(editor_name: str) -> Any:
    """For an editor who lost their phone and their recovery codes: their second factor off, their sessions
    ended; they log in with the password and enrol again."""
    if editor_name not in editor_accounts():
        abort(404, description=f"There is no editor {editor_name}.")
    store = get_ctx().store
    dropped = store.drop_editor_secret(editor_name)
    ended = store.end_editor_sessions(editor_name)
    store.record_audit(current_account().name, "editor.2fa-reset", f"editor:{editor_name}",
                       {"had_second_factor": dropped, "sessions_ended": ended})
    flash(f"Two-step login of {editor_name} is reset; {ended} session(s) ended.")
    return redirect(url_for("account.editors"), code=303)
