"""The only package that writes the database: one module per table group, composed on one connection.

Everything else reads through the query methods here or receives plain dicts.
The file runs in WAL mode with a busy timeout so cron jobs and the web app can
share it; migrations are named, recorded and applied on open.
"""

from __future__ import annotations

from .connection import Tables, decode_topics, now_iso
from .editor_sessions import EditorSessions
from .events import Events
from .issues import TRANSITIONS, Issues, may_send
from .ledger import Ledger
from .migrations import migrations
from .reading import Reading
from .signups import NOT_BY_LINK, Signups
from .subscribers import Subscribers, email_hash
from .summaries import SUMMARY_FIELDS, ImportCounts, Summaries, content_hash
from .throttles import Attempt, Limit, Throttles
from .welcomes import Welcomes


class Store(Summaries, Subscribers, Signups, Issues, Ledger, Events, Throttles, EditorSessions, Reading, Welcomes,
            Tables):
    """All table groups on one connection (a transaction may span groups)."""


__all__ = ["NOT_BY_LINK", "SUMMARY_FIELDS", "TRANSITIONS", "Attempt", "EditorSessions", "Events", "ImportCounts",
           "Issues", "Ledger", "Limit", "Reading", "Signups", "Store", "Subscribers", "Summaries", "Tables", "Throttles",
           "Welcomes", "content_hash", "decode_topics", "email_hash", "may_send", "migrations", "now_iso"]
