"""Reading grades of the lay text, against paragraphs counted by hand; flags at the threshold; the warning at
import, `summaries check`, and the hold on sending when a site enforces the grade."""

from __future__ import annotations

import html as htmllib
import json

import pytest

from newsletter.digest import DigestRunner
from newsletter.readability import flagged, grades, plain_text, sentences, syllables
from newsletter.store import reading_hold
from newsletter.web import create_app
from tests.conftest import SAMPLE_NOW, load_samples, read_maildir
from tests.test_ingest_subscribers import invoke

# 12 words, 2 sentences, 12 syllables (every word has one):
# FK = 0.39 * 12/2 + 11.8 * 12/12 - 15.59 = 2.34 + 11.8 - 15.59 = -1.45
EASY = "The cat sat on the mat. The dog ran to the park."
# 6 words, 1 sentence; syllables re-search-ers 3, stud-ied 2, peo-ple 2, with 1, mul-ti-ple 3, scle-ro-sis 3 = 14:
# FK = 0.39 * 6/1 + 11.8 * 14/6 - 15.59 = 2.34 + 27.533 - 15.59 = 14.283 -> 14.3; SMOG needs 3 sentences: none
DENSE = "Researchers studied people with multiple sclerosis."
# 3 sentences, 15 words (3 + 6 + 6), syllables 5 + 12 + 8 = 25:
#   ex-er-cise 3, can 1, help 1 | fa-tigue 2, is 1, com-mon 2, in 1, mul-ti-ple 3, scle-ro-sis 3 |
#   ask 1, your 1, doc-tor 2, a-bout 2, a 1, plan 1
# FK = 0.39 * 15/3 + 11.8 * 25/15 - 15.59 = 1.95 + 19.667 - 15.59 = 6.027 -> 6.0
# polysyllables (3 or more): exercise, multiple, sclerosis = 3
# SMOG = 1.0430 * sqrt(3 * 30/3) + 3.1291 = 1.0430 * 5.4772 + 3.1291 = 8.8418 -> 8.8
THREE = "Exercise can help. Fatigue is common in multiple sclerosis. Ask your doctor about a plan."


def test_flesch_kincaid_of_hand_counted_paragraphs():
    easy = grades(EASY)
    assert (easy["words"], easy["sentences"], easy["syllables"]) == (12, 2, 12)
    assert easy["flesch_kincaid"] == pytest.approx(-1.45, abs=0.051)  # -1.45 rounds to -1.4 in binary floats
    assert easy["smog"] is None
    dense = grades(DENSE)
    assert (dense["words"], dense["sentences"], dense["syllables"], dense["polysyllables"]) == (6, 1, 14, 3)
    assert dense["flesch_kincaid"] == 14.3
    assert dense["smog"] is None


def test_smog_of_a_hand_counted_paragraph():
    three = grades(THREE)
    assert (three["words"], three["sentences"], three["syllables"], three["polysyllables"]) == (15, 3, 25, 3)
    assert three["flesch_kincaid"] == 6.0
    assert three["smog"] == 8.8


def test_syllables_from_the_dictionary_then_hyphenation():
    assert [syllables(w) for w in ("people", "every", "caregivers", "long-term", "people's")] == [2, 3, 3, 2, 2]
    assert syllables("natalizumab") >= 4  # not in the dictionary: pyphen's na-tal-izum-ab
    assert syllables("2026") == 1


def test_markdown_and_sentences_are_read_as_a_reader_reads_them():
    text = plain_text("Talk to your team, e.g. a nurse. See [the study](https://doi.org/10.5555/x.y).\n\n"
                      "- walk daily\n- rest well\n\nMore at https://example.org/a.b.c")
    assert sentences(text) == ["Talk to your team, e.g. a nurse.", "See the study.", "walk daily", "rest well",
                               "More at"]
    assert grades("")["flesch_kincaid"] is None


def test_flags_at_the_threshold():
    summary = {"slug": "s", "teaser": EASY, "patients": THREE, "caregivers": "", "clinicians": DENSE * 3}
    assert [f.field for f in flagged(summary, 8)] == ["patients"]  # 8.8 > 8; clinicians' text is never graded
    assert flagged(summary, 8.8) == []                             # at the limit is fine
    assert [f.field for f in flagged(summary, 8.7)] == ["patients"]
    assert [f.field for f in flagged({**summary, "teaser": DENSE}, 8)] == ["teaser", "patients"]
    assert flagged({**summary, "teaser": DENSE}, 14.3) == []
    assert [f.field for f in flagged({**summary, "teaser": DENSE}, 14.2)] == ["teaser"]
    assert flagged(summary, 8)[0].describe() == "Flesch-Kincaid 6.0, SMOG 8.8"


def test_the_hold_rule_only_holds_approved_issues():
    summaries = [{"slug": "hard", "teaser": DENSE}, {"slug": "easy", "teaser": EASY}]
    line = reading_hold({"id": 7, "status": "approved"}, summaries, 8)
    assert line == ("issue 7: held, reading grade above 8 (enforce_reading_grade): "
                    "hard teaser (Flesch-Kincaid 14.3)")
    assert reading_hold({"id": 7, "status": "sending"}, summaries, 8) is None  # half sent: the rest get it too
    assert reading_hold({"id": 7, "status": "approved"}, summaries[1:], 8) is None


