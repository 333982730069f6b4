"""Headless Debian Chromium through Playwright. Missing Chromium is a failure, never a skip.

Also the rendered digests the render, browser and caniemail tests look at (`sample_renders`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("NEWSLETTER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic", "--dns-prefetch-disable", "--no-pings",
                 "--disable-domain-reliability"]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); "
                    "browser tests never skip")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def blocked_requests(page) -> list[str]:
    """Abort every request of the page (and its frames) that is not a file: URL; the list holds
    the URLs that were tried, so a test can assert it stays empty (nothing fetched from a network)."""
    attempted: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith("file:") or url.startswith("data:") or url == "about:blank":
            route.continue_()
        else:
            attempted.append(url)
            route.abort()

    page.context.route("**/*", guard)
    return attempted


#: A summary built to strain the layout: unbroken long URL and word, a list, a link, a DOI.
AWKWARD_SUMMARY = """---
title: A deliberately awkward summary with a very long unbroken word Pneumonoultramicroscopicsilicovolcanoconiosis
slug: awkward-layout-check
published: 2026-11-19
teaser: Checks that long words and URLs wrap on a phone instead of pushing the page sideways.
source_url: https://doi.org/10.5555/sample.2026.9999/an-extremely-long-path-segment-without-any-break-opportunity-at-all-0123456789
journal: Sample Journal of Layout Testing With A Rather Long Name
doi: 10.5555/sample.2026.9999
topics: [MS]
---
See https://example.org/a-very-long-url-inside-the-findings-paragraph-that-has-no-spaces-anywhere-0123456789abcdef
and [the trial registry](https://example.org/registry) for details. Results:

- first point, with **bold** words,
- second point.

## For people with MS
Nothing to change yet.

## Limitations
Made up for a test.
"""


@dataclass
class SampleRender:
    rendered: Any            # newsletter.render.Rendered
    summaries: list[dict]    # what it was rendered from, in order


@pytest.fixture
def sample_renders(loaded, tmp_path) -> dict[str, SampleRender]:
    """Each segment's upcoming weekly digest, as of the morning after the newest bundled sample,
    over the bundled samples plus AWKWARD_SUMMARY: more summaries than max_summaries, so both full
    cards and teaser links are there."""
    from newsletter.select import local_today, period_for, select_summaries
    from newsletter.sources.summaries import read_sources
    from newsletter.render import Renderer
    from tests.conftest import SAMPLE_NOW

    path = tmp_path / "awkward.md"
    path.write_text(AWKWARD_SUMMARY, encoding="utf-8")
    loaded.store.upsert_summaries(read_sources([str(path)]))
    config = loaded.config
    renderer = Renderer.from_config(config)
    period = period_for(SAMPLE_NOW, "weekly", config.timezone)
    out = {}
    for name, segment in loaded.segments.items():
        chosen = select_summaries(loaded.store, name, "weekly", local_today(SAMPLE_NOW, config.timezone),
                                  config.max_age_days, config.max_summaries * 3)
        assert len(chosen) > config.max_summaries, "the samples should overflow the card cap"
        rendered = renderer.render(issue_id=1, segment=segment, cadence="weekly", period_label=period.label,
                                   summaries=chosen)
        out[name] = SampleRender(rendered, chosen)
    return out
