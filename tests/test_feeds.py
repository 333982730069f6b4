"""Feeds polled: `summaries pull` over loopback HTTP with ETag/Last-Modified, guid identity, a failing feed."""

from __future__ import annotations

import email.utils
import hashlib
import re
import http.server
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from newsletter.cli import cli

from .conftest import read_maildir

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"


@dataclass
class FeedSite:
    """Files served like a web server that supports conditional GET; what each request sent is kept."""
    root: Path
    url: str = ""
    etags: bool = True
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)  # path -> error status to answer
    slow: set[str] = field(default_factory=set)  # paths that answer after 2 s

    def put(self, name: str, source: Path | str | None = None, text: str | None = None) -> str:
        target = self.root / name
        if text is not None:
            target.write_text(text, encoding="utf-8")
        else:
            shutil.copy(FEEDS / (source or name), target)
        return f"{self.url}/{name}"

    def headers_of(self, name: str) -> list[dict[str, str]]:
        return [h for path, h in self.requests if path == f"/{name}"]


@pytest.fixture
def feed_site(tmp_path):
    site = FeedSite(tmp_path / "www")
    site.root.mkdir()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            site.requests.append((self.path, dict(self.headers)))
            if self.path in site.slow:
                time.sleep(2)
            if self.path in site.status:
                self.send_error(site.status[self.path])
                return
            path = site.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            modified = email.utils.formatdate(int(path.stat().st_mtime), usegmt=True)
            if site.etags and self.headers.get("If-None-Match") == etag or (
                    not site.etags and self.headers.get("If-Modified-Since") == modified):
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml; charset=UTF-8")
            if site.etags:
                self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def feeds_toml(*feeds: dict) -> str:
    lines = []
    for feed in feeds:
        lines.append("[[feeds]]")
        for key, value in feed.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
            else:
                lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def with_feeds(ctx, *feeds: dict, **settings):
    """Append [[feeds]] (and top-level settings) to the site's newsletter.toml."""
    path = ctx.config.source
    text = path.read_text()
    top = "".join(f'{k} = {v!r}\n'.replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n"
                  for k, v in settings.items())
    # top-level keys must come before the first table
    head, sep, tail = text.partition("\n[editors]")
    path.write_text(top + head + "\n" + feeds_toml(*feeds) + sep + tail)
    return path


def pull(runner, path, *extra):
    return runner.invoke(cli, ["--config", str(path), "summaries", "pull", *extra], catch_exceptions=False)


def rows(ctx) -> list[dict]:
    return ctx.store.query("SELECT * FROM summaries ORDER BY id")


# -- conditional GET ---------------------------------------------------------------------

@pytest.mark.parametrize("etags", [True, False], ids=["etag", "last-modified"])
def test_second_pull_is_one_conditional_request_and_imports_nothing(site, runner, feed_site, etags):
    feed_site.etags = etags
    wordpress = feed_site.put("wordpress.xml")
    pubmed = feed_site.put("pubmed.xml")
    medrxiv = feed_site.put("medrxiv.atom")
    config = with_feeds(site, {"url": wordpress}, {"url": pubmed, "topics": ["NMOSD"]}, {"url": medrxiv})

    first = pull(runner, config)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{wordpress}: 2 added, 0 updated, 0 new revisions, 0 unchanged")
    assert "categories ignored (not in the topic list): Uncategorized, Treatments" in lines[0]
    assert lines[1] == f"{pubmed}: 2 added, 0 updated, 0 new revisions, 0 unchanged"
    assert lines[2].startswith(f"{medrxiv}: 1 added")
    stored = rows(site)
    assert len(stored) == 5

    second = pull(runner, config)
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines() == [f"{url}: not modified" for url in (wordpress, pubmed, medrxiv)]
    assert rows(site) == stored
    for name in ("wordpress.xml", "pubmed.xml", "medrxiv.atom"):
        first_headers, second_headers = feed_site.headers_of(name)
        assert "If-None-Match" not in first_headers and "If-Modified-Since" not in first_headers
        if etags:
            assert second_headers["If-None-Match"].startswith('"')
        else:
            assert "If-None-Match" not in second_headers
            assert second_headers["If-Modified-Since"].endswith("GMT")
    state = site.store.feed_state(wordpress)
    assert state["failures"] == 0 and state["last_modified"]


