"""What content can and cannot do to a digest: it can never spell a placeholder (so a reader's tokens
land only in the site's own links), and every word of it reaches both the HTML and the text part.
"""

from __future__ import annotations

import re

import lxml.html
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from newsletter.model import PLACEHOLDERS, PREFS_TOKEN, UNSUB_TOKEN, recipient_values
from newsletter.render.cards import NO_LIMITATIONS
from newsletter.render.content import HTML_ELEMENTS, html_to_text, is_markup, markdown_to_safe_html
from tests.test_render import SEGMENTS, SITE_URL, body_text, render, renderer, squash, summary

MARKDOWN_FIELDS = ("findings", "patients", "caregivers", "clinicians", "limitations")
PLAIN_FIELDS = ("title", "teaser", "journal")
UTOK, PTOK, NAME = "UtokSecret9Q", "PtokSecret9Q", "Namé9Q"


# -- placeholders ------------------------------------------------------------------------------------

def spellings(key: str) -> list[str]:
    """Ways content might spell the placeholder `-nl-<key>-` (or try to make one appear)."""
    p = f"-nl-{key}-"
    return [
        p, f"&#45;nl&#45;{key}&#45;", f"&#x2d;nl-{key}-", f"&#X2D;nl-{key}-", f"&#0045;&#110;&#108;-{key}-",
        f"&hyphen;nl-{key}-", f"&dash;nl-{key}-", f"&amp;#45;nl-{key}-", f"%2Dnl-{key}-", f"%2dnl%2D{key}%2D",
        f"\\2d nl-{key}-", f"\\2D nl\\2d {key}\\2d", f"\\{p}", f"-n<span></span>l-{key}-", f"-n<b></b>l-{key}-",
        f"-nl-nl-{key}-", f"--nl-{key}--", f"{p}{p}", f"[here](https://evil.example/{p})",
        f"[here](https://evil.example/&#45;nl-{key}-)", f"<https://evil.example/?t={p}>",
        f"[mail](mailto:evil@example.org?body={p})", f'<a href="mailto:evil@example.org?body=&#45;nl-{key}-">m</a>',
        f"<a href='https://evil.example/%2Dnl-{key}-'>x</a>", f'<span style="background:url(\\2d nl-{key}-)">s</span>',
        f"[ref]\n\n[ref]: https://evil.example/{p}", f"`{p}`", f"**{p}**", f"<mailto:evil@example.org?body={p}>",
    ]


SPELLINGS = sorted({s for key in ("utok", "ptok", "hgreet", "tgreet") for s in spellings(key)}
                   | {"{{ unsubscribe_url }}", "{{ preferences_url }}", "nlm" + "0" * 32})
words = st.from_regex(r"[a-z]{1,6}[0-9]{1,2}", fullmatch=True)
separators = st.sampled_from([" ", "", "\n", "\n\n", " & ", " < ", "="])
hostile = st.lists(st.tuples(st.one_of(words, st.sampled_from(SPELLINGS)), separators), max_size=6).map(
    lambda parts: "".join(piece + sep for piece, sep in parts))


def site_links_only(part: str, content: str, links: list[str]) -> None:
    """The reader's tokens appear in `content` only as the given site links, each exactly once."""
    for link in links:
        assert content.count(link) == 1, f"{part}: {link!r} appears {content.count(link)} times"
        content = content.replace(link, "")
    assert UTOK not in content and PTOK not in content, f"{part}: a token outside the site's own links"


@given(fields=st.fixed_dictionaries({name: hostile for name in (*MARKDOWN_FIELDS, "teaser", "journal", "doi")}),
       title=st.lists(st.one_of(words, st.sampled_from(SPELLINGS)), min_size=1, max_size=3).map(" ".join),
       source=st.sampled_from(SPELLINGS), segment=st.sampled_from(sorted(SEGMENTS)))
@example(fields={"findings": "[here](https://evil.example/&#45;nl-utok-) &#45;nl&#45;ptok&#45;"}, title="x1",
         source="-nl-ptok-", segment="clinicians")
