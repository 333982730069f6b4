"""`newsletter serve` and `newsletter editors add`: thin commands over the web app and the config file.

Flask and waitress are imported inside the commands, so other commands start
without them.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path

import click

from ..context import Context
from ..segments import SegmentError
from ..settings import ConfigError

pass_ctx = click.make_pass_decorator(Context)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_PASSWORD = 12
TABLE_RE = re.compile(r"^\s*\[\s*editors\s*\]\s*(#.*)?$")
HEADER_RE = re.compile(r"^\s*\[")


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

    from . import create_app

    config = _config(ctx)
    try:
        app = create_app(config)
    except (ConfigError, SegmentError) as exc:
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
    config file; every other line of the file stays as it was. Restart
    `newsletter serve` afterwards.

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
    replaced = set_editor(Path(source), name, generate_password_hash(password))
    click.echo(f"{'changed the password of' if replaced else 'added'} editor {name} in {source}")


def set_editor(path: Path, name: str, password_hash: str) -> bool:
    """Put `name = "hash"` in the [editors] table, changing no other line; returns whether it replaced one."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    entry = f'{name} = "{password_hash}"{newline}'
    key_re = re.compile(rf"""^\s*(?:{re.escape(name)}|"{re.escape(name)}"|'{re.escape(name)}')\s*=""")
    start = next((i for i, line in enumerate(lines) if TABLE_RE.match(line.rstrip("\r\n"))), None)
    replaced = False
    if start is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        lines += [newline, f"[editors]{newline}", entry]
    else:
        end = next((i for i in range(start + 1, len(lines)) if HEADER_RE.match(lines[i])), len(lines))
        existing = next((i for i in range(start + 1, end) if key_re.match(lines[i])), None)
        if existing is not None:
            lines[existing] = entry
            replaced = True
        else:
            # after the table's last entry (before trailing blank lines and comments of the next table)
            at = start + 1
            for i in range(start + 1, end):
                if "=" in lines[i] and not lines[i].lstrip().startswith("#"):
                    at = i + 1
            if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
                lines[at - 1] += newline
            lines.insert(at, entry)
    new_text = "".join(lines)
    try:
        written = tomllib.loads(new_text).get("editors", {})
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path}: the [editors] table could not be updated safely: {exc}") from None
    if written.get(name) != password_hash:
        raise click.ClickException(f"{path}: the [editors] table could not be updated safely")
    _write_atomically(path, new_text.encode("utf-8"))
    return replaced


def _write_atomically(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
