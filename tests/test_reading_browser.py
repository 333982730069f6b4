"""The welcome email end to end, and the reading pages, in headless Chromium against the app on a real socket.

A person fills the sign-up form, follows the confirmation link from the Maildir outbox, presses the button;
the welcome lands in the same Maildir and every link in it works against the live app. The summary page and
the archive pass axe-core with no serious or critical violation, fit a phone, and fetch nothing from outside.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from pathlib import Path

import pytest

from newsletter.digest import DigestRunner, RunReport
from newsletter.messengers import messenger_from_config
from newsletter.tokens import Tokens
from newsletter.sources.summaries import read_sources
from tests.fixtures_browser import AWKWARD_SUMMARY
from tests.conftest import delivery_of
from tests.test_web_browser import DESKTOP, PHONE, audit, confirmation_link, live, requests_seen  # noqa: F401

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"


def axe_violations(page) -> list[dict]:
    """axe-core's serious and critical violations on the page (run through the browser's debugging protocol,
    so the page's CSP, which forbids every script, stays as it is)."""
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: run tests/setup.sh (npm ci --prefix tests/node); axe-core tests never skip")
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.html).slice(0, 3)}))""")
    return [v for v in found if v["impact"] in ("serious", "critical")]


def check_reading_page(page, artifacts, name: str) -> None:
    """axe-core at phone width; our own audit (contrast, labels, one h1, no sideways scroll) at both widths."""
    page.set_viewport_size(PHONE)
    assert axe_violations(page) == [], page.url
    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        page.set_viewport_size(size)
        audit(page)
        page.screenshot(path=str(artifacts / f"reading-{name}-{label}.png"), full_page=True)
    assert page.evaluate("() => document.scripts.length") == 0


def outbox(ctx) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(ctx.config.outbox, create=True)
    return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]


def send_patients_weekly(ctx) -> dict:
    """Approve and send this week's patients' digest, so the archive has an issue for a new patients' reader."""
    [issue] = [i for i in ctx.store.issues() if i["segment"] == "patients"]
    ctx.store.set_issue_status(issue["id"], "approved")
    runner = DigestRunner(ctx.config, ctx.store, ctx.segments, messenger_factory=lambda: messenger_from_config(ctx.config))
    report = RunReport()
    runner.send([issue["id"]], report)
    assert report.tally.sent > 0
    return ctx.store.get_issue(issue["id"])


