"""The render stage (newsletter/render/ and templates/): content per segment, the disclaimer footer,
escaping, the size cap, no network, and per-recipient substitution.

Layout in a real browser is tested in test_render_browser.py; email-client support in test_caniemail.py.
"""

from __future__ import annotations

import html as html_module
import re
import shutil
import socket
from pathlib import Path

import lxml.html
import pytest
from hypothesis import given, strategies as st

from newsletter.cli import cli
from newsletter.model import GREETING_HTML, GREETING_TEXT, PLACEHOLDERS, PREFS_TOKEN, UNSUB_TOKEN, greeting
from newsletter.render import RenderError, Renderer, bundled_templates_dir, date_label
from newsletter.render import pipeline as render_mod
from newsletter.segments import Segment, load_segments
from tests.conftest import POSTAL, SAMPLE_NOW, load_samples

SITE_URL = "https://digest.example.org"
SEGMENTS = load_segments()

#: Section headings each bundled segment's full cards show, in order (subscribers/segments.toml).
EXPECTED_HEADINGS = {
    "patients": ["What was found", "What it could mean for you", "Limitations"],
    "caregivers": ["What it could mean for you and the person you support", "What was found", "Limitations"],
    "clinicians": ["What was found", "Study details", "Limitations", "For your practice"],
}
LONG = ("Researchers followed adults with multiple sclerosis for several years and compared walking, thinking "
        "and fatigue between groups that received different kinds of support at home and in clinic. ") * 6


# -- helpers -------------------------------------------------------------------

def renderer(**overrides) -> Renderer:
    settings = {"site_name": "MS Research Digest", "site_url": SITE_URL, "postal_address": POSTAL, **overrides}
    return Renderer(**settings)


def summary(i: int, **fields) -> dict:
    base = {"id": i, "slug": f"study-{i}", "title": f"Study {i}: what a trial found in people with MS",
            "published": f"2026-11-{(i % 28) + 1:02d}", "teaser": f"Teaser {i}: what was found, in plain words.",
            "findings": LONG, "patients": LONG, "caregivers": LONG, "clinicians": LONG, "limitations": LONG,
            "source_url": f"https://doi.org/10.5555/sample.{i}", "journal": "Sample Journal",
            "doi": f"10.5555/sample.{i}", "topics": ["MS"]}
    return {**base, **fields}


def render(r: Renderer, summaries: list[dict], segment: str | Segment = "patients", **kwargs):
    seg = SEGMENTS[segment] if isinstance(segment, str) else segment
    return r.render(issue_id=7, segment=seg, cadence=kwargs.pop("cadence", "weekly"),
                    period_label="Week of 16 November 2026", summaries=summaries, **kwargs)


def body_text(html: str) -> str:
    """What a reader sees in the HTML part, whitespace collapsed (the hidden preheader included)."""
    return " ".join(lxml.html.document_fromstring(html).body.text_content().split())


def squash(text: str) -> str:
    return " ".join(text.split())


def hrefs(html: str) -> list[str]:
    return [a.get("href") for a in lxml.html.document_fromstring(html).iter("a")]


def disclaimer_paragraphs() -> list[str]:
    source = (bundled_templates_dir() / "disclaimer.txt").read_text(encoding="utf-8")
    return [squash(p) for p in source.split("\n\n") if p.strip()]


def override_dir(tmp_path: Path, **files: str) -> Path:
    """A site templates_dir holding the given files (name with '.' written as '_': disclaimer_txt)."""
    folder = tmp_path / "site-templates"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        stem, ext = name.rsplit("_", 1)
        (folder / f"{stem}.{ext}").write_text(content, encoding="utf-8")
    return folder


# -- every segment: footer, links, cards ------------------------------------------

