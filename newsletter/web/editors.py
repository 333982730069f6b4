"""Editors' pages: log in, list issues, preview an issue at two widths, approve, cancel, send a test.

Each view names the permission it needs (roles.py); each action and login leaves a row in the audit log."""

from __future__ import annotations

import functools
import logging
import math
from datetime import datetime, timezone
from typing import Any, Callable

from flask import (Blueprint, Response, abort, flash, make_response, redirect, render_template, request, session,
                   url_for)
from werkzeug.security import check_password_hash, generate_password_hash

from .. import lifecycle, twofactor
from ..model import FatalSendError
from ..preview import PREVIEW_VALUES
from ..readability import flagged
from ..render import RenderError
from ..select import Period
from ..settings import ConfigError
from ..sources.subscribers import SubscriberError, normalise_email
from ..store import SCHEDULABLE
from .limits import network_of
from .security import (PENDING_LOGIN_KEY, PENDING_LOGIN_SECONDS, current_editor, editor_accounts, end_editor_session,
                       password_fingerprint, requires, safe_next, start_editor_session)
from .state import EMAIL_CSP, get_ctx, web_state

log = logging.getLogger("newsletter.web")
bp = Blueprint("editor", __name__, url_prefix="/editor")

#: Widths shown side by side on the issue page (MJML's desktop width, a common phone).
WIDTHS = (("Desktop", 640), ("Phone", 375))
TEST_SEND_ERRORS = (ConfigError, RenderError, FatalSendError, SubscriberError, LookupError, ValueError, OSError)


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so both answers take as long."""
    return generate_password_hash("not-a-password-anyone-has")


# -- log in / out ----------------------------------------------------------------

@bp.get("/login")
def login() -> Any:
    next_url = safe_next(request.args.get("next"))
    if current_editor():
        return redirect(next_url or url_for("editor.issues"))
    return render_template("editor/login.html", next=next_url, error=None, name="")


@bp.post("/login")
def login_submit() -> Any:
    state = web_state()
    next_url = safe_next(request.values.get("next"))
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    ip = request.remote_addr or "unknown"
    store = get_ctx().store
    # Counted as a failure before the password is checked, in one transaction: parallel guesses queue.
    attempt = state.limiter.login(store, name, ip)
    if attempt.wait:
        minutes = max(1, math.ceil(attempt.wait / 60))
        log.warning("login throttled: name=%r ip=%s", name, ip)
        response = make_response(render_template(
            "editor/login.html", next=next_url, name=name,
            error=f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."), 429)
        response.headers["Retry-After"] = str(math.ceil(attempt.wait))
        return response
    account = editor_accounts().get(name)
    valid = check_password_hash(account.password_hash if account else _dummy_hash(), password) and account is not None
    if not valid:
        log.warning("login failed: name=%r ip=%s", name, ip)
        # An unknown name is not kept: people type their password into the name field.
        who = name if account else "unknown"
        store.record_audit(who, "login.failed", f"editor:{who}", {"network": network_of(ip)})
        return render_template("editor/login.html", next=next_url, name=name, error="Wrong name or password."), 401
    state.limiter.login_succeeded(store, attempt, name, ip)
    if twofactor.is_on(store, name):
        # The password is right; the session starts once the code is too (account.login_code).
        session[PENDING_LOGIN_KEY] = {"name": name, "fingerprint": password_fingerprint(account.password_hash),
                                      "until": state.clock() + PENDING_LOGIN_SECONDS, "next": next_url}
        return redirect(url_for("account.login_code"), code=303)
    start_editor_session(name)
    store.record_audit(name, "login", f"editor:{name}", {"network": network_of(ip)})
    return redirect(next_url or url_for("editor.issues"), code=303)


@bp.post("/logout")
def logout() -> Any:
    name = current_editor()
    if name:
        get_ctx().store.record_audit(name, "logout", f"editor:{name}")
    end_editor_session()
    flash("You are logged out.")
    return redirect(url_for("editor.login"), code=303)


# -- issues ----------------------------------------------------------------------

@bp.get("/")
@requires("preview")
def issues() -> str:
    store = get_ctx().store
    rows = list(reversed(store.issues()))
    for row in rows:
        row["counts"] = store.delivery_counts(row["id"])
        row["period_label"] = Period.from_key(row["period"]).label
    return render_template("editor/issues.html", issues=rows, segments=web_state().segments)


def load_issue(issue_id: int) -> dict[str, Any]:
    issue = get_ctx().store.get_issue(issue_id)
    if issue is None:
        abort(404, description=f"There is no issue {issue_id}.")
    return issue


def render_for_preview(issue: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        rendered = web_state().renders.variant(get_ctx(), issue, [])
    except (RenderError, KeyError) as exc:
        return None, f"This issue cannot be rendered: {exc}"
    if rendered is None:
        return None, "This issue has no summaries."
    return rendered, None


@bp.get("/issues/<int:issue_id>")
@requires("preview")
def issue(issue_id: int) -> str:
    row = load_issue(issue_id)
    store = get_ctx().store
    rendered, error = render_for_preview(row)
    html, text = rendered.personalise(PREVIEW_VALUES) if rendered else ("", "")
    size_kb = len(html.encode()) / 1024
    summaries = store.issue_summaries(issue_id)
    max_grade = web_state().config.max_reading_grade
    reading = {s["id"]: flagged(s, max_grade) for s in summaries}
    return render_template("editor/issue.html", issue=row, rendered=rendered, error=error, text=text, size_kb=size_kb,
                           widths=WIDTHS, summaries=summaries, reading=reading, max_grade=max_grade,
                           enforced=web_state().config.enforce_reading_grade,
                           counts=store.delivery_counts(issue_id),
                           period_label=Period.from_key(row["period"]).label,
                           segment=web_state().segments.get(row["segment"]),
                           approval=store.last_audit(f"issue:{issue_id}", "issue.approve"),
                           send_time=lifecycle.shown_send_time(row, web_state().config.timezone),
                           schedulable=row["status"] in SCHEDULABLE, timezone=web_state().config.timezone)


def preview_parts(issue_id: int) -> tuple[str, str]:
    """The issue's (html, text) with the preview's values filled in, or 409 when it cannot render."""
    rendered, error = render_for_preview(load_issue(issue_id))
    if rendered is None:
        abort(409, description=error)
    return rendered.personalise(PREVIEW_VALUES)


@bp.get("/issues/<int:issue_id>/email.html")
@requires("preview")
def issue_html(issue_id: int) -> Response:
    response = make_response(preview_parts(issue_id)[0])
    response.headers["Content-Security-Policy"] = EMAIL_CSP
    return response


@bp.get("/issues/<int:issue_id>/email.txt")
@requires("preview")
def issue_text(issue_id: int) -> Response:
    return Response(preview_parts(issue_id)[1], mimetype="text/plain")


def _act(issue_id: int, action: Callable[[], Any], errors: tuple[type[Exception], ...], failure: str,
         success: str, audit: tuple[str, dict[str, Any]]) -> Any:
    """An editor's action on an issue: logged, its outcome flashed, then back to the issue page; a success is
    recorded in the audit log as `audit` (action, detail). `failure` has a {} where the reason goes."""
    try:
        action()
    except errors as exc:
        log.warning("issue %s: %s (editor %s)", issue_id, failure.format(exc), current_editor())
        flash(failure.format(exc), "error")
    else:
        log.info("issue %s: %s (editor %s)", issue_id, success, current_editor())
        get_ctx().store.record_audit(current_editor() or "?", audit[0], f"issue:{issue_id}", audit[1])
        flash(success)
    return redirect(url_for("editor.issue", issue_id=issue_id), code=303)


def _transition(issue_id: int, status: str, done: str, action: str) -> Any:
    before = load_issue(issue_id)["status"]
    return _act(issue_id, lambda: lifecycle.transition(get_ctx(), issue_id, status), (lifecycle.LifecycleError,),
                f"Not {status}: {{}}.", f"Issue {issue_id} is {status}: {done}.",
                (action, {"status": [before, status]}))


@bp.post("/issues/<int:issue_id>/approve")
@requires("approve")
def approve(issue_id: int) -> Any:
    return _transition(issue_id, "approved", "the next digest run sends it", "issue.approve")


@bp.post("/issues/<int:issue_id>/cancel")
@requires("cancel")
def cancel(issue_id: int) -> Any:
    return _transition(issue_id, "cancelled", "it will not be sent", "issue.cancel")


@bp.post("/issues/<int:issue_id>/schedule")
@requires("schedule")
def schedule(issue_id: int) -> Any:
    """Set the send time (the datetime-local field: a time in the configured zone) or clear it; audited."""
    before = load_issue(issue_id).get("send_at")
    clear = bool(request.form.get("clear"))
    text = request.form.get("send_at", "").strip()
    back = redirect(url_for("editor.issue", issue_id=issue_id), code=303)
    try:
        if not clear and not text:
            raise lifecycle.LifecycleError("enter the date and time it should go out")
        at = None if clear else lifecycle.parse_send_time(text, web_state().config.timezone)
        now = datetime.fromtimestamp(web_state().clock(), timezone.utc)
        after = lifecycle.schedule(get_ctx(), issue_id, at, now)["send_at"]
    except lifecycle.LifecycleError as exc:
        flash(f"Not scheduled: {exc}.", "error")
        return back
    get_ctx().store.record_audit(current_editor() or "?", "issue.schedule", f"issue:{issue_id}",
                                 {"send_at": [before, after]})
    flash(f"Issue {issue_id}: send time {'cleared' if clear else 'set'}.")
    return back


@bp.post("/issues/<int:issue_id>/test")
@requires("test-send")
def send_test(issue_id: int) -> Any:
    load_issue(issue_id)
    try:
        address = normalise_email(request.form.get("address", ""))
    except SubscriberError:
        flash("Enter the email address the test should go to.", "error")
        return redirect(url_for("editor.issue", issue_id=issue_id), code=303)
    return _act(issue_id, lambda: lifecycle.send_test(get_ctx(), issue_id, address), TEST_SEND_ERRORS,
                "The test was not sent: {}", f"A test of issue {issue_id} was sent to {address}.",
                ("issue.test-send", {"to": address}))


# -- summaries -------------------------------------------------------------------

@bp.get("/summaries")
@requires("summaries")
def summaries() -> str:
    return render_template("editor/summaries.html", summaries=get_ctx().store.summaries())
