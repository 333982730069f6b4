"""What every command shares: errors as one line, the lazily loaded site, `--now`, and the options
spelled the same way everywhere (`--segment`, `--cadence`)."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import click

from ..context import Context
from ..model import FatalSendError
from ..segments import CADENCES, SegmentError
from ..settings import ConfigError
from ..sources.subscribers import SubscriberError
from ..sources.summaries import IngestError
from ..store import DatabaseError, StoreError, describe
from ..tokens import TokenError
from ..topics import TopicError


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a command reports as one line. Rendering's and the run lock's are imported here, when a
    command fails, not when the CLI starts: a command that renders nothing (`subscribers import` of a
    million rows) then never loads the render stack (Jinja, MJML, premailer: 28 MB and 0.3 s)."""
    from ..digest import LockBusy
    from ..render import RenderError
    return (ConfigError, IngestError, SubscriberError, SegmentError, RenderError, FatalSendError,
            LockBusy, TokenError, TopicError, LookupError, StoreError)


def handle_errors(fn: Callable) -> Callable:
    """Known failures become one clear line and exit status 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except expected_errors() as exc:  # evaluated only when something was raised
            # KeyError's str() adds quotes; every other message is shown as written.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(str(message)) from None
        except DatabaseError as exc:  # raised by SQLite below the store's own checks: still one line
            ctx = next((a for a in args if isinstance(a, Context)), None)
            raise click.ClickException(describe(Path(ctx.config.database) if ctx else Path("database"), exc)) from None
    return wrapper


def parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(timezone.utc)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date-time: {value!r}", param_hint="--now") from None


pass_ctx = click.make_pass_decorator(Context)


class LazyContext(Context):
    """Loads the config only when a command needs it, so `--help` works anywhere."""

    def __init__(self, path: str | None):
        self._path = path

    @functools.cached_property
    def config(self):  # type: ignore[override]
        return Context.load(self._path).config


def segment_option(help: str = "Only this segment.", required: bool = False) -> Callable:
    return click.option("--segment", required=required, help=help)


def cadence_option(help: str) -> Callable:
    return click.option("--cadence", type=click.Choice(CADENCES), default="weekly", show_default=True, help=help)


def now_option(help: str) -> Callable:
    return click.option("--now", "now_text", metavar="ISO-DATETIME", help=help)
