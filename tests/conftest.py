"""Shared fixtures: a fresh site (config + SQLite file) per test, a CLI runner, clean environment.

Fixtures that start real servers (SMTP, Prism) and the browser live in their
own modules, listed in pytest_plugins.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from newsletter import bootstrap
from newsletter.context import Context
from newsletter.sources.subscribers import read_csv
from newsletter.sources.summaries import read_sources
from newsletter.settings import load_config

pytest_plugins = ["tests.fixtures_servers", "tests.fixtures_browser", "tests.fixtures_postfix"]

# Property-based tests: a fixed, repeatable profile by default (CI); HYPOTHESIS_PROFILE=long for a deeper
# local search (README, "Tests").
settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SECRET = "test-secret-not-for-production"


def delivery_of(message) -> int:
    """The delivery a sent message names in X-Newsletter-Delivery (its signed tag, `id-mac`)."""
    return int(str(message["X-Newsletter-Delivery"]).partition("-")[0])


def tag_of(ctx, delivery_id: int) -> str:
    """The signed tag a site puts in its messages for a delivery (model.delivery_tag)."""
    from newsletter.model import delivery_tag, delivery_tag_key
    return delivery_tag(delivery_tag_key(ctx.config.secret), delivery_id)
POSTAL = "MS Research Digest, 1 Test Street, Testville, USA"
#: The morning after the newest bundled sample summary (2026-11-19).
SAMPLE_NOW = datetime.fromisoformat("2026-11-20T07:00:00")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_") or name == "SENDGRID_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)


@pytest.fixture
def make_site(tmp_path):
    """A new site directory with a newsletter.toml; returns a Context for it."""
    made = []

    def make(name: str = "site", **overrides) -> Context:
        settings = {"postal_address": POSTAL, "require_approval": "no", "site_url": "https://digest.example.org",
                    **overrides}
        result = bootstrap.init(tmp_path / name, settings)
        ctx = Context(load_config(result.config_path))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def site(make_site) -> Context:
    return make_site()


def load_samples(ctx: Context) -> None:
    ctx.store.upsert_summaries(read_sources(bootstrap.sample_summary_files()))
    with bootstrap.sample_subscribers_csv().open(encoding="utf-8") as fh:
        records = read_csv(fh, ctx.segments).good
    # the samples come with their consent, as a real list must for smtp and sendgrid to send to it
    ctx.store.upsert_subscribers_with_consent([{**r, "consent": {"method": "import", "basis": "the bundled samples"}}
                                               for r in records])


@pytest.fixture
def loaded(site) -> Context:
    load_samples(site)
    return site


def read_maildir(path: str | Path) -> list[email.message.EmailMessage]:
    """Every message in a Maildir, parsed with the modern email API (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    box = mailbox.Maildir(str(path), factory=None, create=False)
    try:
        return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default) for key in box.keys()]
    finally:
        box.close()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
