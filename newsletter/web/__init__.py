"""The web app: `create_app(config=None, **overrides)` returns a Flask WSGI app.

Kept import-light: the CLI imports this package for its commands, and Flask is
loaded only when an app is made.
"""

from __future__ import annotations

from typing import Any


def create_app(config: Any = None, **overrides: Any) -> Any:
    from .app import create_app as factory
    return factory(config, **overrides)


__all__ = ["create_app"]