def test_an_item_keeps_its_identity_by_guid_through_a_new_title_and_permalink(site, runner, feed_site):
    url = feed_site.put("wordpress.xml")
    config = with_feeds(site, {"url": url})
    assert pull(runner, config).exit_code == 0
    before = {r["guid"]: r for r in rows(site)}
    original = before["https://plainwords.example.org/?p=1234"]

    text = (FEEDS / "wordpress.xml").read_text()
    text = text.replace("Rituximab or azathioprine for NMOSD: fewer attacks &#038; fewer side effects",
                        "Rituximab beats azathioprine in NMOSD")
    text = text.replace("/2026/11/18/rituximab-azathioprine-nmosd/", "/2026/11/18/rituximab-beats-azathioprine/")
    feed_site.put("wordpress.xml", text=text)
    result = pull(runner, config)
    assert result.exit_code == 0, result.output
    assert "0 added, 1 updated, 0 new revisions, 1 unchanged" in result.stdout
    after = {r["guid"]: r for r in rows(site)}
    assert len(after) == len(before) == 2
    changed = after["https://plainwords.example.org/?p=1234"]
    assert changed["id"] == original["id"] and changed["slug"] == original["slug"]
    assert changed["title"] == "Rituximab beats azathioprine in NMOSD"
    assert changed["url"] == "https://plainwords.example.org/2026/11/18/rituximab-beats-azathioprine/"


def test_same_title_different_guids_are_two_summaries(site, runner, feed_site):
    text = (FEEDS / "pubmed.xml").read_text().replace(
        "Long-term outcomes of MOG antibody disease in children",
        "Serum glial fibrillary acidic protein &amp; attack risk in aquaporin-4 antibody-positive NMOSD")
    url = feed_site.put("pubmed.xml", text=text)
    assert pull(runner, with_feeds(site, {"url": url})).exit_code == 0
    slugs = [r["slug"] for r in rows(site)]
    assert len(slugs) == 2 and slugs[1] == slugs[0] + "-2"


def test_drafts_feed_holds_items_until_published(site, runner, feed_site):
    url = feed_site.put("medrxiv.atom")
    config = with_feeds(site, {"url": url, "drafts": True})
    assert pull(runner, config).exit_code == 0
    [row] = rows(site)
    assert row["draft"] == 1
    listed = runner.invoke(cli, ["--config", str(config), "summaries", "list"], catch_exceptions=False)
    assert "(draft)" in listed.stdout
    from newsletter.select import select_summaries
    from datetime import date
    assert select_summaries(site.store, "patients", "weekly", date(2026, 11, 20), 45, 10) == []
    done = runner.invoke(cli, ["--config", str(config), "summaries", "publish", row["slug"]], catch_exceptions=False)
    assert done.exit_code == 0 and "1 published" in done.stdout
    assert [s["slug"] for s in select_summaries(site.store, "patients", "weekly", date(2026, 11, 20), 45, 10)] \
        == [row["slug"]]


def test_a_feed_topic_outside_the_topic_list_is_refused_before_any_fetch(site, runner, feed_site):
    url = feed_site.put("medrxiv.atom")
    result = pull(runner, with_feeds(site, {"url": url, "topics": ["Uncategorized"]}))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: feeds[0]: topics: 'Uncategorized' is not in the topic list "
        "(MS, NMOSD, MOGAD, Autoimmune encephalitis, PML)"]
    assert feed_site.requests == [] and rows(site) == []


def test_pull_without_feeds_says_what_to_configure(site, runner):
    result = pull(runner, site.config.source)
    assert result.exit_code == 1
    assert "feeds: none configured" in result.stderr


def test_a_feed_file_is_read_like_a_url(site, runner, tmp_path):
    shutil.copy(FEEDS / "pubmed.xml", site.config.source.parent / "pubmed.xml")
    result = pull(runner, with_feeds(site, {"url": "pubmed.xml"}))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{site.config.source.parent / 'pubmed.xml'}: 2 added")


# -- a failing feed ------------------------------------------------------------------------

