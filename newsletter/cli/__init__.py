"""The `newsletter` command: each command parses, calls one function of the library, prints.

One module per command group; the options every group shares live in `common`.
"""

from __future__ import annotations

import importlib
import logging

import click

from .common import LazyContext

#: command name -> (module of newsletter.cli, attribute); `--help` lists them by name
COMMANDS = {"init": ("setup", "init"), "demo": ("setup", "demo"), "settings": ("setup", "settings"),
            "summaries": ("summaries", "summaries"), "subscribers": ("subscribers", "subscribers"),
            "digest": ("digest", "digest"), "status": ("digest", "status"), "issues": ("issues", "issues"),
            "preview": ("preview", "preview"), "report": ("report", "report"), "bench": ("bench", "bench"),
            "serve": ("web", "serve"), "editors": ("web", "editors"), "bounces": ("bounces", "bounces"),
            "audit": ("audit", "audit"), "purge": ("purge", "purge"), "notices": ("notices", "notices")}


class LazyGroup(click.Group):
    """Each command's module imported when that command runs (or `--help` lists it), not at start: the
    commands between them reach every stage (rendering, the web app, the messengers), and `subscribers
    import` of a million rows has better use for the 28 MB they take (a page cache: store/subscriber_import.py)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        if command.name != name:
            raise RuntimeError(f"cli: {module}.{attribute} is named {command.name!r}, not {name!r}")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="newsletter.toml to use (default: $NEWSLETTER_CONFIG, then ./newsletter.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(click_ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Email digests of plain-language MS research summaries.

    \b
    Quick start:
        newsletter demo                 # everything on embedded defaults
        newsletter init mysite && cd mysite
        newsletter summaries import summaries/*.md
        newsletter subscribers import people.csv
        newsletter digest run --cadence weekly
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    ctx = LazyContext(config_path)
    click_ctx.obj = ctx
    click_ctx.call_on_close(ctx.close)


__all__ = ["cli"]