@pytest.mark.parametrize("segment", sorted(SEGMENTS))
def test_every_part_carries_footer_links_and_each_cards_source_and_date(sample_renders, segment):
    sample = sample_renders[segment]
    r, summaries = sample.rendered, sample.summaries
    html_text, text = body_text(r.html), squash(r.text)
    links = hrefs(r.html)
    assert 0 < r.full_cards < len(summaries), "the samples should give both full cards and teaser links"

    for part, content in (("html", html_text), ("text", text)):
        for paragraph in disclaimer_paragraphs():
            assert paragraph in content, f"{segment} {part}: disclaimer paragraph missing: {paragraph[:40]}"
        assert POSTAL in content, f"{segment} {part}: postal address missing"
        seg = SEGMENTS[segment]
        assert f"You receive this weekly digest, written for {seg.audience}" in content
        # The footer comes last: after every card's title, and the postal address is the very end.
        footer_at = content.index(disclaimer_paragraphs()[0])
        for s in summaries:
            assert content.rindex(s["title"]) < footer_at, f"{segment} {part}: {s['title']!r} after the footer"
        assert content.rstrip().endswith(POSTAL)

    assert f"{SITE_URL}/u/{UNSUB_TOKEN}" in links and f"{SITE_URL}/p/{PREFS_TOKEN}" in links
    assert f"Unsubscribe: {SITE_URL}/u/{UNSUB_TOKEN}" in r.text
    assert f"Manage your preferences: {SITE_URL}/p/{PREFS_TOKEN}" in r.text

    for s in summaries:
        label = date_label(s["published"])
        assert s["source_url"] in links, f"{segment}: no link to the source of {s['slug']}"
        assert s["source_url"] in r.text
        assert f"{SITE_URL}/summaries/{s['slug']}" in links
        assert f"Read the full summary: {SITE_URL}/summaries/{s['slug']}" in r.text
        for part, content in (("html", html_text), ("text", text)):
            title_at = content.index(s["title"])
            assert label in content[title_at:title_at + len(s["title"]) + 200], f"{segment} {part}: no date near title"


@pytest.mark.parametrize("segment", sorted(SEGMENTS))
def test_full_cards_show_the_segments_sections_in_its_order(sample_renders, segment):
    sample = sample_renders[segment]
    r, summaries = sample.rendered, sample.summaries
    doc = lxml.html.document_fromstring(r.html)
    checked = 0
    for s in summaries[:r.full_cards]:
        expected = [h for h in EXPECTED_HEADINGS[segment]
                    if h in ("Study details", "Limitations") or s[_section_for(segment, h)]]
        # HTML: the h3 headings between this card's h2 and the next h2.
        h2 = next(h for h in doc.iter("h2") if h.text_content().strip().endswith(s["title"]))
        headings = []
        for el in h2.itersiblings():
            if el.tag == "h2":
                break
            if el.tag == "h3":
                headings.append(el.text_content().strip())
        assert headings == expected, f"{segment}/{s['slug']}: HTML sections {headings}"
        # Text: the same headings, in the same order, inside this card's block.
        start = r.text.index(s["title"])
        block = r.text[start:r.text.index(f"Read the full summary: {SITE_URL}/summaries/{s['slug']}", start)]
        positions = [block.index(f"\n{h}\n{'-' * len(h)}\n") for h in expected]
        assert positions == sorted(positions), f"{segment}/{s['slug']}: text sections out of order"
        assert "Limitations" in headings
        checked += 1
    assert checked == r.full_cards


def _section_for(segment: str, heading: str) -> str:
    return {"What was found": "findings", "What it could mean for you": "patients",
            "What it could mean for you and the person you support": "caregivers",
            "For your practice": "clinicians"}[heading]


def test_clinicians_get_study_details_and_the_source_up_front(sample_renders):
    sample = sample_renders["clinicians"]
    s = sample.summaries[0]
    start = sample.rendered.text.index(s["title"])
    block = sample.rendered.text[start:]
    details = block.index("Study details")
    assert block.index(f"Original study: {s['source_url']}") < block.index("\nLimitations\n")
    assert f"Journal: {s['journal']}" in block[details:] and f"DOI: {s['doi']}" in block[details:]
    assert f"https://doi.org/{s['doi']}" in hrefs(sample.rendered.html)


