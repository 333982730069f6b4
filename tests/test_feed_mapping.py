"""Feeds mapped: sections, DOI and journal, topics through the topic list, clean teasers and titles, every word kept."""

from __future__ import annotations

import html
import re
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import assume, given, strategies as st

from newsletter.render.content import html_to_text, markdown_to_safe_html
from newsletter.sources.feed_items import clean_link
from newsletter.sources.summaries import parse_feed, read_source
from newsletter.topics import TopicError, load_topics

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
SECTIONS = ("findings", "patients", "caregivers", "clinicians", "limitations")


def read(name: str, **kw):
    return parse_feed((FEEDS / name).read_bytes(), name, **kw)


def atom(entry: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
            f"<id>urn:t</id><updated>2026-11-18T00:00:00Z</updated><entry><id>urn:e</id>"
            f"<updated>2026-11-18T00:00:00Z</updated>{entry}</entry></feed>").encode()


def rss(item: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>t</title>'
            f"<link>https://x.example.org/</link><description>d</description><item>{item}"
            "<pubDate>Wed, 18 Nov 2026 09:00:00 +0000</pubDate></item></channel></rss>").encode()


# -- sections ----------------------------------------------------------------------------

def test_wordpress_headings_fill_each_segments_field():
    item = read("wordpress.xml").records[0]
    assert item["findings"].startswith("In a trial of 120 adults with NMOSD, **rituximab** cut the risk")
    assert "(p<0.05)" in item["findings"]
    assert "\n\n- Attacks over two years: 8 of 60 on rituximab, 21 of 60 on azathioprine\n" \
           "- Infections were about as common in both groups" in item["findings"]
    assert item["patients"].startswith("NMOSD is not MS")
    assert item["caregivers"].startswith("Rituximab is an infusion every six months")
    assert "375 mg/m\u00b2" in item["clinicians"] and "weighing <40 kg" in item["clinicians"]
    assert item["limitations"] == "Neither doctors nor patients were blinded, and follow-up was two years."
    for field in ("patients", "caregivers", "clinicians", "limitations"):
        assert item[field] not in item["findings"]
    rendered = markdown_to_safe_html(item["findings"])
    assert "<ul>" in rendered and rendered.count("<li>") == 2 and "p&lt;0.05" in rendered


def test_a_bold_paragraph_heading_counts_as_a_heading():
    walking = read("wordpress.xml").records[1]
    assert walking["limitations"] == "Only 90 people took part, all with smartphones."
    assert "Limitations" not in walking["findings"]


def test_markdown_sections_written_in_a_feed_map_the_same_way():
    body = ("Adults who slept longer had less fatigue.\n\n## For caregivers\n\nA regular bedtime helps.\n\n"
            "## Limitations\n\nSelf-reported sleep, p<0.05.")
    [item] = parse_feed(atom(f"<title>Sleep</title><content type=\"text\">{escape(body)}</content>"), "feed").records
    assert item["findings"] == "Adults who slept longer had less fatigue."
    assert item["caregivers"] == "A regular bedtime helps."
    assert item["limitations"] == "Self-reported sleep, p<0.05."


def test_an_unknown_html_heading_stays_as_bold_text_in_its_section():
    content = "<p>Found.</p><h3>Why it matters</h3><p>More.</p>"
    [item] = parse_feed(rss(f"<title>T</title><content:encoded>{escape(content)}</content:encoded>"), "f").records
    assert item["findings"] == "Found.\n\n**Why it matters**\n\nMore."


# -- DOI and journal ------------------------------------------------------------------------

def test_pubmed_identifier_source_and_citation_lines():
    gfap, mogad = read("pubmed.xml").records
    assert gfap["doi"] == "10.1016/j.msard.2026.105987"
    assert gfap["source_url"] == "https://doi.org/10.1016/j.msard.2026.105987"
    assert gfap["journal"] == "Multiple sclerosis and related disorders"
    assert gfap["url"] == "https://pubmed.ncbi.nlm.nih.gov/41234567/"  # tracking parameters dropped
    assert gfap["guid"] == "pubmed:41234567"
    assert "Online ahead of print" not in gfap["findings"] and "PMID" not in gfap["findings"]
    assert "p < 0.001" in gfap["findings"]
    assert gfap["title"] == "Serum glial fibrillary acidic protein & attack risk in aquaporin-4 antibody-positive NMOSD"
    assert mogad["doi"] == "10.1212/WNL.0000000000209876" and mogad["journal"] == "Neurology"


def test_medrxiv_prism_doi_and_publication_name():
    [item] = read("medrxiv.atom").records
    assert (item["doi"], item["journal"]) == ("10.1101/2026.11.15.26301234", "medRxiv")
    assert item["source_url"] == "https://doi.org/10.1101/2026.11.15.26301234"
    assert item["url"] == "https://www.medrxiv.org/content/10.1101/2026.11.15.26301234v1"


def test_a_doi_org_link_in_the_body_gives_doi_and_journal():
    item = read("wordpress.xml").records[0]
    assert item["doi"] == "10.5555/nmosd.2026.0311"
    assert item["source_url"] == "https://doi.org/10.5555/nmosd.2026.0311"
    assert item["journal"] == "Sample Journal of Neuroimmunology"
    assert "Source:" not in item["limitations"]  # the citation line became fields, not text


