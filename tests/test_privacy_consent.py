"""Consent that says what it covers, recorded on every path (form, CSV import, CLI), each with its wording kept;
a data download that carries every column of every table that refers to the person; the privacy page."""

from __future__ import annotations

import html as htmllib
import json
import re
import sqlite3

from newsletter.cli import cli
from newsletter.web.consent import Wording
from newsletter.web.privacy import person_export
from tests.test_web import (active_subscriber, app, client, clock, csrf_from, drafts, make_app,  # noqa: F401
                            mails_to, subscribe, text_of)


def confirm_by_link(client, drafts, address: str):  # noqa: F811
    [msg] = mails_to(drafts, address)
    path = re.search(r"https://digest\.example\.org(/confirm/\S+)", text_of(msg)).group(1)
    page = client.get(path)
    shown = " ".join(htmllib.unescape(page.get_data(as_text=True)).split())
    assert Wording.from_config(drafts.config).health in shown  # the confirm page restates what the choice reveals
    return client.post(path, data={"csrf_token": csrf_from(page)})


def test_the_form_records_consent_with_the_wording_shown_and_no_address_by_default(client, drafts):  # noqa: F811
    html = htmllib.unescape(client.get("/").get_data(as_text=True))
    wording = Wording.from_config(drafts.config)
    assert wording.health in " ".join(html.split()) and wording.email in " ".join(html.split())
    assert subscribe(client, email="form@example.org").status_code == 200
    sub = drafts.store.get_subscriber("form@example.org")
    assert drafts.store.consent_records(sub["id"]) == []  # nothing until the address itself confirms
    assert confirm_by_link(client, drafts, "form@example.org").status_code == 200
    [record] = drafts.store.consent_records(sub["id"])
    assert (record["method"], record["wording_version"], record["ip"]) == ("form", wording.version, None)
    assert record["opted_in_at"]
    [kept] = drafts.store.query("SELECT * FROM consent_wordings")
    assert kept["version"] == wording.version and kept["text"] == wording.text


def test_record_consent_ip_keeps_the_address_and_an_edited_wording_is_a_new_version(make_site, make_app, tmp_path):  # noqa: F811
    templates = tmp_path / "own-templates"
    templates.mkdir()
    (templates / "consent.txt").write_text("Send me {{ site_name }}.\n\nMy group says something about my health.\n",
                                           encoding="utf-8")
    ctx = make_site("own", record_consent_ip=True, templates_dir=str(templates))
    web = make_app(ctx).test_client()
    assert subscribe(web, email="ip@example.org", topics=None).status_code == 200
    assert confirm_by_link(web, ctx, "ip@example.org").status_code == 200
    [record] = ctx.store.consent_records(ctx.store.get_subscriber("ip@example.org")["id"])
    assert record["ip"] == "127.0.0.1"
    assert record["wording_version"] != Wording.from_config(ctx.config.replace(templates_dir="")).version
    [kept] = ctx.store.query("SELECT text FROM consent_wordings")
    assert kept["text"] == "Send me MS Research Digest.\n\nMy group says something about my health."


