"""Summaries in: Markdown with front matter, JSON, RSS 2.0 and Atom (file or URL); all or nothing."""

from __future__ import annotations

import functools
import gc
import http.client
import http.server
import json
import re
import shutil
import threading
import warnings
from pathlib import Path

import pytest

from newsletter import bootstrap
from newsletter.cli import cli
from newsletter.sources.summaries import IngestError, read_source, read_sources

DATA = Path(__file__).resolve().parent / "data"
GOOD = DATA / "summaries" / "good"
BAD = DATA / "summaries" / "bad"
FEEDS = DATA / "feeds"


def count_summaries(ctx) -> int:
    return ctx.store.query("SELECT COUNT(*) AS n FROM summaries")[0]["n"]


def import_cli(runner, ctx, *sources):
    return runner.invoke(cli, ["--config", str(ctx.config.source), "summaries", "import", *map(str, sources)],
                         catch_exceptions=False)


def by_slug(ctx) -> dict[str, dict]:
    return {r["slug"]: r for r in ctx.store.summaries()}


# -- each format ------------------------------------------------------------------

def test_markdown_front_matter_and_sections_map_to_fields(site):
    [record] = read_source(str(GOOD / "cladribine-memory.md"))
    assert record["title"] == "Memory B cells return slowly after cladribine tablets"
    assert record["slug"] == "cladribine-memory-b-cells"
    assert record["published"] == "2026-11-12"
    assert record["journal"] == "Test Journal of Neuroimmunology"
    assert record["doi"] == "10.5555/test.2026.0901"
    assert record["topics"] == ["MS"]
    assert record["findings"].startswith("Researchers measured immune cells")
    assert "Memory B cells stayed low" in record["findings"]
    assert "## " not in record["findings"]
    assert record["patients"] == "This may help explain why the treatment keeps working between courses."
    assert record["caregivers"] == "Infections were not more frequent while the cells were low."
    assert record["clinicians"].startswith("Single-centre cohort")
    assert record["limitations"] == "One centre, small numbers, and no comparison group."

    counts = site.store.upsert_summaries([record])
    assert counts.inserted == 1
    stored = by_slug(site)["cladribine-memory-b-cells"]
    for field in ("title", "published", "teaser", "findings", "patients", "caregivers", "clinicians",
                  "limitations", "source_url", "journal", "doi", "topics"):
        assert stored[field] == record[field], field


def test_json_object(site):
    [record] = read_source(str(GOOD / "one.json"))
    assert record["slug"] == "video-fatigue-programme"
    assert record["patients"].startswith("If travel to a clinic is hard")
    assert record["caregivers"] == ""  # absent paragraphs are allowed
    # No teaser given: the first sentence of the findings stands in.
    assert record["teaser"].startswith("In a randomised trial") and record["teaser"].endswith("clinic.")


def test_json_list_with_derived_slug_us_date_and_comma_topics(site):
    first, second = read_source(str(GOOD / "list.json"))
    assert first["slug"] is None and first["derived_slug"] == "eculizumab-and-pregnancy-outcomes-in-nmosd"
    assert second["published"] == "2026-11-06"
    assert second["topics"] == ["MOGAD", "Autoimmune encephalitis"]
    site.store.upsert_summaries([first, second])
    assert set(by_slug(site)) == {"eculizumab-and-pregnancy-outcomes-in-nmosd", "mog-titres-first-attack"}


def test_rss_feed_file(site):
    records = read_source(str(FEEDS / "rss.xml"))
    assert [r["title"] for r in records] == ["Vitamin D levels and relapses in children with MS",
                                             "JC virus testing intervals on natalizumab"]
    vit, jcv = records
    assert vit["published"] == "2026-11-10"
    assert vit["source_url"] == "https://research.example.org/studies/vitamin-d-children"
    assert "<p>" not in vit["findings"]
    assert "fewer relapses" in vit["findings"] and "did not test supplements" in vit["findings"]
    assert jcv["topics"] == ["MS", "PML"]
    assert jcv["published"] == "2026-11-02"


def test_atom_feed_file(site):
    gfap, mogad = read_source(str(FEEDS / "atom.xml"))
    assert gfap["published"] == "2026-11-12"
    assert gfap["teaser"] == "A blood marker went up weeks before attacks."
    assert gfap["findings"] == "In 60 people with NMOSD, serum GFAP **rose** a few weeks before an attack."
    assert gfap["topics"] == ["NMOSD"]
    assert gfap["url"] == "https://atom.example.org/studies/gfap-before-attacks"
    assert mogad["published"] == "2026-11-08"  # no <published>: <updated> stands in
    assert mogad["findings"] == "Faster steroid treatment was linked to better recovery."


