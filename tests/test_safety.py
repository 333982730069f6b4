"""Operator safety: the run lock, last-moment suppression checks, retries the operator asks for,
ids never reused, and one-line errors for bad input."""

from __future__ import annotations

import os
import threading
import time

import pytest

from newsletter.cli import cli
from newsletter.digest import DigestRunner, run_lock
from newsletter.messengers import messenger_from_config
from newsletter.messengers.counting import CountingMessenger
from newsletter.settings import ConfigError, load_config

from .conftest import SAMPLE_NOW


def runner_for(ctx, messenger=None, **kw):
    return DigestRunner(ctx.config, ctx.store, ctx.segments,
                        messenger_factory=lambda: messenger or messenger_from_config(ctx.config), **kw)


def hold_lock(path, seconds):
    ready = threading.Event()

    def hold():
        with run_lock(path):
            ready.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    return thread


def test_a_build_queues_behind_a_run_holding_the_lock(loaded):
    runner = runner_for(loaded)
    holder = hold_lock(runner.lock_path, 1.0)
    report = runner.run("weekly", SAMPLE_NOW, lock_wait=10)
    holder.join()
    assert len(report.created) == 3 and report.tally.sent > 0


def test_a_build_that_cannot_get_the_lock_fails_and_a_send_only_run_steps_aside(loaded, runner):
    config = str(loaded.config.source)
    holder = hold_lock(runner_for(loaded).lock_path, 3.0)
    try:
        build = runner.invoke(cli, ["--config", config, "digest", "run", "--now", SAMPLE_NOW.isoformat(),
                                    "--lock-wait", "0.3"])
        send_only = runner.invoke(cli, ["--config", config, "digest", "run", "--send-only"])
    finally:
        holder.join()
    assert build.exit_code == 1 and "holds the lock" in build.output
    assert send_only.exit_code == 0 and "holds the lock" in send_only.output
    assert loaded.store.issues() == []


class RecordingMessenger(CountingMessenger):
    """Counts, and keeps whom each batch was for."""

    def __init__(self):
        super().__init__()
        self.subscriber_ids: list[int] = []

    def send(self, rendered, envelopes):
        self.subscriber_ids += [env.subscriber_id for env in envelopes]
        return super().send(rendered, envelopes)


def test_someone_who_unsubscribes_while_their_message_is_buffered_is_skipped(loaded):
    messenger = RecordingMessenger()
    runner = runner_for(loaded, messenger)
    leaving = loaded.store.subscribers(segment="patients", status="active")[0]
    original = runner.variant_renderer

    def variant_renderer(issue, test=False):
        variant_for = original(issue, test)

        def unsubscribe_then_render(topics):
            # Rows were fetched as active; the person leaves before the batch is claimed.
            loaded.store.set_subscriber_status(leaving["id"], "unsubscribed")
            return variant_for(topics)
        return unsubscribe_then_render

    runner.variant_renderer = variant_renderer
    runner.run("weekly", SAMPLE_NOW)
    [row] = [d for d in loaded.store.deliveries() if d["subscriber_id"] == leaving["id"]]
    assert row["status"] == "skipped" and "no longer active" in row["error"]
    # the claim left them out, so the batch the messenger got did too; everyone else in it went
    sent = {d["subscriber_id"] for d in loaded.store.deliveries() if d["status"] == "sent"}
    assert leaving["id"] not in messenger.subscriber_ids and sorted(messenger.subscriber_ids) == sorted(sent)


def test_claim_for_sending_only_claims_active_subscribers(loaded):
    runner_for(loaded).run("weekly", SAMPLE_NOW, send=False)
    issue = loaded.store.issues()[0]
    loaded.store.set_issue_status(issue["id"], "approved", expect=["approved"])
    loaded.store.plan_deliveries(issue["id"])
    rows = loaded.store.deliveries(issue["id"])
    gone = rows[0]["subscriber_id"]
    loaded.store.set_subscriber_status(gone, "bounced")
    claimed = loaded.store.claim_for_sending([r["id"] for r in rows], "b1")
    assert claimed == {r["id"] for r in rows[1:]}
    statuses = {d["subscriber_id"]: d["status"] for d in loaded.store.deliveries(issue["id"])}
    assert statuses[gone] == "skipped" and set(statuses.values()) == {"skipped", "sending"}


