"""The Flask app factory: editors' pages, subscribers' signed links, the SendGrid webhook.

`create_app(config)` takes a resolved Config (or a path to newsletter.toml, or
nothing: the usual lookup). Keyword overrides in lower case replace settings
(`create_app(cfg, site_url="https://...")`); upper-case ones go to Flask's
config (`TESTING=True`, `LOGIN_MAX_FAILURES=3`, `CLOCK=fake_clock`; FLASK_DEFAULTS lists them).

Each request opens its own Store (SQLite in WAL mode, about a millisecond) and
closes it when the request ends, so the threads of a WSGI server never share a
connection. The factory opens the database once first: a missing, empty,
damaged or unwritable one stops the start (StoreError) instead of a 500 per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, render_template, request
from werkzeug.exceptions import HTTPException

from ..context import Context
from ..segments import CADENCES, load_segments
from ..settings import Config, load_config
from ..tokens import Tokens
from .account import bp as account_bp
from .audit import bp as audit_bp
from .editors import bp as editors_bp
from .people import bp as people_bp
from .privacy import bp as privacy_bp
from .public import bp as public_bp
from .reading import bp as reading_bp
from .reports import bp as reports_bp
from .limits import Limiter
from .security import csrf_token, current_account, may, protect_csrf
from .state import PAGE_CSP, WebState
from .webhooks import bp as webhooks_bp

log = logging.getLogger("newsletter.web")

FLASK_DEFAULTS = {
    "LOGIN_MAX_FAILURES": 5,         # per (editor name, network) before the first lock
    "LOGIN_MAX_FAILURES_IP": 20,     # per network, whatever the names tried, before the first lock
    "LOGIN_WINDOW_SECONDS": 900,     # the first lock; each further failure doubles it
    "LOGIN_MAX_LOCK_SECONDS": 86400,  # the longest lock; failures are forgotten this long after
    "SUBSCRIBE_MAX_PER_ADDRESS": 3,  # confirmation emails to one address per window
    "SUBSCRIBE_MAX_PER_MAILBOX": 5,  # ... to one mailbox (plus-tags, Gmail's dots) per window
    "SUBSCRIBE_MAX_PER_IP": 30,      # sign-up attempts from one network per window
    "SUBSCRIBE_WINDOW_SECONDS": 3600,
    "ACCESS_MAX_PER_SUBSCRIBER": 3,  # fresh data links mailed to one subscriber per window
    "CLOCK": time.time,              # wall-clock: the counters and sessions in SQLite outlive the process
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
}


def create_app(config: Config | str | Path | None = None, **overrides: Any) -> Flask:
    if config is None or isinstance(config, (str, Path)):
        config = load_config(config)
    settings = {k: v for k, v in overrides.items() if not k.isupper()}
    flask_settings = {k: v for k, v in overrides.items() if k.isupper()}
    unknown = [k for k in settings if k not in config.as_dict()]
    if unknown:
        raise TypeError(f"create_app: unknown setting {unknown[0]!r}")
    if settings:
        config = config.replace(**settings)
    if config.site_url.endswith("/"):
        config = config.replace(site_url=config.site_url.rstrip("/"))
    secret = config.require_secret()
    Context(config).store.close()

    app = Flask(__name__)
    secure = config.site_url.startswith("https://")
    app.config.update(
        SECRET_KEY=hmac.new(secret.encode(), b"newsletter-web-session", hashlib.sha256).hexdigest(),
        SESSION_COOKIE_NAME="__Host-newsletter" if secure else "newsletter",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        PREFERRED_URL_SCHEME="https" if secure else "http",
        **FLASK_DEFAULTS,
    )
    app.config.update(flask_settings)
    state = WebState(
        config=config,
        segments=load_segments(config.segments_file or None),
        tokens=Tokens(secret),
        limiter=Limiter.from_config(secret, app.config),
        clock=app.config["CLOCK"],
        editors_fixed="editors" in settings,
    )
    _load_webhook_key(state)
    app.extensions["newsletter"] = state

    app.register_blueprint(public_bp)
    app.register_blueprint(reading_bp)
    app.register_blueprint(editors_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(people_bp)
    app.register_blueprint(privacy_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(reports_bp)
    app.register_blueprint(webhooks_bp)
    app.before_request(protect_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token  # imported form macros see globals, not the context
    app.jinja_env.globals["may"] = may  # what the editor's role lets them do: pages show only that

    @app.context_processor
    def page_globals() -> dict[str, Any]:
        account = current_account()
        return {"site_name": config.site_name, "postal_address": config.postal_address, "lang": config.lang,
                "editor": account.name if account else None, "editor_role": account.role if account else None,
                "cadences": CADENCES}

    @app.teardown_appcontext
    def close_store(exc: BaseException | None) -> None:
        ctx = g.pop("newsletter_ctx", None)
        if ctx is not None:
            ctx.close()

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # signed tokens live in URLs
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        if secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        response = exc.get_response()
        body = render_template("message.html", title=f"{code} {exc.name}", message=exc.description, code=code)
        response.set_data(body)
        response.content_type = "text/html; charset=utf-8"
        return response

    return app


def _load_webhook_key(state: WebState) -> None:
    """A malformed key must not stop the app; the webhook then rejects everything with 403."""
    key = (state.config.webhook_public_key or "").strip()
    if not key:
        state.webhook_key_error = "webhook_public_key is not set"
        return
    from sendgrid import EventWebhook

    try:
        state.webhook_verifier = EventWebhook(key)
    except (ValueError, TypeError) as exc:
        state.webhook_key_error = f"webhook_public_key: not a valid ECDSA public key ({exc})"
        log.error(state.webhook_key_error)