def test_csv_and_cli_record_their_consent(site, runner, tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text("email,segment\ncsv@example.org,patients\n", encoding="utf-8")
    config = ["--config", str(site.config.source)]
    imported = runner.invoke(cli, [*config, "subscribers", "import", str(csv), "--consent-basis", "paper form 2025"])
    assert imported.exit_code == 0, imported.output
    added = runner.invoke(cli, [*config, "subscribers", "add", "cli@example.org", "--segment", "clinicians",
                                "--consent-basis", "asked at a clinic"])
    assert added.exit_code == 0, added.output
    for address, method, basis in (("csv@example.org", "import", "paper form 2025"),
                                   ("cli@example.org", "cli", "asked at a clinic")):
        [record] = site.store.consent_records(site.store.get_subscriber(address)["id"])
        assert (record["method"], record["basis"]) == (method, basis)


def test_the_data_download_carries_every_column_of_every_table_that_refers_to_the_person(drafts):  # noqa: F811
    sub = active_subscriber(drafts)
    store = drafts.store
    store.record_consent(sub["id"], "cli", "paper form 2025")
    store.record_event("sendgrid", {"event_id": "e1", "type": "open", "email": sub["email"], "subscriber_id": sub["id"]})
    # a column added later, by anyone, is in the download without a change to the export
    store.conn.execute("ALTER TABLE consent_records ADD COLUMN added_later TEXT DEFAULT 'new column'")
    raw = sqlite3.connect(drafts.config.database)
    try:
        expected = {}
        for (table,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            columns = [r[1] for r in raw.execute(f"PRAGMA table_info('{table}')")]
            if {"subscriber_id", "email"} & set(columns) and not table.startswith("subscriber_search"):
                expected[table] = columns
    finally:
        raw.close()
    assert {"subscribers", "deliveries", "events", "consent_records", "bounce_reports", "soft_bounces",
            "manual_suppressions"} <= set(expected)
    data = json.loads(json.dumps(person_export(drafts.config, store, sub), default=str))
    for table, columns in expected.items():
        assert table in data["tables"], f"{table}: refers to subscribers but is not in the data download"
        for row in data["tables"][table]:
            assert list(row) == columns, f"{table}: a column is missing from the data download"
    assert data["tables"]["consent_records"][0]["added_later"] == "new column"
    assert data["tables"]["events"] and data["subscriber"]["email"] == sub["email"]
    assert data["shared_with"] == []  # the maildir backend hands nothing to anyone


def test_the_privacy_page_is_built_from_the_settings_and_linked_from_every_page(make_site, make_app):  # noqa: F811
    ctx = make_site("pp", backend="sendgrid", privacy_contact="privacy@example.org", retention_events_days=30,
                    track_clicks=True)
    web = make_app(ctx).test_client()
    html = " ".join(web.get("/privacy").get_data(as_text=True).split())
    for needed in ("privacy@example.org", "1 Test Street", "30 days", "SendGrid", "which links you click",
                   "valid for 1 hour"):
        assert needed in html, needed
    assert 'href="/privacy"' in web.get("/").get_data(as_text=True)
    assert 'href="/privacy"' in web.get("/archive").get_data(as_text=True)


def test_the_real_backends_skip_readers_without_consent_unless_the_list_predates_it(make_site, prism, runner,
                                                                                   monkeypatch):
    from newsletter.digest import DigestRunner
    from newsletter.dispatch import NO_CONSENT
    from tests.conftest import SAMPLE_NOW, load_samples
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    ctx = make_site("gate", backend="sendgrid", sendgrid_host=prism.url)
    load_samples(ctx)  # with their consent
    ctx.store.upsert_subscribers([{"email": "old-list@example.org", "segment": "patients", "status": "active"}])
    status = runner.invoke(cli, ["--config", str(ctx.config.source), "status"])
    assert "Without consent: 1 active subscriber(s)" in status.output
    DigestRunner(ctx.config, ctx.store, ctx.segments).run("weekly", SAMPLE_NOW)
    rows = {r["email"]: r for r in ctx.store.deliveries()}
    assert (rows["old-list@example.org"]["status"], rows["old-list@example.org"]["error"]) == ("skipped", NO_CONSENT)
    assert {r["status"] for e, r in rows.items() if e != "old-list@example.org"} <= {"sent", "skipped"}
    assert any(r["status"] == "sent" for r in rows.values())

    legacy = make_site("legacy", backend="sendgrid", sendgrid_host=prism.url, legacy_consent=True)
    load_samples(legacy)
    legacy.store.upsert_subscribers([{"email": "old-list@example.org", "segment": "patients", "status": "active"}])
    assert "Without consent" not in runner.invoke(cli, ["--config", str(legacy.config.source), "status"]).output
    DigestRunner(legacy.config, legacy.store, legacy.segments).run("weekly", SAMPLE_NOW)
    assert {r["email"]: r for r in legacy.store.deliveries()}["old-list@example.org"]["status"] == "sent"


def test_the_data_download_names_who_each_message_went_to_not_todays_backend(make_site, smtp_server, runner):
    """Sent through a relay, then the site moved to SendGrid: the download still says the relay had them."""
    from tests.conftest import SAMPLE_NOW, load_samples
    ctx = make_site(backend="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                    legacy_consent=True)
    load_samples(ctx)
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "digest", "run", "--cadence", "weekly",
                                 "--now", SAMPLE_NOW.isoformat()], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sub = next(s for s in ctx.store.subscribers(status="active")
               if any(d["status"] == "sent" for d in ctx.store.deliveries() if d["subscriber_id"] == s["id"]))
    config = ctx.config.replace(backend="sendgrid")
    assert config.backend == "sendgrid"
    [entry] = person_export(config, ctx.store, sub)["shared_with"]
    assert entry["with"] == f"the mail relay {smtp_server.host}" and "note" not in entry
    assert entry["messages"] == 1
    # An issue sent before processors were noted falls under today's backend, and says so.
    ctx.store.conn.execute("DELETE FROM issue_processors")
    [assumed] = person_export(config, ctx.store, sub)["shared_with"]
    assert assumed["with"].startswith("SendGrid") and "assumed" in assumed["note"]