def test_a_failed_editors_notice_does_not_hold_back_approved_issues(make_site):
    from tests.conftest import load_samples
    ctx = make_site("notices", require_approval="yes", editors_email="editors@example.org")
    load_samples(ctx)

    def broken_notice(drafts):
        raise ConnectionError("SMTP down")

    first = runner_for(ctx, on_drafts=broken_notice).run("weekly", SAMPLE_NOW)
    assert first.warnings and "SMTP down" in first.warnings[0]
    issue = ctx.store.issues()[0]
    ctx.store.set_issue_status(issue["id"], "approved", expect=["draft"])
    second = runner_for(ctx, on_drafts=broken_notice).run(None, SAMPLE_NOW)
    assert second.tally.sent > 0


class RefusingOnce(CountingMessenger):
    """Refuses the first batch it sees (a provider 4xx), accepts the rest."""

    def __init__(self):
        super().__init__()
        self.refused = False

    def send(self, rendered, envelopes):
        from newsletter.model import Outcome
        if not self.refused:
            self.refused = True
            return [Outcome("failed", [e.delivery_id for e in envelopes], error="refused for the test")]
        return super().send(rendered, envelopes)


def test_failed_deliveries_are_sent_again_only_when_asked(loaded):
    messenger = RefusingOnce()
    first = runner_for(loaded, messenger).run("weekly", SAMPLE_NOW)
    assert first.tally.failed > 0
    failed = {d["subscriber_id"] for d in loaded.store.deliveries(status="failed")}
    again = runner_for(loaded, messenger).run("weekly", SAMPLE_NOW)
    assert again.tally.sent == 0 and loaded.store.delivery_counts().get("failed") == len(failed)
    retried = runner_for(loaded, messenger).run(None, SAMPLE_NOW, retry_failed=True)
    assert retried.tally.sent == len(failed)
    assert "failed" not in loaded.store.delivery_counts()
    assert {i["status"] for i in loaded.store.issues()} == {"sent"}


def test_a_deleted_subscribers_id_is_never_given_to_someone_new(site):
    site.store.upsert_subscribers([{"email": f"p{i}@example.org", "segment": "patients", "status": "active"}
                                   for i in range(3)])
    last = site.store.get_subscriber("p2@example.org")
    site.store.remove_subscriber("p2@example.org")
    site.store.upsert_subscribers([{"email": "new@example.org", "segment": "patients", "status": "active"}])
    assert site.store.get_subscriber("new@example.org")["id"] > last["id"]


def test_bad_inputs_are_one_line_errors(loaded, runner, tmp_path):
    config = str(loaded.config.source)
    latin1 = tmp_path / "people.csv"
    latin1.write_bytes("email,segment,name\njose@example.org,patients,Jos\xe9\n".encode("latin-1"))
    cases = {
        ("subscribers", "import", str(latin1)): "encoding: not UTF-8",
        ("summaries", "import", "http://[::1"): "url: could not fetch",
        ("digest", "run", "--segment", "nobody", "--now", SAMPLE_NOW.isoformat()): "segment: unknown 'nobody'",
        ("summaries", "list", "--since", "yesterday"): "Invalid value for '--since'",
        ("subscribers", "list", "--status", "gone"): "Invalid value for '--status'",
    }
    for args, expected in cases.items():
        result = runner.invoke(cli, ["--config", config, *args])
        assert result.exit_code in (1, 2), (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_broken_template_override_names_the_file(make_site, runner, tmp_path):
    overrides = tmp_path / "broken" / "overrides"  # templates_dir must exist when the settings load
    overrides.mkdir(parents=True)
    ctx = make_site("broken", templates_dir="overrides")
    (overrides / "digest.txt").write_text("{% for card in cards %}\n{{ card.title }\n")
    from tests.conftest import load_samples
    load_samples(ctx)
    result = runner.invoke(cli, ["--config", str(ctx.config.source), "preview", "--now", SAMPLE_NOW.isoformat(),
                                 "--out", str(ctx.config.source.parent / "p")])
    assert result.exit_code == 1 and "digest.txt: line" in result.output and "Traceback" not in result.output


def test_a_bad_timezone_names_the_setting(tmp_path):
    (tmp_path / "newsletter.toml").write_text('timezone = "Mars/Base"\n')
    with pytest.raises(ConfigError, match=r"newsletter.toml: timezone: not an IANA time zone"):
        load_config(tmp_path / "newsletter.toml", env={})


def test_a_secret_file_readable_by_others_is_refused(make_site, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    ctx = make_site("leaky")
    secret_file = ctx.config.secret_file
    from newsletter.settings import write_secret_file
    write_secret_file(secret_file)
    assert ctx.config.secret
    os.chmod(secret_file, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        ctx.config.secret
