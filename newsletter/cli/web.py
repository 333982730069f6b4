"""`newsletter serve` and `newsletter editors add|remove`: thin commands over the web app, `config_edit` and the
store's editor sessions.

Flask and waitress are imported inside the commands, so other commands start
without them.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..config_edit import remove_editor, set_editor
from ..context import Context
from ..segments import SegmentError
from ..settings import ConfigError
from ..store import StoreError
from .common import handle_errors, pass_ctx

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_PASSWORD = 12


def _config(ctx: Context):
    try:
        return ctx.config
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64), help="Worker threads.")
@click.option("--trusted-proxy", metavar="ADDRESS",
              help="Address of the reverse proxy in front; its X-Forwarded-For then names the client "
                   "(login and sign-up limits count per client).")
@pass_ctx
def serve(ctx: Context, host: str, port: int, threads: int, trusted_proxy: str | None) -> None:
    """Run the web app (sign-up, preferences, editors' pages, SendGrid webhook) under waitress.

    Put a TLS-terminating proxy in front of it for a public site, set
    site_url to the public https:// address, and pass --trusted-proxy with the
    proxy's address so each visitor is told apart by their own address.

    \b
    Example:
        NEWSLETTER_SECRET=... newsletter --config /srv/newsletter/newsletter.toml serve --port 8000
    """
    import waitress

    from ..web import create_app

    config = _config(ctx)
    try:
        app = create_app(config)
    except (ConfigError, SegmentError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"serving {config.site_name} on http://{host}:{port} (public address {config.site_url})")
    proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_count": 1,
             "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
             "clear_untrusted_proxy_headers": True} if trusted_proxy else {}
    waitress.serve(app, host=host, port=port, threads=threads, ident="newsletter", **proxy)


@click.group()
def editors() -> None:
    """Manage editor logins (stored as password hashes in newsletter.toml)."""


@editors.command("add")
@click.argument("name")
@pass_ctx
def editors_add(ctx: Context, name: str) -> None:
    """Add an editor, or set a new password for one.

    Asks for the password twice (never on the command line, where shell
    history would keep it) and writes NAME = "<hash>" under [editors] in the
    config file; every other line of the file stays as it was. A new password
    ends the editor's open sessions at once. Restart `newsletter serve`
    afterwards.

    \b
    Example:
        newsletter editors add alice
    """
    from werkzeug.security import generate_password_hash

    if not NAME_RE.match(name):
        raise click.BadParameter("use letters, digits, - and _ only (at most 64)", param_hint="NAME")
    source = _config(ctx).source
    if source is None:
        raise click.ClickException("no newsletter.toml found: run `newsletter init` first, or pass --config")
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password needs at least {MIN_PASSWORD} characters; nothing was changed")
    try:
        replaced = set_editor(Path(source), name, generate_password_hash(password))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ended = f"; ended {_end_sessions(ctx, name)} open session(s)" if replaced else ""
    click.echo(f"{'changed the password of' if replaced else 'added'} editor {name} in {source}{ended}")


@editors.command("remove")
@click.argument("name")
@pass_ctx
@handle_errors
def editors_remove(ctx: Context, name: str) -> None:
    """Remove an editor: their line under [editors] goes, their open sessions end at once.

    Every other line of the config file stays as it was. Restart `newsletter
    serve` afterwards, so the running app forgets the old password too.

    \b
    Example:
        newsletter editors remove alice
    """
    source = _config(ctx).source
    if source is None:
        raise ConfigError("no newsletter.toml found: pass --config")
    remove_editor(Path(source), name)
    click.echo(f"removed editor {name} from {source}; ended {_end_sessions(ctx, name)} open session(s)")


def _end_sessions(ctx: Context, name: str) -> int:
    """End the editor's sessions in the database (none when the database was never created)."""
    if not Path(ctx.config.database).exists():
        return 0
    return ctx.store.end_editor_sessions(name)
