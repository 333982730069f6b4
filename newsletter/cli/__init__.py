"""The `newsletter` command: each command parses, calls one function of the library, prints.

One module per command group; the options every group shares live in `common`.
"""

from __future__ import annotations

import logging

import click

from . import (audit, bench, bounces, digest, issues, notices, preview, purge, report, setup, subscribers, summaries,
               web)
from .common import LazyContext


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for command in (setup.init, setup.demo, setup.settings, summaries.summaries, subscribers.subscribers,
                digest.digest, digest.status, issues.issues, preview.preview, report.report, bench.bench, web.serve,
                web.editors, bounces.bounces, audit.audit, purge.purge, notices.notices):
    cli.add_command(command)

__all__ = ["cli"]