def test_content_cannot_spell_a_placeholder(fields, title, source, segment):
    s = summary(1, **fields, title=title, source_url=f"https://evil.example/{source}", topics=[source])
    r = render(renderer(), [s], segment)
    # SendGrid fills every occurrence of a key, in the body and the subject: each one is the template's.
    for content in (r.html, r.text):
        assert content.count(UNSUB_TOKEN) == 1 and content.count(PREFS_TOKEN) == 1
    assert not any(key in r.subject or key in r.preheader for key in PLACEHOLDERS)
    left = set(re.findall(r"nlm[0-9a-f]{32}", r.html + r.text)) - {"nlm" + "0" * 32}  # that one is content's
    assert not left, "a render's marker was left behind"

    html, text = r.personalise(recipient_values(UTOK, PTOK, NAME))
    site_links_only("HTML source", html, [f'href="{SITE_URL}/u/{UTOK}"', f'href="{SITE_URL}/p/{PTOK}"'])
    site_links_only("text", text, [f"Unsubscribe: {SITE_URL}/u/{UTOK}\n",
                                   f"Manage your preferences: {SITE_URL}/p/{PTOK}\n"])
    # What a client decodes (entities, attributes) holds no token either, but in those two links.
    doc = lxml.html.document_fromstring(html)
    decoded = [v for el in doc.iter() if isinstance(el.tag, str) for v in (el.text, el.tail, *el.attrib.values())
               if v and (UTOK in v or PTOK in v)]
    assert sorted(decoded) == sorted([f"{SITE_URL}/u/{UTOK}", f"{SITE_URL}/p/{PTOK}"])
    assert body_text(html).count(NAME) == 1 and text.count(NAME) == 1  # the greeting, once


def test_neutralised_content_still_reads_the_same():
    """A browser shows what content wrote: the hyphen is `&#45;`, not a changed character."""
    r = render(renderer(), [summary(1, findings="Visit [the -nl-utok- page](https://x.example/-nl-utok-).")])
    doc = lxml.html.document_fromstring(r.html)
    assert "Visit the -nl-utok- page." in body_text(r.html)
    assert "https://x.example/-nl-utok-" in [a.get("href") for a in doc.iter("a")]
    assert "the -\u200cnl-utok- page (https://x.example/-\u200cnl-utok-)" in r.text


def test_each_render_uses_fresh_markers(monkeypatch):
    """Markers come from the secrets module per render, so no content written before can know one."""
    from newsletter.render import pipeline

    made = []
    real = pipeline.secrets.token_hex
    monkeypatch.setattr(pipeline.secrets, "token_hex", lambda n: made.append(real(n)) or made[-1])
    first, second = render(renderer(), [summary(1)]), render(renderer(), [summary(1)])
    assert len(made) == 2 * len(PLACEHOLDERS) and len(set(made)) == len(made)
    assert (first.html, first.text) == (second.html, second.text)  # and none of them is left in the result


# -- every word reaches both parts ---------------------------------------------------------------------

#: Words that are not HTML element names: `<b>` is markup by design, `<in the first week>` is text.
plain_words = st.from_regex(r"[a-z]{1,6}[0-9]{0,2}", fullmatch=True).filter(lambda w: w not in HTML_ELEMENTS)
symbols = st.sampled_from(["<", ">", "&", "=", "<=", ">=", "<>", "&&", "=<"])
gaps = st.sampled_from(["", " ", "\n", "\n\n"])
medical = st.lists(st.tuples(st.one_of(plain_words, symbols), gaps), max_size=10).map(
    lambda parts: "".join(piece + gap for piece, gap in parts))


def tokens(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9]+", text))


def shows(segment, field: str) -> bool:
    sections = segment.sections
    return field in ("title", "teaser", "limitations") or field in sections or (
        field == "journal" and "details" in sections)


@given(fields=st.fixed_dictionaries({name: medical for name in (*MARKDOWN_FIELDS, "teaser", "journal")}),
       title=st.tuples(st.from_regex(r"[a-z]{1,6}[0-9]{1,2}", fullmatch=True), medical).map(" ".join))
@example(fields={"findings": "EDSS <or=5.5 at baseline", "limitations": "<in the first week> x&y=z <LLN"},
         title="a1 <LLN")
def test_every_word_reaches_both_parts(fields, title):
    s = summary(1, **fields, title=title)
    for name, segment in SEGMENTS.items():
        r = render(renderer(), [s], segment)
        doc = lxml.html.document_fromstring(r.html)
        html_words, text_words = tokens(" ".join(doc.body.itertext())), tokens(r.text)
        for field in (*MARKDOWN_FIELDS, *PLAIN_FIELDS):
            if not shows(segment, field):
                continue
            source = s[field] if field != "title" else title
            for part, seen in (("HTML", html_words), ("text", text_words)):
                lost = tokens(source) - seen
                assert not lost, f"{name}/{field}: {sorted(lost)} missing from the {part} part of {source!r}"


