"""The `newsletter` command through click's CliRunner: the user's tour, the demo, and clean errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from newsletter import bootstrap
from newsletter.cli import cli
from newsletter.segments import load_segments
from newsletter.sources.subscribers import read_csv
from newsletter.sources.summaries import read_sources
from newsletter.settings import SECRET_FILE
from newsletter.tokens import Tokens

from .conftest import SAMPLE_NOW, load_samples, read_maildir

DATA = Path(__file__).resolve().parent / "data"
NOW = SAMPLE_NOW.isoformat()


def invoke(runner, ctx, *args):
    return runner.invoke(cli, ["--config", str(ctx.config.source), *map(str, args)], catch_exceptions=False)


maildir_messages = read_maildir


def assert_clean_failure(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# -- summaries -----------------------------------------------------------------------

def test_summaries_import_and_list(site, runner):
    samples = bootstrap.sample_summary_files()
    result = invoke(runner, site, "summaries", "import", *samples)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{len(samples)} added, 0 updated, 0 new revisions, 0 unchanged"
    again = invoke(runner, site, "summaries", "import", *samples)
    assert again.stdout.strip() == f"0 added, 0 updated, 0 new revisions, {len(samples)} unchanged"

    listing = invoke(runner, site, "summaries", "list")
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert len(lines) == len(samples)
    assert listing.stderr.strip() == f"{len(samples)} summaries"
    dates = [line.split()[0] for line in lines]
    assert dates == sorted(dates, reverse=True)  # newest first

    since = invoke(runner, site, "summaries", "list", "--since", "2026-11-01").stdout.splitlines()
    assert since and all(line.split()[0] >= "2026-11-01" for line in since)
    assert len(since) == len(site.store.summaries(since="2026-11-01")) < len(lines)

    nmosd = invoke(runner, site, "summaries", "list", "--topic", "nmosd").stdout.splitlines()
    assert nmosd and all("NMOSD" in line for line in nmosd)
    assert len(nmosd) == len([s for s in site.store.summaries() if "NMOSD" in s["topics"]])

    as_json = json.loads(invoke(runner, site, "summaries", "list", "--json", "--topic", "PML").stdout)
    assert as_json and all("PML" in row["topics"] for row in as_json)


def test_the_bundled_samples_cover_the_topics_and_several_weeks():
    records = read_sources(bootstrap.sample_summary_files())
    assert len(records) >= 12
    topics = {t for r in records for t in r["topics"]}
    assert {"MS", "NMOSD", "MOGAD", "Autoimmune encephalitis", "PML"} <= topics
    weeks = {date.fromisoformat(r["published"]).isocalendar()[:2] for r in records}
    assert len(weeks) >= 4


# -- subscribers ------------------------------------------------------------------------

def test_subscribers_add_list_export_remove(site, runner):
    result = invoke(runner, site, "subscribers", "add", "New.Reader@Example.org", "--segment", "caregivers",
                    "--name", "New Reader", "--cadence", "monthly", "--topic", "MS", "--topic", "PML")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "added new.reader@example.org (caregivers, monthly, pending)"
    result = invoke(runner, site, "subscribers", "add", "second@example.org", "--segment", "patients", "--confirmed")
    assert result.stdout.strip() == "added second@example.org (patients, weekly, active)"

    listing = invoke(runner, site, "subscribers", "list")
    assert listing.stdout.splitlines() == [
        "new.reader@example.org  caregivers  monthly  pending  (MS, PML)",
        "second@example.org  patients  weekly  active  (all topics)",
    ]
    assert listing.stderr.strip() == "2 subscribers"
    active = invoke(runner, site, "subscribers", "list", "--status", "active").stdout.splitlines()
    assert [line.split()[0] for line in active] == ["second@example.org"]

    exported = invoke(runner, site, "subscribers", "export", "--segment", "caregivers").stdout
    assert exported.splitlines() == ["email,name,segment,cadence,topics,status",
                                     "new.reader@example.org,New Reader,caregivers,monthly,MS;PML,pending"]

    assert invoke(runner, site, "subscribers", "remove", "new.reader@example.org").exit_code == 0
    assert [line.split()[0] for line in invoke(runner, site, "subscribers", "list").stdout.splitlines()] == [
        "second@example.org"]


def test_subscribers_import_the_sample_csv(site, runner):
    result = invoke(runner, site, "subscribers", "import", bootstrap.sample_subscribers_csv())
    assert result.exit_code == 0, result.output
    total = len(bootstrap.sample_subscribers_csv().read_text().strip().splitlines()) - 1
    assert result.stdout.strip() == f"{total} added, 0 updated, 0 rejected"
    assert len(site.store.subscribers()) == total


# -- digest ----------------------------------------------------------------------------

def test_digest_run_twice_sends_once(loaded, runner):
    outbox = Path(loaded.config.outbox)
    first = invoke(runner, loaded, "digest", "run", "--cadence", "weekly", "--now", NOW)
    assert first.exit_code == 0, first.output
    built = [line for line in first.stdout.splitlines() if line.startswith("issue ")]
    assert len(built) == len(loaded.segments)
    for segment in loaded.segments:
        assert any(f": {segment} weekly 2026-W47, " in line for line in built), segment
    sent = int(re.search(r"sent (\d+), failed 0, unknown 0", first.stdout).group(1))
    messages = maildir_messages(outbox)
    assert sent == len(messages) > 0

    second = invoke(runner, loaded, "digest", "run", "--now", NOW)
    assert second.exit_code == 0, second.output
    assert not [line for line in second.stdout.splitlines() if line.startswith("issue ")]
    assert "sent 0, failed 0" in second.stdout
    assert len(maildir_messages(outbox)) == len(messages)


def test_digest_run_finds_newsletter_toml_in_the_working_directory(loaded, runner, monkeypatch):
    monkeypatch.chdir(Path(loaded.config.source).parent)
    result = runner.invoke(cli, ["digest", "run", "--now", NOW], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert maildir_messages(Path(loaded.config.outbox))


def test_digest_run_no_send_then_send(loaded, runner):
    built = invoke(runner, loaded, "digest", "run", "--now", NOW, "--no-send")
    assert built.exit_code == 0
    assert "sent 0" in built.stdout
    assert maildir_messages(Path(loaded.config.outbox)) == []
    sent = invoke(runner, loaded, "digest", "run", "--now", NOW, "--send-only")
    assert sent.exit_code == 0
    assert len(maildir_messages(Path(loaded.config.outbox))) == int(re.search(r"sent (\d+)", sent.stdout).group(1)) > 0


# -- preview ---------------------------------------------------------------------------

def test_preview_writes_each_segment_and_sends_nothing(loaded, runner, tmp_path):
    out = tmp_path / "preview"
    result = invoke(runner, loaded, "preview", "--now", NOW, "--out", out)
    assert result.exit_code == 0, result.output
    for segment in loaded.segments:
        html = (out / f"{segment}.html").read_text()
        text = (out / f"{segment}.txt").read_text()
        assert re.match(r"(<!doctype html>\s*)?<html lang=\"en\"", html.lstrip(), re.I), html[:80]
        assert "not medical advice" in text.lower()
        assert "/u/preview-token" in text and "/u/preview-token" in html
        assert f"{segment}.html" in (out / "index.html").read_text()
    assert f"preview page: {out / 'index.html'}" in result.stdout
    assert loaded.store.issues() == []
    assert maildir_messages(Path(loaded.config.outbox)) == []


def test_preview_of_one_segment_and_of_an_issue(loaded, runner, tmp_path):
    result = invoke(runner, loaded, "preview", "--now", NOW, "--segment", "clinicians", "--out", tmp_path / "one")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "one").glob("*.html")) == ["clinicians.html", "index.html"]
    invoke(runner, loaded, "digest", "run", "--now", NOW)
    issue = loaded.store.issues()[0]
    result = invoke(runner, loaded, "preview", "--issue", issue["id"], "--out", tmp_path / "issue")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "issue" / f"{issue['segment']}.html").exists()


def test_preview_with_nothing_new(site, runner, tmp_path):
    result = invoke(runner, site, "preview", "--now", NOW, "--out", tmp_path / "p")
    assert result.exit_code == 0
    assert "no segment has new summaries" in result.stdout


# -- demo and init ------------------------------------------------------------------------

def demo_counts(stdout: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\w+): (\d+) messages in the outbox$", stdout, re.M)}


def test_demo_runs_the_whole_job_and_twice_changes_nothing(tmp_path, runner):
    directory = tmp_path / "demo"
    result = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    counts = demo_counts(result.stdout)
    assert set(counts) == {"patients", "caregivers", "clinicians"}
    messages = maildir_messages(directory / "outbox")
    # Headers never name a segment (List-Id names the cadence only): each recipient's segment comes from the CSV.
    with bootstrap.sample_subscribers_csv().open(encoding="utf-8") as fh:
        segment_of = {r["email"]: r["segment"] for r in read_csv(fh, load_segments()).good}
    per_segment = Counter(segment_of[m["To"].addresses[0].addr_spec] for m in messages)
    assert dict(per_segment) == counts
    assert all(n > 0 for n in counts.values())
    assert (directory / "preview" / "index.html").exists()
    assert str(directory / "outbox") in result.stdout
    assert str(directory / "preview" / "index.html") in result.stdout
    assert len(re.findall(r"issue \d+ built", result.stdout)) == 3

    again = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "no new issues" in again.stdout
    assert "sent 0," in again.stdout
    assert len(maildir_messages(directory / "outbox")) == len(messages)


def test_demo_works_without_any_secret_set(tmp_path, runner, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    directory = tmp_path / "demo"
    result = runner.invoke(cli, ["demo", str(directory)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    secret = (directory / SECRET_FILE).read_text().strip()
    tokens = Tokens(secret)
    messages = maildir_messages(directory / "outbox")
    assert messages
    for msg in messages:
        token = re.search(r"/u/([^>]+)>", msg["List-Unsubscribe"]).group(1)
        assert tokens.verify("unsubscribe", token) > 0


def test_init_then_the_users_tour(tmp_path, runner, monkeypatch):
    site = tmp_path / "mysite"
    assert runner.invoke(cli, ["init", str(site)], catch_exceptions=False).exit_code == 0
    toml = site / "newsletter.toml"
    toml.write_text('postal_address = "1 Tour Road, Tourville"\n' + toml.read_text())  # before [editors]
    monkeypatch.chdir(site)
    steps = [
        ["summaries", "import", *bootstrap.sample_summary_files()],
        ["subscribers", "add", "tour@example.org", "--segment", "patients", "--confirmed"],
        ["subscribers", "import", str(bootstrap.sample_subscribers_csv())],
        ["preview", "--now", NOW, "--out", "preview"],
        ["digest", "run", "--cadence", "weekly", "--now", NOW],
    ]
    for step in steps:
        result = runner.invoke(cli, step, catch_exceptions=False)
        assert result.exit_code == 0, (step, result.output)
    recipients = {m["To"].addresses[0].addr_spec for m in maildir_messages(site / "outbox")}
    assert "tour@example.org" in recipients


# -- errors are one line, exit 1, no traceback -------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["summaries", "import", "/nonexistent/summary.md"], "no such file"),
    (["summaries", "import", str(DATA / "summaries" / "bad" / "bad-doi.md")], "doi: "),
    (["subscribers", "add", "not-an-email", "--segment", "patients"], "email: "),
    (["subscribers", "add", "ok@example.org", "--segment", "astronauts"], "segment: "),
    (["subscribers", "remove", "nobody@example.org"], "no such subscriber"),
    (["subscribers", "import", str(DATA / "subscribers" / "bad-header.csv")], "unknown column"),
    (["preview", "--issue", "999"], "issue 999"),
])
def test_bad_input_exits_1_with_one_line(site, runner, args, needle):
    line = assert_clean_failure(invoke(runner, site, *args))
    assert needle in line


def test_sending_without_a_postal_address_is_one_line(make_site, runner):
    ctx = make_site(postal_address="")
    load_samples(ctx)
    line = assert_clean_failure(invoke(runner, ctx, "digest", "run", "--now", NOW))
    assert "postal_address" in line and str(ctx.config.source) in line
    assert maildir_messages(Path(ctx.config.outbox)) == []


def test_bad_now_is_a_usage_error_not_a_traceback(site, runner):
    result = invoke(runner, site, "digest", "run", "--now", "next tuesday")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "not an ISO date-time" in result.stderr


def test_help_needs_no_config(tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(tmp_path / "missing.toml"))
    result = runner.invoke(cli, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in ("demo", "init", "summaries", "subscribers", "digest", "preview"):
        assert name in result.stdout


def test_a_command_that_renders_nothing_never_loads_the_render_stack(tmp_path):
    """The top group imports each command's module when it runs (cli/__init__.py), and a failure's classes when
    one is raised (common.expected_errors): `subscribers import` leaves the render stack's memory to its cache."""
    import subprocess
    import sys
    code = ("import sys; from newsletter.cli import cli\n"
            "try:\n    cli.main(['subscribers', 'import', '--help'], standalone_mode=False)\n"
            "finally:\n    print(sorted(m for m in ('newsletter.render', 'premailer', 'mjml', 'jinja2', "
            "'newsletter.digest', 'newsletter.web', 'sendgrid') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"
