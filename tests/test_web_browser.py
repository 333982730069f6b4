"""The web app in headless Chromium, served over a real socket on 127.0.0.1.

A person subscribes (with the keyboard only), confirms from the link in the
Maildir outbox, changes preferences and unsubscribes; an editor logs in,
previews an issue at desktop and phone widths and approves it. Every page is
checked for labels, one h1, text contrast and fitting a phone screen, and
nothing is fetched from anywhere but the app. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import re
import time
import threading

import pytest
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from newsletter.digest import DigestRunner
from newsletter.web import create_app
from tests.conftest import SAMPLE_NOW, load_samples

pytestmark = pytest.mark.browser

EDITOR, PASSWORD = "alice", "correct horse battery staple"
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1440, "height": 1000}

#: Runs in the page: WCAG checks that need the browser's computed styles.
AUDIT_JS = """
() => {
  const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = el => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) return c; } return [255, 255, 255, 1]; };
  const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 1 && r.height > 1 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const problems = [];
  for (const el of document.body.querySelectorAll('*')) {
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent.trim()).join('');
    if (!text || !visible(el)) continue;
    const s = getComputedStyle(el);
    const fg = parse(s.color), bg = background(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: ${el.tagName} "${text.slice(0, 40)}"`);
  }
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!el.labels.length && !el.getAttribute('aria-label')) problems.push(`unlabelled ${el.outerHTML.slice(0, 80)}`);
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (visible(el) && !el.textContent.trim() && !el.getAttribute('aria-label')) problems.push(`nameless ${el.outerHTML.slice(0, 80)}`);
  }
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  if (!document.documentElement.lang) problems.push('no lang');
  if (!document.title.trim()) problems.push('no title');
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push(
    `wider than the screen: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
  return problems;
}
"""


class Live:
    def __init__(self, ctx, base: str):
        self.ctx, self.base = ctx, base

    def url(self, path: str) -> str:
        return self.base + path


@contextlib.contextmanager
def serving(make_site, editors: dict):
    """The app on a free loopback port, its site_url the real address, drafts waiting for approval."""
    ctx = make_site("live", require_approval="yes")
    load_samples(ctx)
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW, send=False)
    holder = {}
    server = make_server("127.0.0.1", 0, lambda environ, start: holder["app"](environ, start), threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    holder["app"] = create_app(ctx.config, site_url=base, editors=editors)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(ctx, base)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def live(make_site):
    with serving(make_site, {EDITOR: generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")}) as running:
        yield running


@pytest.fixture
def requests_seen(page) -> list[str]:
    seen: list[str] = []
    page.context.on("request", lambda request: seen.append(request.url))
    return seen


def audit(page) -> None:
    problems = page.evaluate(AUDIT_JS)
    assert problems == [], f"{page.url}: {problems}"


def focused(page) -> dict:
    return page.evaluate("() => { const e = document.activeElement; return {tag: e.tagName, id: e.id, "
                         "type: e.type || '', value: e.value || '', text: e.textContent.trim().slice(0, 40), "
                         "cls: e.className}; }")


def tab_to(page, match, limit: int = 60) -> dict:
    for _ in range(limit):
        page.keyboard.press("Tab")
        current = focused(page)
        if match(current):
            return current
    raise AssertionError(f"Tab never reached the element (last: {focused(page)})")


def confirmation_link(ctx, address: str, wait: float = 10.0) -> str:
    """The link in the confirmation to `address`; it is handed over after the answer, so it may take a moment."""
    deadline = time.monotonic() + wait
    while True:
        box = mailbox.Maildir(ctx.config.outbox, create=True)
        for key in box.keys():
            msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            if msg["To"].addresses[0].addr_spec == address:
                return re.search(r"(http://\S+/confirm/\S+)", msg.get_body(("plain",)).get_content()).group(1)
        if time.monotonic() > deadline:
            raise AssertionError(f"no confirmation email to {address} in {ctx.config.outbox}")
        time.sleep(0.05)


def test_a_person_subscribes_confirms_changes_preferences_and_unsubscribes(live, page, requests_seen, artifacts):
    store = live.ctx.store
    address = "new.reader@example.org"
    page.set_viewport_size(PHONE)
    page.goto(live.url("/"))
    audit(page)
    page.screenshot(path=str(artifacts / "web-subscribe-phone.png"), full_page=True)

    # Keyboard only: skip link, then every field, then the button.
    skip = tab_to(page, lambda f: True, limit=1)
    assert "skip" in skip["cls"]
    assert page.locator("a.skip").bounding_box()["x"] >= 0  # shown when focused
    page.keyboard.press("Enter")
    tab_to(page, lambda f: f["id"] == "email")
    page.keyboard.type(address)
    tab_to(page, lambda f: f["id"] == "segment-1")
    page.keyboard.press("ArrowDown")  # arrow keys move the choice within a radio group
    assert page.locator("#segment-2").is_checked()
    tab_to(page, lambda f: f["id"] == "cadence-1")
    page.keyboard.press("ArrowDown")
    assert page.locator("#cadence-2").is_checked()
    tab_to(page, lambda f: f["type"] == "checkbox" and f["value"] == "NMOSD")
    page.keyboard.press("Space")
    tab_to(page, lambda f: f["id"] == "consent")
    page.keyboard.press("Space")
    tab_to(page, lambda f: f["id"] == "consent_health")
    page.keyboard.press("Space")
    tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "Subscribe")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Check your inbox").wait_for()
    audit(page)

    sub = store.get_subscriber(address)
    assert (sub["status"], sub["segment"], sub["cadence"], sub["topics"]) == ("pending", "caregivers", "monthly",
                                                                               ["NMOSD"])

    link = confirmation_link(live.ctx, address)
    assert link.startswith(live.base)
    page.goto(link)
    audit(page)
    page.screenshot(path=str(artifacts / "web-confirm-phone.png"), full_page=True)
    assert store.get_subscriber(address)["status"] == "pending"  # opening the link alone confirms nothing
    page.get_by_role("button", name="Yes, subscribe me").click()
    page.get_by_role("heading", name="Thank you: you are subscribed").wait_for()
    assert store.get_subscriber(address)["status"] == "active"

    page.get_by_role("link", name="Change what you receive").click()
    page.get_by_role("heading", name="Your preferences").wait_for()
    audit(page)
    page.get_by_label("Every week").check()
    page.get_by_label("MOGAD").check()
    page.get_by_role("button", name="Save preferences").click()
    page.get_by_text("Your preferences are saved.").wait_for()
    audit(page)
    page.screenshot(path=str(artifacts / "web-preferences-phone.png"), full_page=True)
    sub = store.get_subscriber(address)
    assert (sub["cadence"], sub["topics"]) == ("weekly", ["MOGAD", "NMOSD"])

    page.get_by_role("link", name="Unsubscribe").click()
    page.get_by_role("heading", name="Unsubscribe").wait_for()
    audit(page)
    assert store.get_subscriber(address)["status"] == "active"  # the page alone unsubscribes nobody
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    audit(page)
    page.screenshot(path=str(artifacts / "web-unsubscribed-phone.png"), full_page=True)
    assert store.get_subscriber(address)["status"] == "unsubscribed"

    # The mail client's RFC 8058 one-click POST, for a reader who is still subscribed.
    other = store.subscribers(status="active")[0]
    from newsletter.tokens import Tokens
    token = Tokens(live.ctx.config.require_secret()).sign("unsubscribe", other["id"])
    response = page.request.post(live.url(f"/u/{token}"), form={"List-Unsubscribe": "One-Click"})
    assert response.status == 200
    assert store.get_subscriber(other["email"])["status"] == "unsubscribed"

    assert [u for u in requests_seen if not u.startswith(live.base)] == []


def test_an_editor_logs_in_previews_an_issue_at_both_widths_and_approves_it(live, page, requests_seen, artifacts):
    store = live.ctx.store
    issue = store.issues()[0]
    page.set_viewport_size(DESKTOP)
    page.goto(live.url("/editor/"))
    page.get_by_role("heading", name="Editors: log in").wait_for()
    audit(page)
    page.get_by_label("Name").fill(EDITOR)
    page.get_by_label("Password").fill("not the password")
    page.get_by_label("Password").press("Enter")
    page.get_by_text("Wrong name or password.").wait_for()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.get_by_role("heading", name="Issues").wait_for()
    audit(page)
    page.screenshot(path=str(artifacts / "web-editor-issues.png"), full_page=True)

    page.get_by_role("link", name=f"Issue {issue['id']}", exact=True).click()
    page.get_by_role("heading", level=1).wait_for()
    frames = page.locator("iframe")
    assert frames.count() == 2
    page.wait_for_load_state("load")
    boxes = [frames.nth(i).bounding_box() for i in range(2)]
    assert sorted(round(b["width"]) for b in boxes) == [377, 642]  # 375 and 640 plus the 1 px border
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 1, "the two widths should sit side by side on a desktop"
    subject = store.issue_summaries(issue["id"])[0]["title"]
    email_frames = [f for f in page.frames if f.url.endswith(f"/editor/issues/{issue['id']}/email.html")]
    assert len(email_frames) == 2
    for frame in email_frames:
        frame.wait_for_load_state("load")
        text = frame.evaluate("() => document.body.innerText")
        assert subject.split(":")[0] in text
        assert "Hello Alex," in text
    phone = min(email_frames, key=lambda f: f.evaluate("() => window.innerWidth"))
    assert phone.evaluate("() => window.innerWidth") == 375
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 375, "the email scrolls sideways on a phone"
    plain = page.locator("pre.plain").inner_text()
    assert "Hello Alex," in plain and "Unsubscribe:" in plain
    audit(page)
    page.screenshot(path=str(artifacts / "web-editor-issue-preview.png"), full_page=True)
    frames.nth(0).screenshot(path=str(artifacts / "web-editor-issue-desktop-frame.png"))
    frames.nth(1).screenshot(path=str(artifacts / "web-editor-issue-phone-frame.png"))

    assert store.get_issue(issue["id"])["status"] == "draft"
    tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "Approve for sending", limit=80)
    page.keyboard.press("Enter")
    page.get_by_text(f"Issue {issue['id']} is approved").wait_for()
    assert store.get_issue(issue["id"])["status"] == "approved"
    assert page.get_by_role("button", name="Approve for sending").count() == 0
    audit(page)
    page.screenshot(path=str(artifacts / "web-editor-issue-approved.png"), full_page=True)

    page.set_viewport_size(PHONE)  # the editors' pages work on a phone too
    page.goto(live.url("/editor/"))
    audit(page)

    assert [u for u in requests_seen if not u.startswith(live.base)] == []
