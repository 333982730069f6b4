"""`newsletter preview`: each segment's upcoming (or a given) issue as files and a side-by-side page."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from ..context import Context
from ..preview import preview_renders, write_preview
from .common import cadence_option, handle_errors, now_option, parse_now, pass_ctx, segment_option


@click.command()
@segment_option()
@click.option("--issue", "issue_id", type=int, help="Preview this issue instead of the upcoming one.")
@cadence_option("Which digest to preview.")
@click.option("--out", "out_dir", default="preview", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the HTML, text and side-by-side page.")
@now_option("Preview as of this moment.")
@click.option("--open", "open_browser", is_flag=True, help="Open the preview page in a browser.")
@pass_ctx
@handle_errors
def preview(ctx: Context, segment: str | None, issue_id: int | None, cadence: str, out_dir: Path,
            now_text: str | None, open_browser: bool) -> None:
    """Write each segment's HTML and text, and a side-by-side page. Sends nothing."""
    renders = preview_renders(ctx, issue_id=issue_id, segment=segment, cadence=cadence, now=parse_now(now_text))
    index = write_preview(out_dir, renders)
    for name, r in renders.items():
        click.echo(f"{name}: {out_dir / (name + '.html')} ({len(r.html.encode()) / 1024:.1f} KB), "
                   f"{len(r.summary_ids)} summaries")
    if not renders:
        click.echo("no segment has new summaries")
    click.echo(f"preview page: {index}")
    if open_browser:
        webbrowser.open(index.resolve().as_uri())