def test_limitations_are_never_dropped():
    brief = Segment("brief", "Brief readers", "brief readers", "Short.", ("findings",))
    r = render(renderer(), [summary(1, limitations=""), summary(2, limitations="Only twelve mice.")], brief)
    html_text, text = body_text(r.html), r.text
    for content in (html_text, text):
        assert content.count("Limitations") == 2
        assert "did not state its limitations" in content
        assert "Only twelve mice." in content


# -- subject and preheader ------------------------------------------------------------

def test_subject_and_preheader_come_from_the_issue():
    summaries = [summary(1, title="Walking tests on phones", teaser="Phones noticed slowing first."), summary(2)]
    r = render(renderer(), summaries)
    assert r.subject == "2 new research summaries: Walking tests on phones"
    assert r.preheader == "Phones noticed slowing first."
    doc = lxml.html.document_fromstring(r.html)
    assert doc.find(".//title").text == r.subject
    hidden = doc.body[0]
    assert "display:none" in hidden.get("style").replace(" ", "")
    assert hidden.text_content().startswith(r.preheader + "\u034f")
    assert render(renderer(), summaries[:1], test=True).subject == "[TEST] 1 new research summary: Walking tests on phones"
    assert render(renderer(), [summary(1, title="Revised", is_update=1), summary(2)]).subject == \
        "2 new and updated research summaries: Revised"
    long = render(renderer(), [summary(1, title="A very long title " * 10, teaser="word " * 80)])
    assert len(long.subject) <= 90 and long.subject.endswith("\u2026")
    assert len(long.preheader) <= 140 and long.preheader.endswith("\u2026")


# -- escaping ---------------------------------------------------------------------------

HOSTILE = {
    "title": "<script>alert('t')</script> Title {{ 7*7 }}",
    "teaser": "Teaser <img src=x onerror=alert('teaser')> {{ config }}",
    "findings": ("Before <script>alert('f')</script> after.\n\n<img src=x onerror=\"alert('f2')\">\n\n"
                 "Stray {{ 7*7 }} and {% raw %} and [bad](javascript:alert(1)) and "
                 "<a href=\"https://x.example\" onclick=\"steal()\">click</a>."),
    "patients": "<iframe src=\"https://evil.example\"></iframe><style>body{display:none}</style>Ok.",
    "limitations": "Token -nl-utok- and -nl-ptok- must stay literal.",
    "journal": "<b>Journal</b>",
}


@pytest.mark.parametrize("segment", sorted(SEGMENTS))
def test_markup_in_a_summary_renders_escaped(segment):
    r = render(renderer(), [summary(1, **HOSTILE)], segment)
    doc = lxml.html.document_fromstring(r.html)
    assert doc.findall(".//script") == [] and doc.findall(".//img") == [] and doc.findall(".//iframe") == []
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        assert not [a for a in el.attrib if a.lower().startswith("on")], f"event handler on <{el.tag}>"
        assert not el.get("href", "").lower().startswith("javascript"), "javascript: link"
    assert "<script" not in r.html.lower() and "<img" not in r.html.lower()
    assert "body{display:none}" not in r.html and "body{display:none}" not in r.text
    # Title and teaser are plain-text fields: shown literally, as escaped text, never as markup.
    visible = body_text(r.html)
    assert "<script>alert('t')</script> Title {{ 7*7 }}" in visible
    assert "Teaser <img src=x onerror=alert('teaser')> {{ config }}" in visible
    assert "&lt;script&gt;" in r.html and "&lt;img src=x onerror" in r.html
    assert "{{ 7*7 }}" in r.text and "49" not in visible
    # Markdown fields lose raw HTML (and what a script or style holds) in both parts.
    for gone in ("alert('f')", "alert('f2')", "<iframe", "steal()", "evil.example"):
        assert gone not in visible and gone not in r.text and gone not in r.html
    assert "Stray {{ 7*7 }} and {% raw %}" in visible and "Stray {{ 7*7 }} and {% raw %}" in r.text
    # Placeholders spelled by content are neutralised: a recipient's token never lands in summary text.
    html, text = r.personalise({UNSUB_TOKEN: "U-VALUE", PREFS_TOKEN: "P-VALUE", GREETING_HTML: "", GREETING_TEXT: ""})
    assert html.count("U-VALUE") == r.html.count(UNSUB_TOKEN) == 1
    assert text.count("U-VALUE") == r.text.count(UNSUB_TOKEN) == 1
    assert "must stay literal" in text