@pytest.mark.parametrize("identifier", ["doi:10.1177/1352458526", "info:doi/10.1177/1352458526",
                                        "https://doi.org/10.1177/1352458526"])
def test_dc_identifier_prefixes(identifier):
    feed = rss(f"<title>T</title><description>x</description>"
               f'<dc:identifier xmlns:dc="http://purl.org/dc/elements/1.1/">{identifier}</dc:identifier>')
    [item] = parse_feed(feed, "f").records
    assert item["doi"] == "10.1177/1352458526"


def test_links_lose_tracking_parameters_only():
    assert clean_link("https://a.example.org/p?id=3&utm_source=rss&utm_medium=rss") == "https://a.example.org/p?id=3"
    assert clean_link("https://a.example.org/p") == "https://a.example.org/p"


# -- topics ------------------------------------------------------------------------------

def test_categories_become_topics_only_through_the_list():
    read_result = read("wordpress.xml")
    assert [r["topics"] for r in read_result.records] == [["NMOSD"], ["MS"]]
    assert read_result.ignored == ["Uncategorized", "Treatments"]
    medrxiv = read("medrxiv.atom")
    assert medrxiv.records[0]["topics"] == ["MS"] and medrxiv.ignored == ["Neurology"]


def test_a_feeds_implied_topics_come_first(tmp_path):
    [gfap, _] = read("pubmed.xml", implied=("NMOSD",)).records
    assert gfap["topics"] == ["NMOSD"]


def test_a_sites_own_topic_list_with_aliases(tmp_path):
    path = tmp_path / "topics.toml"
    path.write_text('[NMOSD]\naliases = ["Neuromyelitis optica"]\n\n[Treatments]\n')
    result = read("wordpress.xml", topics=load_topics(path))
    assert result.records[0]["topics"] == ["NMOSD", "Treatments"]
    assert result.ignored == ["Uncategorized", "Multiple Sclerosis"]


def test_a_topic_list_naming_one_alias_twice_is_refused(tmp_path):
    path = tmp_path / "topics.toml"
    path.write_text('[NMOSD]\naliases = ["NMO"]\n[MOGAD]\naliases = ["nmo"]\n')
    with pytest.raises(TopicError, match=r"topics.toml: \[MOGAD\]: 'nmo' already names topic 'NMOSD'"):
        load_topics(path)


def test_summaries_import_of_a_feed_file_maps_categories_too():
    records = read_source(str(FEEDS / "wordpress.xml"))
    assert "Uncategorized" not in {t for r in records for t in r["topics"]}


# -- clean text ----------------------------------------------------------------------------

def test_wordpress_teaser_boilerplate_removed():
    first, second = read("wordpress.xml").records
    assert first["teaser"] == "People with NMOSD who took rituximab had fewer attacks than those on azathioprine"
    # a teaser that is only the journal's name: the findings' first sentence instead
    assert second["teaser"] == "A smartphone walking test done at home picked up slowing that clinic visits missed."


def test_a_teaser_that_is_the_whole_abstract_becomes_the_first_sentence():
    [item] = read("medrxiv.atom").records
    assert item["teaser"] == "Stool samples from 210 people with relapsing MS were sequenced at baseline."
    assert "(<10% of variance explained)" in item["findings"]


def test_html_titles_are_decoded_exactly_once():
    [item] = read("medrxiv.atom").records
    assert item["title"] == "Gut microbiome & disability progression in relapsing multiple sclerosis"
    [plain] = parse_feed(atom('<title type="text">A &amp;amp; B</title><summary>x</summary>'), "f").records
    assert plain["title"] == "A &amp; B"  # in a text title that is what the site wrote


# -- every word kept (property) --------------------------------------------------------------

PIECES = list("abcXYZ019 <>&;#*_.,!?'\"-()\u00e9") + ["&amp;", "&lt;b", "<b>", "p<0.05", "&#8230;", "\n"]
TEXT = st.lists(st.sampled_from(PIECES), min_size=1, max_size=40).map("".join)


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text)


@given(title=TEXT, paragraphs=st.lists(TEXT, min_size=1, max_size=4), title_kind=st.sampled_from(["text", "html"]),
       listed=st.booleans())
def test_feed_text_keeps_every_word(site, title, paragraphs, title_kind, listed):
    assume(words(title) and words(paragraphs[0]))
    assume(not any(re.search(r"(^|\n)\s*#", p) for p in paragraphs))  # a "## Limitations" line is a heading
    blocks = [f"<li>{html.escape(p)}</li>" for p in paragraphs] if listed else \
        [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    body = "<ul>" + "".join(blocks) + "</ul>" if listed else "".join(blocks)
    title_xml = escape(html.escape(title)) if title_kind == "html" else escape(title)
    feed = atom(f'<title type="{title_kind}">{title_xml}</title><link href="https://x.example.org/a"/>'
                f'<content type="html">{escape(body)}</content>')
    [record] = parse_feed(feed, "feed").records
    site.store.upsert_summaries([record])
    [stored] = site.store.summaries()
    assert stored["title"] == " ".join(title.split())
    stored_text = " ".join(stored[f] for f in SECTIONS)
    expected = [w for p in paragraphs for w in words(p)]
    assert words(html.unescape(stored_text)) == expected
    assert words(" ".join(html_to_text(markdown_to_safe_html(stored[f])) for f in SECTIONS)) == expected  # and so the email's text
