"""The public reading pages through Flask's test client on a real SQLite file: a summary in full, the archive
index and its Atom feed (parsed by feedparser); summary text only through the emails' sanitiser."""

from __future__ import annotations

import re

import feedparser
import lxml.html
import pytest
from hypothesis import given, strategies as st

from newsletter.render import Renderer
from newsletter.render.cards import NO_LIMITATIONS
from newsletter.web import create_app
from tests.test_web import PageCheck, clock, check_page, make_app, messages, path_of, sent, text_of  # noqa: F401

SITE = "https://digest.example.org"


@pytest.fixture
def reader_client(sent):
    return create_app(sent.config, TESTING=True).test_client()


def summary_record(slug: str, **fields) -> dict:
    return {"slug": slug, "title": "A title", "published": "2026-11-19", "findings": "Findings.", "topics": ["MS"],
            **fields}


# -- /summaries/<slug> --------------------------------------------------------------------------------

def test_every_read_the_full_summary_link_of_a_sent_digest_opens_the_summary(sent, reader_client):
    checked = set()
    for msg in messages(sent):
        for url in re.findall(r"Read the full summary: (\S+)", text_of(msg)):
            if url in checked:
                continue
            response = reader_client.get(path_of(url))
            assert response.status_code == 200, url
            page_basics(response.get_data(as_text=True))
            checked.add(url)
    assert len(checked) >= 10


def test_the_summary_page_shows_every_audience_the_limitations_the_source_and_the_disclaimer(sent, reader_client):
    s = next(x for x in sent.store.summaries() if x["doi"] and x["caregivers"] and x["clinicians"])
    response = reader_client.get(f"/summaries/{s['slug']}")
    html = response.get_data(as_text=True)
    doc = lxml.html.document_fromstring(html)
    text = " ".join(doc.text_content().split())
    assert doc.findtext(".//h1") == s["title"]
    headings = [h.text_content() for h in doc.iter("h2")]
    assert headings[:5] == ["What was found", "What it could mean for people living with MS",
                            "For caregivers and family", "For healthcare providers", "Limitations"]
    for field in ("findings", "patients", "caregivers", "clinicians", "limitations"):
        first_words = " ".join(s[field].split()[:6]).replace("**", "")
        assert first_words in text, field
    assert f'href="https://doi.org/{s["doi"]}"' in html and s["journal"] in text
    for paragraph in Renderer.from_config(sent.config).disclaimer():
        assert paragraph in text
    assert "Updated" not in text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script" not in response.headers["Content-Security-Policy"]
    assert not doc.xpath("//script")


def test_an_updated_summary_shows_its_latest_revision_with_a_note(sent, reader_client):
    s = sent.store.issue_summaries(sent.store.issues(status="sent")[0]["id"])[0]
    assert sent.store.upsert_summaries([{**s, "findings": "A corrected finding."}]).revised == 1
    html = reader_client.get(f"/summaries/{s['slug']}").get_data(as_text=True)
    assert "A corrected finding." in html and s["findings"].split()[0] + " " not in html.split("<h2>What was found")[1][:40]
    assert "Updated" in html and "(version 2)" in html


def test_a_summary_without_limitations_says_so_and_a_non_web_source_is_not_a_link(sent, reader_client):
    sent.store.upsert_summaries([summary_record("bare", source_url="javascript:alert(1)", limitations="")])
    html = reader_client.get("/summaries/bare").get_data(as_text=True)
    assert NO_LIMITATIONS in html
    assert "javascript:" not in html and "Read the original study" not in html


def test_an_unknown_slug_is_a_plain_404(reader_client):
    response = reader_client.get("/summaries/no-such-summary")
    assert response.status_code == 404
    check_page(response.get_data(as_text=True))


def page_basics(html: str) -> None:
    """lang, one h1, a title; and no resource (stylesheet, image, frame) from outside: links to a DOI are fine."""
    page = PageCheck()
    page.feed(html)
    assert page.lang == "en" and page.h1 == 1 and page.title.strip() and not page.iframes
    assert not re.findall(r'<(?:link|img|script|iframe)[^>]+(?:src|href)="(?:https?:)?//', html)


WORD = st.from_regex(r"[a-z]{4,9}", fullmatch=True)
#: Markup and entities a feed or file may carry; each is complete, so no word is swallowed by a half-open tag.
MARKUP = st.sampled_from(["<", ">", "&", "&amp;", "&lt;b&gt;", "&#60;", "&eacute;", "<b>", "</b>", "<em>",
                          "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<style>p{}</style>",
                          '<a href="javascript:alert(1)">', "</a>", "<iframe src=//evil>", "*", "-nl-utok-",
                          '"', "'", "<svg onload=alert(1)>", "<!-- c -->", "\n\n", "\n- "])
PARAGRAPH = st.lists(st.one_of(WORD, MARKUP), min_size=1, max_size=25)
ALLOWED = {"p", "br", "em", "strong", "b", "i", "ul", "ol", "li", "a", "code", "blockquote"}


@given(title=st.lists(st.one_of(WORD, MARKUP.filter(lambda m: "\n" not in m)), min_size=1, max_size=8),
       findings=PARAGRAPH, limitations=PARAGRAPH)
