"""Each segment's digest in headless Chromium (Debian's, through Playwright) at phone and desktop widths.

Checks what a reader meets: no sideways scrolling at 320 and 375 px, body text of at least 16 px with a
line height near 1.5, contrast of at least 4.5:1 in light and dark mode, underlined links, buttons at
least 44 px tall, and the footer (disclaimer, unsubscribe) reachable. Nothing is fetched from a network.
Screenshots go to test-artifacts/ (the `artifacts` fixture) for a person to look at.
"""

from __future__ import annotations

import pytest

from newsletter.cli import cli
from newsletter.preview import PREVIEW_VALUES
from tests.conftest import SAMPLE_NOW

pytestmark = pytest.mark.browser

WIDTHS = (320, 375, 640)
MIN_CONTRAST = 4.5

#: For every visible text node: the element holding it, its computed type and colours, and the
#: contrast against the first opaque background found up the tree (WCAG 2 relative luminance).
INSPECT_TEXT = r"""
() => {
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c && c.a > 0) return c;
    }
    return parse(getComputedStyle(document.documentElement).backgroundColor) || {r: 255, g: 255, b: 255, a: 1};
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const s = getComputedStyle(el);
    const fg = parse(s.color), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const link = el.closest('a');
    out.push({
      text: text.slice(0, 60), tag: el.tagName.toLowerCase(),
      fontSize: parseFloat(s.fontSize), lineHeight: parseFloat(s.lineHeight),
      contrast: (hi + 0.05) / (lo + 0.05), color: s.color, background: `rgb(${bg.r}, ${bg.g}, ${bg.b})`,
      link: !!link, button: !!el.closest('.button'),
      underlined: link ? getComputedStyle(link).textDecorationLine.includes('underline') : null,
    });
  }
  return out;
}
"""

LAYOUT = r"""
() => ({
  scrollWidth: document.scrollingElement.scrollWidth,
  innerWidth: window.innerWidth,
  buttons: [...document.querySelectorAll('.button a')].map((a) => a.getBoundingClientRect().height),
  cardWidths: [...document.querySelectorAll('div.card')].map((d) => d.getBoundingClientRect().width),
  h1: document.querySelectorAll('h1').length,
  lang: document.documentElement.lang,
})
"""


def check_text(items: list[dict], where: str) -> None:
    assert len(items) > 50, f"{where}: too little visible text found ({len(items)})"
    small = [(i["text"], i["fontSize"]) for i in items if i["fontSize"] < 16]
    assert not small, f"{where}: text under 16px: {small[:5]}"
    low = [(i["text"], i["color"], i["background"], round(i["contrast"], 2)) for i in items
           if i["contrast"] < MIN_CONTRAST]
    assert not low, f"{where}: contrast under {MIN_CONTRAST}:1: {low[:5]}"
    body = [i for i in items if i["tag"] in ("p", "li") and not i["button"]]
    assert body, f"{where}: no body paragraphs found"
    cramped = [(i["text"], i["lineHeight"] / i["fontSize"]) for i in body
               if not 1.4 <= i["lineHeight"] / i["fontSize"] <= 1.7]
    assert not cramped, f"{where}: body line height not near 1.5: {cramped[:5]}"
    bare = [i["text"] for i in items if i["link"] and not i["button"] and not i["underlined"]]
    assert not bare, f"{where}: links without underline: {bare[:5]}"


@pytest.mark.parametrize("segment", ["patients", "caregivers", "clinicians"])
def test_each_segment_reads_well_at_phone_and_desktop_widths(sample_renders, page, blocked_requests, artifacts,
                                                             tmp_path, segment):
    rendered = sample_renders[segment].rendered
    html, _ = rendered.personalise(PREVIEW_VALUES)
    path = tmp_path / f"{segment}.html"
    path.write_text(html, encoding="utf-8")
    disclaimer_start = "The summaries in this email explain published research in plain language."

    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in WIDTHS:
            where = f"{segment} at {width}px ({scheme})"
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(path.as_uri())
            layout = page.evaluate(LAYOUT)
            assert layout["scrollWidth"] <= layout["innerWidth"], f"{where}: scrolls sideways: {layout}"
            assert layout["h1"] == 1 and layout["lang"] == "en"
            assert layout["buttons"] and min(layout["buttons"]) >= 44, f"{where}: buttons {layout['buttons'][:3]}"
            assert max(layout["cardWidths"]) <= min(600, width), f"{where}: cards {layout['cardWidths'][:3]}"
            check_text(page.evaluate(INSPECT_TEXT), where)

            # The footer: reachable by scrolling, within the screen's width.
            for locator in (page.get_by_text(disclaimer_start), page.get_by_role("link", name="Unsubscribe"),
                            page.get_by_role("link", name="Manage your preferences")):
                assert locator.count() == 1, f"{where}: footer item missing"
                locator.scroll_into_view_if_needed()
                assert locator.is_visible()
                box = locator.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, f"{where}: footer off screen"
            unsubscribe = page.get_by_role("link", name="Unsubscribe").get_attribute("href")
            assert unsubscribe == "https://digest.example.org/u/preview-token"

            # For a person to look at: the footer as scrolled to, and whole pages at 375 and 640 px.
            name = f"render-{segment}-{width}-{scheme}"
            page.screenshot(path=str(artifacts / f"{name}-footer.png"))
            if scheme == "light" and width != 320:
                page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    assert blocked_requests == [], f"the email tried to fetch: {blocked_requests}"


def test_editors_preview_page_shows_both_widths(loaded, runner, page, blocked_requests, artifacts, tmp_path):
    out = tmp_path / "preview"
    result = runner.invoke(cli, ["--config", str(loaded.config.source), "preview", "--out", str(out),
                                 "--now", SAMPLE_NOW.isoformat()], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    segments = sorted(loaded.segments)
    for name in segments:
        assert (out / f"{name}.html").stat().st_size > 10_000 and (out / f"{name}.txt").stat().st_size > 1_000

    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto((out / "index.html").as_uri())
    frames = page.locator("iframe")
    assert frames.count() == 2 * len(segments)
    widths = sorted({round(frames.nth(i).bounding_box()["width"]) for i in range(frames.count())})
    assert [w - 2 for w in widths] == [375, 640]  # the iframes' 1px borders on both sides
    for i in range(frames.count()):
        frame = frames.nth(i).content_frame
        heading = frame.locator("h1")
        heading.wait_for()
        assert heading.inner_text() == "Weekly research digest"
        assert frame.get_by_role("link", name="Unsubscribe").count() == 1
    assert page.get_by_text("Plain-text part").count() == len(segments)
    page.screenshot(path=str(artifacts / "render-preview-page.png"))
    assert blocked_requests == [], f"the preview tried to fetch: {blocked_requests}"


def test_the_request_guard_sees_remote_fetches(page, blocked_requests, tmp_path):
    """Honesty check for the assertion above: a page asking for a remote image and stylesheet is caught
    (and the requests aborted, so nothing leaves the machine; .invalid names never resolve anyway)."""
    path = tmp_path / "remote.html"
    path.write_text('<!doctype html><html lang="en"><head><link rel="stylesheet" href="https://css.invalid/a.css">'
                    '</head><body><img alt="x" src="https://img.invalid/x.png"></body></html>', encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert sorted(blocked_requests) == ["https://css.invalid/a.css", "https://img.invalid/x.png"]
