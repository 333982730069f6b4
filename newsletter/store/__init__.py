"""The only package that writes the database: one module per table group, composed on one connection.

Everything else reads through the query methods here or receives plain dicts.
The file runs in WAL mode with a busy timeout so cron jobs and the web app can
share it; migrations are named, recorded and applied on open.
"""

from __future__ import annotations

from .audit import AuditLog
from .connection import Tables, decode_topics, now_iso
from .directory import Directory, Refused, next_string, search_key, subscriber_target
from .editor_secrets import EditorSecrets
from .editor_sessions import EditorSessions
from .events import Events
from .issues import TRANSITIONS, Issues, may_send
from .ledger import Ledger
from .migrations import migrations
from .signups import NOT_BY_LINK, Signups
from .subscribers import Subscribers, email_hash
from .summaries import SUMMARY_FIELDS, ImportCounts, Summaries, content_hash
from .throttles import Attempt, Limit, Throttles


class Store(Summaries, Directory, Subscribers, Signups, Issues, Ledger, Events, Throttles, EditorSessions,
            EditorSecrets, AuditLog, Tables):
    """All table groups on one connection (a transaction may span groups)."""


__all__ = ["NOT_BY_LINK", "SUMMARY_FIELDS", "TRANSITIONS", "Attempt", "AuditLog", "Directory", "EditorSecrets",
           "EditorSessions", "Events", "ImportCounts", "Issues", "Ledger", "Limit", "Refused", "Signups", "Store",
           "Subscribers", "Summaries", "Tables", "Throttles", "content_hash", "decode_topics", "email_hash",
           "may_send", "migrations", "next_string", "now_iso", "search_key", "subscriber_target"]