# -- through the CLI ---------------------------------------------------------------------------------------

def summary_file(tmp_path, **texts) -> str:
    path = tmp_path / "summaries.json"
    path.write_text(json.dumps([{"title": "A study", "slug": "a-study", "published": "2026-11-18",
                                 "findings": "What was found.", "limitations": "Small.", "topics": ["MS"],
                                 "source_url": "https://doi.org/10.5555/a", "teaser": EASY, "patients": EASY,
                                 "caregivers": EASY, **texts}]))
    return str(path)


def test_import_warns_and_check_lists_each_flagged_field(site, runner, tmp_path):
    result = invoke(runner, site, "summaries", "import", summary_file(tmp_path, patients=DENSE, caregivers=THREE))
    assert result.exit_code == 0
    assert result.stdout.strip() == "1 added, 0 updated, 0 new revisions, 0 unchanged"
    assert result.stderr.splitlines() == [
        "warning: a-study  patients  Flesch-Kincaid 14.3 (above 8)",
        "warning: a-study  caregivers  Flesch-Kincaid 6.0, SMOG 8.8 (above 8)"]
    check = invoke(runner, site, "summaries", "check")
    assert check.exit_code == 1
    assert check.stdout.splitlines() == ["a-study  patients  Flesch-Kincaid 14.3 (above 8)",
                                         "a-study  caregivers  Flesch-Kincaid 6.0, SMOG 8.8 (above 8)"]
    assert check.stderr.strip() == "2 fields above grade 8 in 1 summaries"
    relaxed = invoke(runner, site, "summaries", "check", "--max-grade", "14.3")
    assert (relaxed.exit_code, relaxed.stdout) == (0, "")


@pytest.fixture
def hard_issue(make_site, runner, tmp_path):
    def make(enforce: bool):
        ctx = make_site(f"site-{enforce}", enforce_reading_grade=enforce)
        invoke(runner, ctx, "summaries", "import", summary_file(tmp_path, patients=DENSE))
        invoke(runner, ctx, "subscribers", "add", "reader@example.org", "--segment", "patients", "--confirmed")
        return ctx
    return make


def test_an_enforcing_site_holds_an_issue_with_hard_text(hard_issue, runner):
    ctx = hard_issue(True)
    run = invoke(runner, ctx, "digest", "run", "--cadence", "weekly", "--now", "2026-11-20T07:00:00")
    issues = ctx.store.issues(status="approved")
    assert len(issues) == 3  # one per segment, each carrying the summary; all held
    lines = [f"issue {i['id']}: held, reading grade above 8 (enforce_reading_grade): "
             "a-study patients (Flesch-Kincaid 14.3)" for i in issues]
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {line}" for line in lines]
    assert run.exit_code == 1  # cron must hear of an approved issue that does not go out
    again = invoke(runner, ctx, "digest", "run", "--send-only")
    assert again.exit_code == 1 and again.stderr.count("held, reading grade") == 3
    assert read_maildir(ctx.config.outbox) == []
    assert all(ctx.store.delivery_counts(i["id"]) == {} for i in issues)
    patients = next(i for i in issues if i["segment"] == "patients")
    send = invoke(runner, ctx, "issues", "send", patients["id"])
    assert send.exit_code == 1
    assert send.stderr.strip() == f"Error: {lines[issues.index(patients)]}"
    assert read_maildir(ctx.config.outbox) == []


def test_without_enforcement_the_same_issue_is_sent(hard_issue, runner):
    ctx = hard_issue(False)
    run = invoke(runner, ctx, "digest", "run", "--cadence", "weekly", "--now", "2026-11-20T07:00:00")
    assert run.exit_code == 0, run.output
    assert len(read_maildir(ctx.config.outbox)) == 1


def test_the_issue_page_shows_each_flagged_lay_field_with_its_grades(make_site):
    """The editor sees on the issue page what `summaries check` says, per summary of the issue."""
    from tests.test_web import EDITOR, HASH, login

    ctx = make_site(require_approval="yes", max_reading_grade=8.0)
    load_samples(ctx)
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW, send=False)
    issue = ctx.store.issues()[0]
    expected = [(s["title"], flag) for s in ctx.store.issue_summaries(issue["id"]) for flag in flagged(s, 8.0)]
    assert expected  # the bundled samples read above grade 8 in places
    client = create_app(ctx.config, editors={EDITOR: HASH}, TESTING=True).test_client()
    assert login(client).status_code == 303
    text = htmllib.unescape(client.get(f"/editor/issues/{issue['id']}").get_data(as_text=True))
    for _, flag in expected:
        assert f"Reads above grade 8: {flag.field}, {flag.describe()}" in text
    assert text.count("Reads above grade 8:") == len(expected)
    assert "flags are warnings only" in text
