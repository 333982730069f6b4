"""The app's state, what flaskr's db.py is to its blueprints: filled by the factory, read through
`current_app` and `g`, so no blueprint ever imports the module that creates the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from flask import current_app, g

from ..context import Context
from ..segments import Segment
from ..settings import Config
from ..tokens import Tokens
from .limits import Limiter
from .rendering import RenderCache

PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-src 'self'; "
            "frame-ancestors 'self'; base-uri 'none'")
#: Rendered emails (preview iframes, archive): their own inline styles, no script, no plugin, opaque origin.
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; frame-ancestors 'self'; "
             "base-uri 'none'; form-action 'none'; sandbox allow-popups allow-popups-to-escape-sandbox")


@dataclass
class WebState:
    """What the app keeps between requests (nothing that holds a database connection)."""
    config: Config
    segments: dict[str, Segment]
    tokens: Tokens
    limiter: Limiter
    clock: Callable[[], float]  # wall-clock seconds; tests move it
    renders: RenderCache = field(default_factory=RenderCache)
    webhook_verifier: Any = None
    webhook_key_error: str = ""


def web_state() -> WebState:
    """The state of the app serving this request."""
    return current_app.extensions["newsletter"]


def get_ctx() -> Context:
    """This request's Context: the config, the app's segments, and a Store opened on first use."""
    ctx = g.get("newsletter_ctx")
    if ctx is None:
        state = web_state()
        ctx = Context(state.config)
        ctx.__dict__["segments"] = state.segments  # loaded once by the app
        g.newsletter_ctx = ctx
    return ctx