def test_greeting_is_escaped_for_html():
    html, text = greeting("  Ann <b>&</b>  ")
    assert html == "Hello Ann &lt;b&gt;&amp;&lt;/b&gt;," and text == "Hello Ann <b>&</b>,"
    assert greeting("") == ("Hello,", "Hello,")


@given(st.text(alphabet=st.sampled_from("-nlutk <>&\"' \u00e9\t")) | st.text())
def test_greeting_skips_the_placeholder_pattern_only_where_it_cannot_match(name):
    """The fast path gives what escaping and neutralising the whole greeting gives: no placeholder left."""
    from newsletter.model import neutralise_html, neutralise_text
    words = " ".join(name.split())
    reference = f"Hello {words}," if words else "Hello,"
    html, text = greeting(name)
    assert (html, text) == (neutralise_html(html_module.escape(reference)), neutralise_text(reference))
    assert not any(key in html or key in text for key in PLACEHOLDERS)


# -- the disclaimer: a site may edit it, never remove it ---------------------------------

@pytest.mark.parametrize("content", ["", "  \n\n \t\n"])
def test_empty_disclaimer_fails(make_site, tmp_path, content):
    folder = override_dir(tmp_path, disclaimer_txt=content)
    ctx = make_site(templates_dir=str(folder))
    with pytest.raises(RenderError, match="empty: every digest must carry the disclaimer"):
        render(Renderer.from_config(ctx.config), [summary(1)])


def test_empty_disclaimer_stops_the_preview_command(make_site, tmp_path, runner):
    ctx = make_site(templates_dir=str(override_dir(tmp_path, disclaimer_txt="\n")))
    load_samples(ctx)
    out = tmp_path / "preview"
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "preview", "--out", str(out),
                                 "--now", SAMPLE_NOW.isoformat()])
    assert result.exit_code == 1
    assert "disclaimer" in result.output
    assert not list(out.glob("*.html"))


def test_missing_disclaimer_fails(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    shutil.copytree(bundled_templates_dir(), bundled)
    (bundled / "disclaimer.txt").unlink()
    monkeypatch.setattr(render_mod, "bundled_templates_dir", lambda: bundled)
    with pytest.raises(RenderError, match="disclaimer.txt: missing"):
        render(renderer(), [summary(1)])


def test_site_disclaimer_replaces_the_default(make_site, tmp_path):
    own = "Our own words: not advice.\n\nAsk your neurologist."
    ctx = make_site(templates_dir=str(override_dir(tmp_path, disclaimer_txt=own)))
    r = render(Renderer.from_config(ctx.config), [summary(1)])
    for content in (body_text(r.html), squash(r.text)):
        assert "Our own words: not advice." in content and "Ask your neurologist." in content
        assert disclaimer_paragraphs()[0] not in content


def _bundled(name: str) -> str:
    return (bundled_templates_dir() / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name,content,message", [
    ("_footer_mjml", "<mj-section><mj-column><mj-text><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>"
                     "</mj-text></mj-column></mj-section>", "HTML part: the disclaimer is missing"),
    ("digest_txt", "{% for card in cards %}{{ card.title }}\n{% endfor %}Unsubscribe: {{ unsubscribe_url }}\n",
     "text part: the disclaimer is missing"),
    ("base_mjml", None, "appears after the disclaimer"),
])
def test_template_overrides_cannot_drop_or_move_the_footer(tmp_path, name, content, message):
    if content is None:  # the footer moved above the cards
        base = _bundled("base.mjml")
        footer = '{% include "_footer.mjml" %}\n'
        content = base.replace(footer, "").replace('{% include "_header.mjml" %}\n',
                                                    '{% include "_header.mjml" %}\n' + footer)
        assert content != base
    r = renderer(templates_dir=override_dir(tmp_path, **{name: content}))
    with pytest.raises(RenderError, match=message):
        render(r, [summary(1)])