@pytest.fixture
def feed_server():
    """tests/data served over HTTP on loopback."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(DATA)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_feed_from_an_http_url(site, runner, feed_server):
    result = import_cli(runner, site, f"{feed_server}/feeds/atom.xml", GOOD / "one.json")
    assert result.exit_code == 0, result.output
    assert "3 added" in result.stdout
    assert {"serum-gfap-rises-before-nmosd-attacks", "relapse-treatment-delays-in-mogad",
            "video-fatigue-programme"} == set(by_slug(site))


def open_http_responses() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, http.client.HTTPResponse) and not o.isclosed())


def test_unreachable_url_rejects_the_batch_and_closes_the_response(site, runner, feed_server):
    url = f"{feed_server}/feeds/missing.xml"  # answers 404
    gc.collect()
    gc.disable()  # so that an unclosed response stays visible instead of being finalised at random
    try:
        before = open_http_responses()
        result = import_cli(runner, site, GOOD / "one.json", url)
        exit_code, stderr = result.exit_code, result.stderr
        del result  # it holds the exception chain
        left_open = open_http_responses() - before
    finally:
        gc.enable()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # keep a leak from failing some later test
            gc.collect()
    assert exit_code == 1
    assert stderr.strip().startswith(f"Error: {url}: url: ")
    assert count_summaries(site) == 0
    assert left_open == 0, "the failed fetch left its HTTP response (and socket) open"


# -- re-import ---------------------------------------------------------------------

def test_reimport_updates_by_slug(site, tmp_path, runner):
    assert import_cli(runner, site, GOOD / "cladribine-memory.md").exit_code == 0
    again = import_cli(runner, site, GOOD / "cladribine-memory.md")
    assert "0 added" in again.stdout and "1 unchanged" in again.stdout
    edited = tmp_path / "edited.md"
    edited.write_text((GOOD / "cladribine-memory.md").read_text()
                      .replace("took more than a year", "took about 14 months"))
    result = import_cli(runner, site, edited)
    assert result.exit_code == 0, result.output
    assert "1 updated" in result.stdout
    assert count_summaries(site) == 1
    row = by_slug(site)["cladribine-memory-b-cells"]
    assert "about 14 months" in row["teaser"]
    assert row["revision"] == 1  # not sent yet: changed in place


def test_reimport_without_slug_is_keyed_by_source_url(site, tmp_path):
    first = tmp_path / "a.json"
    first.write_text(json.dumps({"title": "Original headline", "published": "2026-11-01", "findings": "One.",
                                 "source_url": "https://doi.org/10.5555/keyed"}))
    site.store.upsert_summaries(read_sources([str(first)]))
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"title": "A better headline", "published": "2026-11-01", "findings": "One, fixed.",
                                  "source_url": "https://doi.org/10.5555/keyed"}))
    counts = site.store.upsert_summaries(read_sources([str(second)]))
    assert (counts.inserted, counts.updated) == (0, 1)
    rows = site.store.summaries()
    assert len(rows) == 1
    assert rows[0]["slug"] == "original-headline"
    assert (rows[0]["title"], rows[0]["findings"]) == ("A better headline", "One, fixed.")


def test_a_sent_summary_gets_a_new_revision(site, tmp_path, runner):
    site.store.upsert_summaries(read_sources([str(GOOD / "cladribine-memory.md")]))
    original = by_slug(site)["cladribine-memory-b-cells"]
    issue_id, _ = site.store.create_issue("patients", "weekly", "2026-W46", [original["id"]], status="approved")
    site.store.set_issue_status(issue_id, "sent")

    edited = tmp_path / "edited.md"
    edited.write_text((GOOD / "cladribine-memory.md").read_text().replace("80 adults", "82 adults"))
    result = import_cli(runner, site, edited)
    assert result.exit_code == 0, result.output
    assert "1 new revisions" in result.stdout

    rows = site.store.query("SELECT * FROM summaries WHERE slug = 'cladribine-memory-b-cells' ORDER BY revision")
    assert [r["revision"] for r in rows] == [1, 2]
    assert "80 adults" in rows[0]["findings"]  # what was sent is kept as sent
    assert "82 adults" in rows[1]["findings"]
    assert [s["findings"] for s in site.store.issue_summaries(issue_id)] == [rows[0]["findings"]]
    latest = by_slug(site)["cladribine-memory-b-cells"]  # listings show the latest revision
    assert latest["revision"] == 2 and "82 adults" in latest["findings"]


def test_a_summary_in_an_unsent_draft_is_updated_in_place(site, tmp_path):
    site.store.upsert_summaries(read_sources([str(GOOD / "one.json")]))
    sid = by_slug(site)["video-fatigue-programme"]["id"]
    site.store.create_issue("patients", "weekly", "2026-W46", [sid], status="draft")
    edited = tmp_path / "one.json"
    edited.write_text((GOOD / "one.json").read_text().replace("six-week", "eight-week"))
    counts = site.store.upsert_summaries(read_sources([str(edited)]))
    assert (counts.updated, counts.revised) == (1, 0)
    assert count_summaries(site) == 1


def test_text_is_stored_as_given(site, tmp_path):
    raw = 'A **bold** claim <script>alert("x")</script> & <img src=x onerror=alert(1)>'
    path = tmp_path / "raw.json"
    path.write_text(json.dumps({"title": "Raw <b>HTML</b> & friends", "published": "2026-11-01", "findings": raw}))
    site.store.upsert_summaries(read_sources([str(path)]))
    [row] = site.store.summaries()
    assert row["findings"] == raw
    assert row["title"] == "Raw <b>HTML</b> & friends"


# -- bad input: the whole batch is rejected -------------------------------------------

BAD_FILES = [
    ("bad-date.md", "published"),
    ("bad-date-words.md", "published"),
    ("missing-title.md", "title"),
    ("unknown-field.json", "colour"),
    ("bad-doi.md", "doi"),
    ("unknown-heading.md", "body"),
    ("invalid-yaml.md", "front matter"),
    ("broken.json", "json"),
    ("bad-topics.json", "topics"),
]


@pytest.mark.parametrize("name, field", BAD_FILES)
def test_bad_file_error_names_file_and_field(name, field):
    path = str(BAD / name)
    with pytest.raises(IngestError) as info:
        read_sources([str(GOOD / "one.json"), path])
    message = str(info.value)
    assert re.fullmatch(rf"{re.escape(path)}(\[\d+\])?: {re.escape(field)}: \S.*", message), message


@pytest.mark.parametrize("name, field", BAD_FILES + [("../../feeds/not-a-feed.xml", "feed")])
def test_one_bad_file_rejects_the_whole_batch(loaded, runner, tmp_path, name, field):
    bad = (BAD / name).resolve()
    before = loaded.store.query("SELECT * FROM summaries ORDER BY id")
    # A batch with a new summary, a changed existing one, and the bad file last.
    changed = tmp_path / "changed.md"
    first_sample = Path(bootstrap.sample_summary_files()[0])
    changed.write_text(first_sample.read_text().replace("two years", "three years"))
    assert changed.read_text() != first_sample.read_text()
    result = import_cli(runner, loaded, GOOD / "one.json", changed, bad)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"Error: {re.escape(str(bad))}(\[\d+\])?: {re.escape(field)}: \S.*", lines[0]), lines[0]
    assert loaded.store.query("SELECT * FROM summaries ORDER BY id") == before


def test_the_same_slug_twice_in_one_batch_is_rejected(site, tmp_path):
    copy = tmp_path / "copy.md"
    shutil.copy(GOOD / "cladribine-memory.md", copy)
    with pytest.raises(IngestError, match=rf"^{re.escape(str(copy))}: slug: .*appears twice"):
        read_sources([str(GOOD / "cladribine-memory.md"), str(copy)])


@pytest.mark.parametrize("make, field", [
    (lambda d: d / "missing.md", "path"),
    (lambda d: d, "path"),
    (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("just words"))[0], "format"),
    (lambda d: (d / "bin.md", (d / "bin.md").write_bytes(b"\xff\xfe\x00bad"))[0], "encoding"),
])
def test_unreadable_sources_name_the_problem(tmp_path, make, field):
    path = make(tmp_path)
    with pytest.raises(IngestError, match=rf"^{re.escape(str(path))}: {field}: "):
        read_source(str(path))
