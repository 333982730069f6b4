"""The only package that writes the database: one module per table group, composed on one connection.

Everything else reads through the query methods here or receives plain dicts.
The file runs in WAL mode with a busy timeout so cron jobs and the web app can
share it; migrations are named, recorded and applied on open.
"""

from __future__ import annotations

from .connection import Tables, decode_topics, now_iso
from .consent import CONSENT_METHODS, Consent
from .events import Events
from .issues import TRANSITIONS, Issues, may_send, reading_hold
from .ledger import Ledger
from .migrations import migrations
from .subscribers import Subscribers, email_hash
from .summaries import SUMMARY_FIELDS, ImportCounts, Summaries, content_hash


class Store(Summaries, Consent, Subscribers, Issues, Ledger, Events, Tables):
    """All table groups on one connection (a transaction may span groups)."""


__all__ = ["CONSENT_METHODS", "Consent", "SUMMARY_FIELDS", "TRANSITIONS", "Events", "ImportCounts", "Issues",
           "Ledger", "Store", "Subscribers", "Summaries", "Tables", "reading_hold", "content_hash", "decode_topics", "email_hash", "may_send", "migrations", "now_iso"]
