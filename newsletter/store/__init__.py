"""The only package that writes the database: one module per table group, composed on one connection.

Everything else reads through the query methods here or receives plain dicts.
The file runs in WAL mode with a busy timeout so cron jobs and the web app can
share it; migrations are named, recorded and applied on open.
"""

from __future__ import annotations

from .connection import Tables, decode_topics, now_iso
from .events import Events
from .feeds import NOTICE_AFTER, Feeds
from .issues import TRANSITIONS, Issues, may_send
from .ledger import Ledger
from .migrations import migrations
from .reports import Reports
from .subscribers import Subscribers, email_hash
from .summaries import SUMMARY_FIELDS, ImportCounts, Summaries, content_hash


class Store(Feeds, Summaries, Subscribers, Issues, Ledger, Events, Reports, Tables):
    """All table groups on one connection (a transaction may span groups)."""


__all__ = ["NOTICE_AFTER", "SUMMARY_FIELDS", "TRANSITIONS", "Events", "Feeds", "ImportCounts", "Issues", "Ledger",
           "Reports", "Store", "Subscribers", "Summaries", "Tables", "content_hash", "decode_topics", "email_hash", "may_send", "migrations", "now_iso"]
