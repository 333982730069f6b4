"""The only package that writes the database: one module per table group, composed on one connection.

Everything else reads through the query methods here or receives plain dicts.
The file runs in WAL mode with a busy timeout so cron jobs and the web app can
share it; migrations are named, recorded and applied on open.
"""

from __future__ import annotations

from .audit import AuditLog
from .bounces import Bounces
from .compaction import Compaction
from .connection import DatabaseError, StoreError, Tables, decode_topics, describe, email_hash, now_iso
from .consent import CONSENT_METHODS, Consent
from .directory import Directory, Refused, next_string, search_key, subscriber_target
from .editor_secrets import EditorSecrets
from .editor_sessions import EditorSessions
from .events import Events
from .export import Export
from .feeds import NOTICE_AFTER, Feeds
from .notice_queue import NoticeQueue
from .issues import TRANSITIONS, Issues, may_send, reading_hold
from .ledger import NO_LONGER_ACTIVE, Ledger
from .schema import migrations
from .reading import Reading
from .reports import Reports
from .schedule import SCHEDULABLE, Schedule, due
from .retention import Retention
from .signups import NOT_BY_LINK, Signups
from .subscriber_import import ImportRefused, SubscriberImport
from .subscribers import Subscribers
from .summaries import SUMMARY_FIELDS, ImportCounts, Summaries, content_hash
from .throttles import Attempt, Limit, Throttles
from .welcomes import Welcomes


class Store(
    Feeds,
    Summaries,
    SubscriberImport,
    Consent,
    Retention,
    Directory,
    Subscribers,
    Signups,
    Issues,
    Ledger,
    Compaction,
    Events,
    Export,
    Bounces,
    Reports,
    Schedule,
    Throttles,
    EditorSessions,
    EditorSecrets,
    AuditLog,
    Reading,
    Welcomes,
    NoticeQueue,
    Tables,
):
    """All table groups on one connection (a transaction may span groups)."""


__all__ = [
    "CONSENT_METHODS", "NO_LONGER_ACTIVE", "NOTICE_AFTER", "NOT_BY_LINK", "SCHEDULABLE", "SUMMARY_FIELDS", "TRANSITIONS",
    "Attempt", "AuditLog", "Bounces", "Compaction", "Consent", "DatabaseError", "Directory", "EditorSecrets",
    "EditorSessions", "Events", "Export", "Feeds", "ImportCounts", "ImportRefused", "Issues", "Ledger", "Limit",
    "NoticeQueue", "Reading", "Refused",
    "Reports", "Retention", "Schedule", "Signups", "Store", "StoreError", "SubscriberImport", "Subscribers", "Summaries", "Tables",
    "Throttles", "Welcomes",
    "content_hash", "decode_topics", "describe", "due", "email_hash", "may_send", "migrations", "next_string", "now_iso",
    "reading_hold", "search_key", "subscriber_target",
]
