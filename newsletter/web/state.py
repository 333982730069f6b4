"""The app's state, what flaskr's db.py is to its blueprints: filled by the factory, read through
`current_app` and `g`, so no blueprint ever imports the module that creates the app."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import current_app, g

from ..context import Context
from ..segments import Segment
from ..settings import Config, ConfigError, load_config
from ..tokens import Tokens
from .limits import Limiter
from .rendering import RenderCache

log = logging.getLogger("newsletter.web")

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
    editors_fixed: bool = False  # the app was given its editors; else they are read from newsletter.toml
    _editors_seen: tuple[Any, dict[str, Any]] = (None, {})

    def editors(self) -> dict[str, Any]:
        """The [editors] table as the config file says now, so `editors remove` (or a new password or role)
        takes effect at the next request without a restart; the file is re-read only when it changed."""
        source = self.config.source
        if self.editors_fixed or source is None:
            return self.config.editors
        try:
            stat = os.stat(source)
        except OSError:
            return {}  # the file is gone: nobody logs in until it is back
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._editors_seen[0] != stamp:
            try:
                editors = load_config(source, env=self.config.env).editors
            except ConfigError as exc:  # a broken edit: nobody logs in until it is mended, never a 500
                log.error("editors not read: %s", exc)
                editors = {}
            self._editors_seen = (stamp, editors)
        return self._editors_seen[1]


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