def test_comments_in_templates_are_stripped(tmp_path):
    header = _bundled("_header.mjml").replace("<h1>", "<!-- editor note: do not ship --><h1>")
    r = render(renderer(templates_dir=override_dir(tmp_path, _header_mjml=header)), [summary(1)])
    assert "editor note" not in r.html
    comments = re.findall(r"<!--(.*?)-->", r.html, re.S)
    assert comments, "MJML's Outlook conditionals are expected"
    assert all(c.startswith("[if") or c.startswith("<![endif]") for c in comments), comments


# -- size ---------------------------------------------------------------------------------

@pytest.mark.parametrize("segment", sorted(SEGMENTS))
def test_size_cap_holds_for_a_30_summary_issue(segment):
    summaries = [summary(i) for i in range(1, 31)]
    uncapped = render(renderer(max_html_bytes=10_000_000), summaries, segment)
    assert uncapped.full_cards == 10 and len(uncapped.html.encode()) > 90_000, "the fixture must need the cap"

    r = renderer()
    assert r.max_html_bytes == 90_000
    out = render(r, summaries, segment)
    assert len(out.html.encode()) <= 90_000
    assert 0 < out.full_cards < 10
    links, visible, text = hrefs(out.html), body_text(out.html), out.text
    for s in summaries:  # the rest fell back to teasers with links, nothing was dropped
        assert s["title"] in visible and s["title"] in text
        assert s["source_url"] in links and f"{SITE_URL}/summaries/{s['slug']}" in links
    assert "More new summaries" in visible and visible.rstrip().endswith(POSTAL)
    # The copy each recipient gets, with long tokens and a long name, stays under the cap too.
    values = {UNSUB_TOKEN: "u" * 150, PREFS_TOKEN: "p" * 150, GREETING_HTML: "Hello " + "n" * 150 + ",",
              GREETING_TEXT: "Hello " + "n" * 150 + ","}
    assert len(out.personalise(values)[0].encode()) <= 90_000


def test_card_cap_moves_the_rest_to_teasers():
    out = render(renderer(max_summaries=3), [summary(i) for i in range(1, 6)])
    assert out.full_cards == 3
    assert "More new summaries" in out.text and "More new summaries" in body_text(out.html)
    assert out.summary_ids == [1, 2, 3, 4, 5]


def test_an_impossible_size_is_an_error_never_a_silent_clip():
    with pytest.raises(RenderError, match=r"over the 20000-byte limit \(max_html_bytes\)"):
        render(renderer(max_html_bytes=20_000), [summary(i) for i in range(1, 31)])


# -- no network ------------------------------------------------------------------------------

