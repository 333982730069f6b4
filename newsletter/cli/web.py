"""`newsletter serve` and `newsletter editors add|role|list|remove|2fa`: thin commands over the web app,
`config_edit`, `twofactor` and the store's editor sessions; each change to an editor is recorded in the audit log.

Flask and waitress are imported inside the commands, so other commands start
without them.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..config_edit import remove_editor, set_editor, set_role
from ..context import Context
from ..roles import ROLES, accounts
from ..segments import SegmentError
from ..settings import ConfigError
from ..store import StoreError
from .audit import cli_actor
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
    """Manage editor logins and roles (password hashes in newsletter.toml, second factors in the database)."""


def _source(ctx: Context) -> Path:
    """The site's newsletter.toml; its database must open too (every change of editors goes in the audit log),
    so nothing is written to a site that is not there."""
    source = _config(ctx).source
    if source is None:
        raise click.ClickException("no newsletter.toml found: run `newsletter init` first, or pass --config")
    try:
        ctx.store
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    return Path(source)


@editors.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES),
              help="author (preview, test-send, summaries), approver (also approve, cancel, schedule, send) or "
                   "admin (also subscribers, editors, audit log). Default: a new editor is an author; an "
                   "existing one keeps their role.")
@pass_ctx
def editors_add(ctx: Context, name: str, role: str | None) -> None:
    """Add an editor, or set a new password for one.

    Asks for the password twice (never on the command line, where shell
    history would keep it) and writes NAME = {hash = "...", role = "..."}
    under [editors] in the config file; every other line of the file stays as
    it was. A new password ends the editor's open sessions at once; a running
    `newsletter serve` reads the change at its next request.

    \b
    Example:
        newsletter editors add alice --role approver
    """
    from werkzeug.security import generate_password_hash

    if not NAME_RE.match(name):
        raise click.BadParameter("use letters, digits, - and _ only (at most 64)", param_hint="NAME")
    source = _source(ctx)
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password needs at least {MIN_PASSWORD} characters; nothing was changed")
    try:
        replaced, written = set_editor(source, name, generate_password_hash(password), role)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ended = f"; ended {_end_sessions(ctx, name)} open session(s)" if replaced else ""
    ctx.store.record_audit(cli_actor(), "editor.password" if replaced else "editor.add", f"editor:{name}",
                           {"role": written})
    click.echo(f"{'changed the password of' if replaced else 'added'} editor {name} (role {written}) in "
               f"{source}{ended}")


@editors.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
@pass_ctx
@handle_errors
def editors_role(ctx: Context, name: str, role: str) -> None:
    """Give an editor another role; their password stays. The pages follow at once.

    \b
    Example:
        newsletter editors role alice admin
    """
    old = set_role(_source(ctx), name, role)
    ctx.store.record_audit(cli_actor(), "editor.role", f"editor:{name}", {"role": [old, role]})
    click.echo(f"editor {name}: role {old} -> {role}")


@editors.command("list")
@pass_ctx
@handle_errors
def editors_list(ctx: Context) -> None:
    """List the editors, their roles and whether two-step login is on.

    \b
    Example:
        newsletter editors list
    """
    second = ctx.store.second_factor_editors() if Path(ctx.config.database).exists() else {}
    for account in sorted(accounts(_config(ctx).editors).values(), key=lambda a: a.name):
        click.echo(f"{account.name:<20} {account.role:<9} 2fa {'on' if account.name in second else 'off'}")


@editors.command("2fa")
@click.argument("name")
@click.option("--qr", "qr_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the enrolment QR code here as SVG (default: NAME-2fa.svg).")
@click.option("--off", "turn_off", is_flag=True, help="Turn the editor's two-step login off instead.")
@pass_ctx
@handle_errors
def editors_2fa(ctx: Context, name: str, qr_path: Path | None, turn_off: bool) -> None:
    """Set up (or reset) an editor's two-step login (TOTP).

    Prints the otpauth:// URI and writes its QR code as an SVG file
    (owner-only) to scan with an authenticator app, then asks for the first
    code the app shows: only then is it on, and the recovery codes are
    printed, this once. A second factor the editor had before stops working.
    The secret is kept encrypted in the database with NEWSLETTER_SECRET.

    \b
    Example:
        newsletter editors 2fa alice --qr alice.svg
        newsletter editors 2fa alice --off
    """
    import os
    import time

    from .. import twofactor

    config = _config(ctx)
    if name not in config.editors:
        raise ConfigError(f"{config.source}: no editor {name!r} under [editors]; add them first")
    store = ctx.store
    if turn_off:
        dropped = store.drop_editor_secret(name)
        store.record_audit(cli_actor(), "editor.2fa-off", f"editor:{name}", {"had_second_factor": dropped})
        click.echo(f"two-step login of {name} is off" if dropped else f"{name} had no two-step login; nothing changed")
        return
    enrolment = twofactor.begin(store, config.require_secret(), name, config.site_name)
    qr_path = qr_path or Path(f"{name}-2fa.svg")
    fd = os.open(qr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(enrolment.svg)
    click.echo(f"otpauth URI: {enrolment.uri}")
    click.echo(f"QR code written to {qr_path} (delete it once scanned)")
    code = click.prompt("Code from the app")
    try:
        codes = twofactor.confirm(store, config.require_secret(), name, code, time.time())
    except twofactor.TwoFactorError as exc:
        store.drop_editor_secret(name)
        raise click.ClickException(f"{exc}; two-step login of {name} is off, run the command again") from None
    store.record_audit(cli_actor(), "editor.2fa-on", f"editor:{name}")
    click.echo(f"two-step login of {name} is on. Recovery codes (each works once; shown only now):")
    for recovery in codes:
        click.echo(f"  {recovery}")


@editors.command("remove")
@click.argument("name")
@pass_ctx
@handle_errors
def editors_remove(ctx: Context, name: str) -> None:
    """Remove an editor: their line under [editors] goes, their open sessions end at once.

    Every other line of the config file stays as it was; a running `newsletter
    serve` reads the change at its next request, so the old password stops working at once.

    \b
    Example:
        newsletter editors remove alice
    """
    source = _source(ctx)
    remove_editor(source, name)
    ended = _end_sessions(ctx, name)
    ctx.store.drop_editor_secret(name)
    ctx.store.record_audit(cli_actor(), "editor.remove", f"editor:{name}", {"sessions_ended": ended})
    click.echo(f"removed editor {name} from {source}; ended {ended} open session(s)")


def _end_sessions(ctx: Context, name: str) -> int:
    """End the editor's sessions in the database at once."""
    return ctx.store.end_editor_sessions(name)
