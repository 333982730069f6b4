"""The editors' workspace in headless Chromium over a real socket: an admin finds a subscriber, changes the segment
and sees it in the audit log; an author sees no approve button and a forged approval gets 403. axe-core checks
each new page (no serious or critical violation), with the same checks as tests/test_web_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from tests.test_web_browser import DESKTOP, PASSWORD, PHONE, audit, serving

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
#: Run in the page after axe-core's source: the serious and critical violations, one line each.
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.filter(v => ['serious', 'critical'].includes(v.impact))
    .map(v => `${v.id} (${v.impact}): ${v.nodes.map(n => n.target.join(' ')).join(', ')}`);
}"""
#: How many pixels of an <img> are neither white nor grey, drawn onto a canvas (same origin: not tainted).
COLOURED_PIXELS = """img => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40) n++;
  }
  return n;
}"""
HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


def axe_check(page) -> None:
    """axe-core, evaluated through the DevTools protocol: the pages' CSP forbids every script of their own."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run tests/setup.sh (npm ci --prefix tests/node)")
    page.evaluate(AXE.read_text(encoding="utf-8"))
    violations = page.evaluate(AXE_RUN)
    assert violations == [], f"{page.url}: {violations}"
    audit(page)


@pytest.fixture
def staff(make_site):
    """The app on a loopback port with an admin (alice) and an author (ann), drafts waiting for approval."""
    editors = {"alice": {"hash": HASH, "role": "admin"}, "ann": {"hash": HASH, "role": "author"}}
    with serving(make_site, editors) as live:
        yield live


def log_in(page, live, name: str) -> None:
    page.goto(live.url("/editor/login"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.get_by_role("heading", name="Issues").wait_for()


def test_an_admin_finds_a_subscriber_changes_the_segment_and_sees_it_in_the_audit_log(staff, page, artifacts):
    store = staff.ctx.store
    person = next(s for s in store.subscribers(status="active") if s["segment"] == "patients")
    piece = person["email"].split("@")[0][1:5]  # a part from inside the address, not its start
    page.set_viewport_size(DESKTOP)
    log_in(page, staff, "alice")
    page.get_by_role("link", name="Subscribers").click()
    page.get_by_role("heading", name="Subscribers").wait_for()
    axe_check(page)
    page.get_by_label("Address or part of it").fill(piece)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=person["email"]).wait_for()
    axe_check(page)
    page.screenshot(path=str(artifacts / "web-editor-subscribers.png"), full_page=True)
    page.get_by_role("link", name=person["email"]).click()
    page.get_by_role("heading", name=person["email"]).wait_for()
    axe_check(page)
    page.get_by_role("group", name="Segment").get_by_label(staff.ctx.segments["clinicians"].display_name).check()
    page.get_by_role("button", name="Save preferences").click()
    page.get_by_text("Saved: segment changed.").wait_for()
    assert store.get_subscriber(id=person["id"])["segment"] == "clinicians"
    page.screenshot(path=str(artifacts / "web-editor-subscriber.png"), full_page=True)
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("heading", name="Audit log").wait_for()
    row = page.locator("tbody tr").filter(has_text="subscriber.preferences")
    assert row.count() == 1
    text = row.inner_text()
    assert "alice" in text and f"subscriber:{person['id']}" in text and "patients → clinicians" in text
    axe_check(page)
    page.screenshot(path=str(artifacts / "web-editor-audit.png"), full_page=True)
    page.set_viewport_size(PHONE)  # the new pages fit a phone too
    for path in ("/editor/subscribers", f"/editor/subscribers/{person['id']}", "/editor/audit", "/editor/editors"):
        page.goto(staff.url(path))
        axe_check(page)


def test_an_author_cannot_approve_no_button_and_a_forged_post_gets_403(staff, page):
    store = staff.ctx.store
    issue = store.issues()[0]
    page.set_viewport_size(DESKTOP)
    log_in(page, staff, "ann")
    assert page.get_by_role("link", name="Subscribers").count() == 0
    page.get_by_role("link", name=f"Issue {issue['id']}", exact=True).click()
    page.get_by_role("heading", level=1).wait_for()
    assert page.get_by_role("button", name="Approve for sending").count() == 0
    assert page.get_by_role("button", name="Send test").count() == 1
    axe_check(page)
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    forged = page.request.post(staff.url(f"/editor/issues/{issue['id']}/approve"), form={"csrf_token": token})
    assert forged.status == 403
    assert store.get_issue(issue["id"])["status"] == "draft"
    assert page.request.get(staff.url("/editor/subscribers")).status == 403


def test_two_step_enrolment_page_shows_an_inline_qr_code_and_passes_axe(staff, page, artifacts):
    page.set_viewport_size(PHONE)
    log_in(page, staff, "ann")
    page.get_by_role("link", name="My account").click()
    page.get_by_role("button", name="Set up two-step login").click()
    qr = page.locator("svg.qr")
    qr.wait_for()
    assert qr.bounding_box()["width"] > 100
    axe_check(page)
    page.screenshot(path=str(artifacts / "web-editor-2fa-enrol-phone.png"), full_page=True)


def test_an_approver_reads_the_reports_page_its_charts_render_without_script(make_site, page, artifacts):
    from newsletter.digest import DigestRunner
    from newsletter.messengers import messenger_from_config
    from tests.conftest import SAMPLE_NOW
    from tests.test_web_browser import serving

    with serving(make_site, {"abe": {"hash": HASH, "role": "approver"}}) as live:
        ctx = live.ctx
        for issue in ctx.store.issues(status="draft"):
            ctx.store.set_issue_status(issue["id"], "approved")
        DigestRunner(ctx.config, ctx.store, ctx.segments,
                     messenger_factory=lambda: messenger_from_config(ctx.config)).run(None, SAMPLE_NOW)
        scripts: list[str] = []
        page.on("request", lambda r: scripts.append(r.url) if r.resource_type == "script" else None)
        page.set_viewport_size(DESKTOP)
        log_in(page, live, "abe")
        page.get_by_role("link", name="Reports").click()
        page.get_by_role("heading", name="Reports", level=1).wait_for()
        charts = page.locator("figure.chart img")
        assert charts.count() == 2
        for i in range(2):
            size = charts.nth(i).evaluate(
                "img => img.decode().then(() => [img.complete, img.naturalWidth, img.naturalHeight])")
            assert size == [True, 768, 384], size  # the SVG decoded at its own size
            assert charts.nth(i).evaluate(COLOURED_PIXELS) > 500  # and drew bars, not a blank box
        assert page.locator("script").count() == 0 and scripts == []
        assert page.locator("tbody tr").count() >= len(ctx.store.issues(status="sent"))
        axe_check(page)
        page.screenshot(path=str(artifacts / "web-editor-reports.png"), full_page=True)
        svg = page.request.get(live.url("/editor/reports/issues.svg"))
        assert svg.status == 200 and b"<script" not in svg.body()
        page.set_viewport_size(PHONE)
        page.reload()
        axe_check(page)