def test_summary_text_shows_every_word_and_no_markup_escapes_the_sanitiser(sent, reader_client, title, findings,
                                                                          limitations):
    record = summary_record("hostile", title=" ".join(title), findings=" ".join(findings),
                            limitations=" ".join(limitations) or "none")
    sent.store.upsert_summaries([record])
    response = reader_client.get("/summaries/hostile")
    assert response.status_code == 200
    doc = lxml.html.document_fromstring(response.get_data(as_text=True))
    assert not doc.xpath("//script | //style[ancestor::body] | //iframe | //img | //svg | //*[local-name()='svg']")
    assert not [a for el in doc.iter() for a in el.attrib if a.lower().startswith("on")]
    assert not [h for h in doc.xpath("//@href") if not h.startswith(("/", "http://", "https://", "#"))]
    # The title is text: no element inside the h1, every word of it shown.
    [h1] = doc.iter("h1")
    assert len(h1) == 0 and h1.text_content() == record["title"].strip()
    for body in doc.find_class("prose"):
        assert {el.tag for el in body.iterdescendants()} <= ALLOWED
    shown = set(re.findall(r"[a-z]+", " ".join(body.text_content() for body in doc.find_class("prose"))))
    assert {w for w in findings + limitations if re.fullmatch(r"[a-z]{4,9}", w)} <= shown


# -- /archive and /archive.atom -----------------------------------------------------------------------

def test_the_archive_lists_each_segments_sent_digests_newest_first_and_links_their_web_copy(sent, reader_client):
    runner_issue = sent.store.issues(status="sent")[0]
    # A later sent issue of the same segment (the monthly one), and a draft that must not show.
    monthly, _ = sent.store.create_issue(runner_issue["segment"], "monthly", "2026-11",
                                         [s["id"] for s in sent.store.issue_summaries(runner_issue["id"])], "draft")
    sent.store.set_issue_status(monthly, "sent")
    draft, _ = sent.store.create_issue(runner_issue["segment"], "monthly", "2026-12", [], "draft")
    response = reader_client.get("/archive")
    html = response.get_data(as_text=True)
    check_page(html)
    doc = lxml.html.document_fromstring(html)
    sections = {s.findtext("h2"): [a.get("href") for a in s.iter("a")] for s in doc.iter("section")}
    display = {name: seg.display_name for name, seg in sent.segments.items()}
    assert list(sections) == [display[n] for n in sent.segments]  # in the order of segments.toml
    mine = sections[display[runner_issue["segment"]]]
    assert mine == [f"/archive/{monthly}/all", f"/archive/{runner_issue['id']}/all"]
    assert f"/archive/{draft}/" not in html
    assert "Monthly digest: November 2026" in html and "Weekly digest: Week of 16 November 2026" in html
    for href in (h for links in sections.values() for h in links):
        assert reader_client.get(href).status_code == 200, href


def test_the_archive_says_nothing_about_readers(sent, reader_client):
    def pages() -> list[bytes]:
        return [reader_client.get(path).get_data() for path in ("/archive", "/archive.atom")]

    before = pages()
    for sub in sent.store.subscribers():
        assert sub["email"].encode() not in b"".join(before)
    # More readers in every segment, some gone, one delivery failed: the pages do not change by a byte.
    sent.store.upsert_subscribers([{"email": f"extra{n}@example.org", "name": "", "segment": segment,
                                    "cadence": "weekly", "topics": [], "status": "active"}
                                   for n, segment in enumerate(list(sent.segments) * 7)])
    first = sent.store.subscribers()[0]
    sent.store.set_subscriber_status(first["id"], "unsubscribed")
    sent.store.mark_deliveries([sent.store.deliveries()[0]["id"]], "failed", error="bounced")
    assert pages() == before


def test_the_atom_feed_parses_with_stable_tag_ids_and_escaped_titles(make_site, make_app, tmp_path):
    segments = tmp_path / "segments.toml"
    segments.write_text('[odd]\ndisplay_name = "Friends & <family>"\nintro = "Hi."\nsections = ["findings"]\n',
                        encoding="utf-8")
    ctx = make_site("feed", segments_file=str(segments))
    ctx.store.upsert_summaries([summary_record("one", title="Cats & dogs <b>not bold</b>")])
    sid = ctx.store.summaries()[0]["id"]
    issue, _ = ctx.store.create_issue("odd", "weekly", "2026-W47", [sid], "draft")
    ctx.store.set_issue_status(issue, "sent")
    client = make_app(ctx).test_client()
    response = client.get("/archive.atom")
    assert response.status_code == 200 and response.mimetype == "application/atom+xml"
    feed = feedparser.parse(response.get_data())
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert feed.feed.id == "tag:digest.example.org,2026:digest-archive"
    [entry] = feed.entries
    assert entry.title == "Friends & <family>: weekly digest, Week of 16 November 2026"
    assert entry.id == f"tag:digest.example.org,{ctx.store.get_issue(issue)['created_at'][:10]}:issue-{issue}"
    assert entry.link == f"{SITE}/archive/{issue}/all"
    assert entry.summary == "Cats & dogs <b>not bold</b>"
    assert any(link.rel == "self" and link.href == f"{SITE}/archive.atom" for link in feed.feed.links)
    # The same issue keeps its id when more are sent.
    second, _ = ctx.store.create_issue("odd", "weekly", "2026-W48", [sid], "draft")
    ctx.store.set_issue_status(second, "sent")
    again = feedparser.parse(client.get("/archive.atom").get_data())
    assert [e.id for e in again.entries][1] == entry.id and again.feed.id == feed.feed.id
    assert len(again.entries) == 2 and again.entries[0].id.endswith(f":issue-{second}")


def test_an_empty_archive_is_a_page_and_a_valid_feed(make_site, make_app):
    client = make_app(make_site("empty")).test_client()
    assert "No digest has been sent yet." in client.get("/archive").get_data(as_text=True)
    feed = feedparser.parse(client.get("/archive.atom").get_data())
    assert not feed.bozo and feed.entries == []
