"""The audit log in the editors' pages (admins): newest first, filtered by who and what, paged by id."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request, url_for

from .security import requires
from .state import get_ctx

bp = Blueprint("audit", __name__, url_prefix="/editor")

PAGE_SIZE = 100


@bp.get("/audit")
@requires("audit")
def index() -> Any:
    store = get_ctx().store
    actor = request.args.get("actor", "").strip()[:64]
    action = request.args.get("action", "").strip()[:64]
    before = request.args.get("before", type=int)
    rows = store.audit_entries(actor=actor or None, action=action or None, before_id=before, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    kept = {k: v for k, v in (("actor", actor), ("action", action)) if v}
    return render_template("editor/audit.html", rows=rows, actor=actor, action=action, actions=store.audit_actions(),
                           next_url=url_for("audit.index", **kept, before=rows[-1]["id"]) if more else None,
                           first_url=url_for("audit.index", **kept) if before else None)