MEDICAL_TEXT = ["EDSS <or=5.5 at baseline", "ALC <LLN in 3 of 40", "p<0.05", "<10 mg/kg",
                "relapses <in the first week> of dosing", ">2 relapses in the past year", ">=3 lesions", "a < b > c",
                "R&D and AT&T", "x <= y => z"]


@pytest.mark.parametrize("field", ["findings", "limitations", "title", "teaser"])
def test_medical_notation_is_shown_literally(field):
    joined = "\n\n".join(MEDICAL_TEXT)
    r = render(renderer(), [summary(1, **{field: joined})], "patients")
    visible, text = body_text(r.html), squash(r.text)
    for phrase in MEDICAL_TEXT:
        assert phrase in visible and phrase in text, f"{field}: {phrase!r} not shown literally"


def test_escaped_markup_from_a_feed_is_shown_as_what_it_escapes():
    r = render(renderer(), [summary(1, findings="Dose &lt;in the first week&gt; was &lt;10 mg/kg &amp; safe.")])
    assert "Dose <in the first week> was <10 mg/kg & safe." in body_text(r.html)
    assert "Dose <in the first week> was <10 mg/kg & safe." in r.text


@pytest.mark.parametrize("raw,markup", [
    ("<b>", True), ("</em>", True), ("<br/>", True), ('<a href="https://x.example">', True),
    ("<script async src=x>", True), ("<img src=x onerror=alert(1)>", True), ("<!-- note -->", True),
    ("<in the first week>", False), ("<or=5.5 at baseline>", False), ("<LLN>", False), ("<a few patients>", False),
    ("<b cells>", False), ("</b x>", False), ("<x-custom>", False),
])
def test_what_counts_as_markup(raw, markup):
    assert is_markup(raw) is markup


def test_the_text_twin_walks_the_sanitised_tree():
    md = ("Intro line one\nline two  \nafter a break.\n\n- first with **bold**\n- second\n\n"
          "Then:\n\n1. one\n2. two\n\n> quoted words\n\n"
          "See [the registry](https://example.org/r), <https://example.org/a> and [mail us](mailto:team@example.org).")
    text = html_to_text(markdown_to_safe_html(md))
    assert text == ("Intro line one line two\nafter a break.\n\n- first with bold\n- second\n\n"
                    "Then:\n\n1. one\n2. two\n\n> quoted words\n\n"
                    "See the registry (https://example.org/r), https://example.org/a and "
                    "mail us (mailto:team@example.org).")
    assert html_to_text(markdown_to_safe_html("<script>alert(1)</script>Kept.")) == "Kept."
    # Raw block HTML is sanitised like inline HTML, without leaving empty paragraphs behind.
    html = markdown_to_safe_html("<div>\n\nIn a div.\n\n</div>\n\n<p>Own paragraph</p>")
    assert str(html).split() == ["<p>In", "a", "div.</p>", "<p>Own", "paragraph</p>"]
    assert html_to_text(html) == "In a div.\n\nOwn paragraph"


# -- teaser entries keep their limitations -------------------------------------------------------------

def test_teaser_entries_keep_a_limitations_line():
    summaries = [summary(1), summary(2, limitations="Only twelve mice, e.g. no humans. Short follow-up <in weeks>."),
                 summary(3, limitations="")]
    r = render(renderer(max_summaries=1), summaries)
    assert r.full_cards == 1
    visible, text = body_text(r.html), r.text
    more_html, more_text = visible[visible.index("More new summaries"):], text[text.index("More new summaries"):]
    for more in (more_html, more_text):
        assert "Limitations: Only twelve mice, e.g. no humans." in more and "Short follow-up" not in more
        assert f"Limitations: {NO_LIMITATIONS}" in more


def test_teaser_entries_past_the_size_cap_keep_a_limitations_line():
    summaries = [summary(i) for i in range(1, 31)]
    r = render(renderer(), summaries)
    teasers = len(summaries) - r.full_cards
    assert teasers > 0
    first = summaries[0]["limitations"].split(". ")[0] + "."
    assert r.text.count(f"  Limitations: {first}\n") == teasers
    assert body_text(r.html).count(f"Limitations: {first}") == teasers