class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise NetworkUsed(f"socket use during render: {args[:2]!r}")

    for target, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket.socket, "sendto"),
                         (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(target, name, refuse)
    with pytest.raises(NetworkUsed):  # the guard itself works
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as sock, pytest.raises(NetworkUsed):
        sock.connect(("127.0.0.1", 9))


def test_render_opens_no_socket(loaded, no_network):
    from newsletter.select import select_summaries
    chosen = select_summaries(loaded.store, "patients", "weekly", SAMPLE_NOW.date(), 45, 30)
    chosen[0] = {**chosen[0], "findings": "![remote](https://images.example/x.png) <link rel=stylesheet "
                                          "href=https://css.example/x.css> text"}
    for name, segment in loaded.segments.items():
        r = Renderer.from_config(loaded.config).render(issue_id=1, segment=segment, cadence="weekly",
                                                       period_label="Week", summaries=chosen)
        r.personalise({key: "v" for key in PLACEHOLDERS})
        low = r.html.lower()
        assert "<img" not in low and "<link" not in low and "@import" not in low and "url(" not in low
        assert "fonts.googleapis" not in low


# -- per recipient: substitution only ----------------------------------------------------------

def test_personalise_is_plain_substitution_and_render_compiles_once(monkeypatch):
    r = renderer()
    out = render(r, [summary(1), summary(2)])
    assert r.stats.counts["mjml"] == 1 and r.stats.counts["premailer"] == 1
    assert out.html.count(GREETING_HTML) == 1 and out.text.count(GREETING_TEXT) == 1
    before_html, before_text = out.html, out.text

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled during personalise")

    monkeypatch.setattr(render_mod.mjml, "mjml2html", no_compile)
    monkeypatch.setattr(render_mod.premailer, "Premailer", no_compile)
    for n in range(50):
        values = {UNSUB_TOKEN: f"unsub{n}x", PREFS_TOKEN: f"prefs{n}x",
                  GREETING_HTML: f"Hello R&amp;D {n},", GREETING_TEXT: f"Hello R&D {n},"}
        html, text = out.personalise(values)
        for key in PLACEHOLDERS:
            assert key not in html and key not in text
        assert f'href="{SITE_URL}/u/unsub{n}x"' in html and f'href="{SITE_URL}/p/prefs{n}x"' in html
        assert f"Unsubscribe: {SITE_URL}/u/unsub{n}x" in text
        assert f"Hello R&amp;D {n}," in html and f"Hello R&D {n}," in text
        expected_html, expected_text = before_html, before_text
        for key, value in values.items():
            expected_html, expected_text = expected_html.replace(key, value), expected_text.replace(key, value)
        assert (html, text) == (expected_html, expected_text)
    assert (out.html, out.text) == (before_html, before_text)
    assert r.stats.counts["mjml"] == 1 and r.stats.counts["premailer"] == 1 and r.stats.counts["render"] == 1


# -- accessible markup ---------------------------------------------------------------------------

@pytest.mark.parametrize("segment", sorted(SEGMENTS))
def test_accessible_markup(sample_renders, segment):
    html = sample_renders[segment].rendered.html
    doc = lxml.html.document_fromstring(html)
    assert doc.get("lang") == "en"
    assert len(doc.findall(".//h1")) == 1
    assert doc.find(".//title").text.strip()
    tables = doc.findall(".//table")
    assert tables and all(t.get("role") == "presentation" for t in tables)
    assert all(img.get("alt") is not None for img in doc.iter("img"))
    for a in doc.iter("a"):
        assert a.text_content().strip(), f"link without text: {a.get('href')}"
        assert a.get("href", "").startswith("https://"), f"not an absolute https link: {a.get('href')}"
    metas = {m.get("name"): m.get("content") for m in doc.iter("meta") if m.get("name")}
    assert metas.get("color-scheme") == "light dark"
    assert "prefers-color-scheme: dark" in html


# -- the plain-text part -----------------------------------------------------------------------------

def test_plain_text_reads_well(sample_renders):
    r = sample_renders["patients"].rendered
    awkward = next(s for s in sample_renders["patients"].summaries if s["slug"] == "awkward-layout-check")
    block = r.text[r.text.index(awkward["title"]):]
    assert f"\n\n{awkward['teaser']}\n\n" in block, "the teaser stands alone, with blank lines around it"
    assert "the trial registry (https://example.org/registry)" in block
    assert "\n- first point, with bold words,\n- second point.\n" in block
    assert "**" not in r.text
    assert "\n\n\n\n" not in r.text