def test_a_failing_feed_is_reported_notified_once_and_never_blocks(make_site, runner, feed_site):
    ctx = make_site(editors_email="editors@example.org")
    good = feed_site.put("pubmed.xml")
    broken = feed_site.put("broken.xml", "not-a-feed.xml")
    slow = feed_site.put("slow.xml", "medrxiv.atom")
    feed_site.slow.add("/slow.xml")
    config = with_feeds(ctx, {"url": broken}, {"url": good}, {"url": slow}, feed_timeout=0.5)

    for attempt in range(1, 5):
        result = pull(runner, config)
        assert result.exit_code == 1
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"{broken}: failed ({attempt} in a row): feed: has no entries")
        assert lines[1].startswith(f"{good}: ")  # the feed after a broken one is still read
        assert lines[2].startswith(f"{slow}: failed ({attempt} in a row): url: could not fetch: ")
        assert "timed out" in lines[2]
        notices = [m for m in read_maildir(ctx.config.outbox) if m["To"].addresses[0].addr_spec == "editors@example.org"]
        assert len(notices) == (0 if attempt < 3 else 2), attempt  # one per failing feed, at the third failure
        if attempt == 3:
            assert "editors told at editors@example.org" in lines[0]
    assert {n["Subject"] for n in notices} == {f"Feed failing 3 times in a row: {broken}",
                                               f"Feed failing 3 times in a row: {slow}"}
    assert "Last error: " + broken + ": feed: has no entries" in next(
        n for n in notices if broken in n["Subject"]).get_content()
    assert len(rows(ctx)) == 2

    status = runner.invoke(cli, ["--config", str(config), "status"], catch_exceptions=False)
    assert f"Feed failing: {broken}: 4 in a row since " in status.stdout

    # The digest goes out all the same, with what was imported.
    digest = runner.invoke(cli, ["--config", str(config), "digest", "run", "--now", "2026-11-20T07:00:00"],
                           catch_exceptions=False)
    assert digest.exit_code == 0, digest.output

    # A success clears the run of failures (and the status line); a new run of three notifies again.
    feed_site.put("broken.xml", "wordpress.xml")
    feed_site.slow.clear()
    assert pull(runner, config).exit_code == 0
    assert ctx.store.failing_feeds() == []
    status = runner.invoke(cli, ["--config", str(config), "status"], catch_exceptions=False)
    assert "Feed failing" not in status.stdout
    feed_site.status["/broken.xml"] = 503
    for _ in range(3):
        result = pull(runner, config)
    assert "HTTP 503" in result.stdout
    notices = [m for m in read_maildir(ctx.config.outbox) if m["To"].addresses[0].addr_spec == "editors@example.org"]
    assert len(notices) == 3


def test_the_weekly_cron_line_pulls_then_builds_even_when_a_feed_fails(site, feed_site, tmp_path):
    """Run schedule.cron's weekly command as cron would (sh, NEWSLETTER_HOME), with one feed answering 500."""
    import os
    import subprocess
    import sys

    cron = (Path(__file__).resolve().parent.parent / "schedule.cron").read_text()
    [weekly] = [line for line in cron.splitlines() if line.startswith("0 7 * * 1 ")]
    command = weekly.split(None, 5)[5]
    assert command.index("summaries pull") < command.index("digest run --cadence weekly")
    good = feed_site.put("pubmed.xml")
    feed_site.status["/down.xml"] = 500
    with_feeds(site, {"url": f"{feed_site.url}/down.xml"}, {"url": good, "topics": ["NMOSD"]})
    home = site.config.source.parent
    (home / "newsletter.toml").exists() or (home / "newsletter.toml").symlink_to(site.config.source)
    (home / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (home / "secrets.env").write_text("")
    (home / "log").mkdir()
    env = {**os.environ, "NEWSLETTER_HOME": str(home)}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    pulled = (home / "log" / "pull.log").read_text()
    assert "down.xml: failed (1 in a row): url: could not fetch: HTTP 500" in pulled
    assert f"{good}: 2 added" in pulled
    digest_log = (home / "log" / "digest.log").read_text()
    assert done.returncode == 0, digest_log
    assert re.search(r"^sent \d+, failed 0, unknown 0, deferred 0, skipped \d+$", digest_log, re.M), digest_log


@pytest.mark.parametrize("table, message", [
    ('[[feeds]]\ntopics = ["MS"]\n', "feeds[0]: url: missing"),
    ('[[feeds]]\nurl = "https://a.example.org/feed"\ncolour = "red"\n', "feeds[0]: colour: unknown key"),
    ('[[feeds]]\nurl = "https://a.example.org/feed"\ndrafts = "yes"\n', "feeds[0]: drafts: expected bool"),
    ('[[feeds]]\nurl = "https://a.example.org/f"\n[[feeds]]\nurl = "https://a.example.org/f"\n', "the same url twice"),
])
def test_bad_feeds_settings_are_one_line_naming_the_entry(site, runner, table, message):
    path = site.config.source
    path.write_text(path.read_text().replace("[editors]", table + "\n[editors]", 1))
    result = pull(runner, path)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {path}: ") and message in line


def test_feeds_from_the_environment(site, runner, feed_site, monkeypatch):
    url = feed_site.put("medrxiv.atom")
    monkeypatch.setenv("NEWSLETTER_FEEDS", f"{url} {feed_site.put('pubmed.xml')}")
    result = pull(runner, site.config.source)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2 and len(rows(site)) == 3
