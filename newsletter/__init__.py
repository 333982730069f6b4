"""newsletter: email digests of plain-language MS research summaries, per reader segment.

The flow runs one way, each stage in its own place:

    ingest   newsletter/sources/     summaries (Markdown, JSON, feeds) and subscribers (CSV) read and validated
    store    newsletter/store/       the only writer of SQLite: summaries, subscribers, issues, ledger, events
    select   newsletter/select.py    periods and the summaries an issue carries; digest.py builds the issues
    render   newsletter/render/      Jinja2 -> MJML -> premailer once per (issue, segment, variant)
    dispatch newsletter/dispatch.py  the ledger around every batch, through newsletter/messengers/
    record   newsletter/feedback.py  what provider events do to subscribers and deliveries

Below every stage, newsletter/model.py holds the shared types (statuses,
placeholders, Rendered, Envelope). Above them, the CLI (newsletter/cli/) and
the web app (newsletter/web/) are thin layers over these functions.
"""