def test_sign_up_confirm_then_the_welcome_arrives_and_its_links_work(live, page, requests_seen, artifacts):
    ctx, store = live.ctx, live.ctx.store
    issue = send_patients_weekly(ctx)
    address = "welcome.reader@example.org"
    page.set_viewport_size(PHONE)
    page.goto(live.url("/"))
    page.get_by_label("Email address").fill(address)
    page.get_by_label("People living with MS").check()
    page.get_by_label("Every week").check()
    page.get_by_label("I agree to receive this digest").check()
    page.get_by_label("I understand that choosing").check()
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()

    confirm = confirmation_link(ctx, address)
    page.goto(confirm)
    assert [m["Subject"] for m in outbox(ctx) if m["To"].addresses[0].addr_spec == address] == [
        "Confirm your subscription to MS Research Digest"]  # opening the link sends nothing
    second_tab = page.context.new_page()  # the same link open twice: both show the button
    second_tab.goto(confirm)
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.get_by_role("heading", name="Thank you: you are subscribed").wait_for()
    second_tab.get_by_role("button", name="Yes, subscribe me").click()  # the second press
    second_tab.get_by_role("heading", name="Thank you: you are subscribed").wait_for()
    second_tab.close()
    sub = store.get_subscriber(address)
    [welcome] = [m for m in outbox(ctx) if m["To"].addresses[0].addr_spec == address
                 and m["Subject"] == "Welcome to MS Research Digest"]

    text = welcome.get_body(("plain",)).get_content()
    flat = " ".join(text.split())
    assert "written for people living with MS and related conditions (People living with MS)" in flat
    assert "It comes every Monday" in flat and re.search(r"due on Monday \d+ \w+ \d{4}", flat)
    tokens = Tokens(ctx.config.require_secret())
    unsubscribe = live.url(f"/u/{tokens.sign('unsubscribe', sub['id'])}")
    assert welcome["List-Unsubscribe"] == f"<{unsubscribe}>"
    [row] = store.welcome_deliveries(sub["id"])
    assert row["status"] == "sent" and delivery_of(welcome) == row["id"]

    # The HTML part, as a mail client shows it: every link in it answers, and leads where it says.
    html = welcome.get_body(("html",)).get_content()
    reader = page.context.new_page()  # a fresh page: the app's CSP must not apply to the email's own styles
    reader.set_viewport_size(PHONE)
    reader.set_content(html)
    audit(reader)
    links = {a["text"]: a["href"] for a in reader.eval_on_selector_all(
        "a[href]", "els => els.map(e => ({text: e.textContent.trim(), href: e.href}))")}
    assert links["Read the latest digest"] == live.url(f"/archive/{issue['id']}/all")
    assert links["Unsubscribe"] == unsubscribe
    assert set(re.findall(r"https?://\S+", text)) == set(links.values())
    reader.screenshot(path=str(artifacts / "welcome-email-phone.png"), full_page=True)
    reader.close()
    for name, url in links.items():
        response = page.goto(url)
        assert response.status == 200, (name, url)
    page.goto(links["Read the latest digest"])
    assert issue_subject_in(page, store, issue)
    page.goto(links["Change what you receive"])
    page.get_by_role("heading", name="Your preferences").wait_for()
    page.goto(links["Unsubscribe"])
    page.get_by_role("heading", name="Unsubscribe").wait_for()
    assert store.get_subscriber(address)["status"] == "active"  # following the links changed nothing

    # Opening the link again later sends nothing either.
    page.goto(confirm)
    page.get_by_role("heading", name="You are already subscribed").wait_for()
    assert len([m for m in outbox(ctx) if m["To"].addresses[0].addr_spec == address]) == 2
    assert [u for u in requests_seen if not u.startswith(live.base) and not u.startswith("about:")] == []


def issue_subject_in(page, store, issue) -> bool:
    title = store.issue_summaries(issue["id"])[0]["title"]
    return title in page.evaluate("() => document.body.innerText")


def test_the_summary_page_and_the_archive_pass_axe_and_fit_a_phone(live, page, requests_seen, artifacts, tmp_path):
    ctx = live.ctx
    issue = send_patients_weekly(ctx)
    slugs = [s["slug"] for s in ctx.store.issue_summaries(issue["id"])]
    page.goto(live.url("/archive"))
    page.get_by_role("heading", name="Past digests").wait_for()
    check_reading_page(page, artifacts, "archive")
    page.get_by_role("link", name="Weekly digest: Week of 16 November 2026").click()
    page.wait_for_load_state("load")
    assert page.url == live.url(f"/archive/{issue['id']}/all")

    awkward = tmp_path / "awkward.md"  # long unbroken words and URLs, a list, a link: must still fit a phone
    awkward.write_text(AWKWARD_SUMMARY, encoding="utf-8")
    ctx.store.upsert_summaries(read_sources([str(awkward)]))
    for slug in [*slugs, "awkward-layout-check"]:
        response = page.goto(live.url(f"/summaries/{slug}"))
        assert response.status == 200
        assert "script-src" not in response.headers["content-security-policy"]
        check_reading_page(page, artifacts, "summary" if slug == slugs[0] else "summary-other")
    assert [u for u in requests_seen if not u.startswith(live.base)] == []


def test_the_axe_check_does_find_a_serious_violation(page):
    page.set_content('<html><body><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><a href="#"></a></body></html>')
    assert {v["id"] for v in axe_violations(page)} >= {"image-alt", "link-name"}
