"""The ingest stage: summaries (Markdown, JSON, RSS/Atom files or URLs) and subscribers (CSV, the CLI)
read and validated into plain records. Nothing here touches the database; fetching lives in `fetch`."""
