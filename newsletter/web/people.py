"""Subscribers in the editors' pages (admins only): find people at any list size, see one person's record, change
their preferences, suppress or lift, resend the confirmation, erase; export a filtered view as CSV.

Every change goes through a store method that writes its audit row in the same transaction. A subscriber's
segment tells their diagnosis: these pages are for the admin role alone, and the export is a POST (recorded)."""

from __future__ import annotations

from typing import Any, Iterator

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for

from ..context import Context
from ..model import SUBSCRIBER_STATUSES
from ..retention import erase as erase_everywhere
from ..segments import CADENCES
from ..sources.subscribers import write_csv
from ..store import Refused, subscriber_target
from . import mailer
from .public import confirmation, known_topics, read_choices
from .security import current_editor, requires
from .state import get_ctx, web_state

bp = Blueprint("people", __name__, url_prefix="/editor/subscribers")

PAGE_SIZE = 50
FILTERS = ("q", "status", "segment", "cadence", "topic")


def read_filters(values: Any) -> dict[str, str]:
    """The list's filters from a query string or form; a value that is no choice is a 400."""
    chosen = {name: (values.get(name) or "").strip() for name in FILTERS}
    choices = {"status": SUBSCRIBER_STATUSES, "segment": tuple(web_state().segments), "cadence": CADENCES}
    for name, allowed in choices.items():
        if chosen[name] and chosen[name] not in allowed:
            abort(400, description=f"{name}: {chosen[name]!r} is not one of {', '.join(allowed)}.")
    if len(chosen["q"]) > 254:
        abort(400, description="q: an address has at most 254 characters.")
    return chosen


def search_arguments(filters: dict[str, str]) -> dict[str, Any]:
    return {"text": filters["q"], **{k: filters[k] or None for k in ("status", "segment", "cadence", "topic")}}


@bp.get("")
@requires("subscribers")
def index() -> Any:
    filters = read_filters(request.args)
    after = request.args.get("after", type=int) or 0
    rows = get_ctx().store.search_subscribers(after_id=after, limit=PAGE_SIZE + 1, **search_arguments(filters))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_args = {k: v for k, v in filters.items() if v}
    segments = web_state().segments
    choices = [("status", "Status", [(s, s) for s in SUBSCRIBER_STATUSES]),
               ("segment", "Segment", [(s.name, s.display_name) for s in segments.values()]),
               ("cadence", "Cadence", [(c, c) for c in CADENCES]),
               ("topic", "Topic", [(t, t) for t in known_topics()])]
    return render_template("editor/subscribers.html", rows=rows, filters=filters, choices=choices, segments=segments,
                           next_url=url_for("people.index", **next_args, after=rows[-1]["id"]) if more else None,
                           first_url=url_for("people.index", **next_args) if after else None)


def _csv_chunks(rows: Iterator[dict[str, Any]], size: int = 1000) -> Iterator[str]:
    """The import format (sources.subscribers.write_csv), written a thousand rows at a time."""
    header = True
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield _without_header(write_csv(batch), header)
            header, batch = False, []
    if batch or header:
        yield _without_header(write_csv(batch), header)


def _without_header(text: str, keep: bool) -> str:
    return text if keep else text.split("\n", 1)[1]


@bp.post("/export")
@requires("subscribers")
def export() -> Response:
    filters = read_filters(request.form)
    store = get_ctx().store
    store.record_audit(current_editor() or "?", "subscriber.export", "subscribers",
                       {k: v for k, v in filters.items() if v})
    config, arguments = web_state().config, search_arguments(filters)

    def body() -> Iterator[str]:
        own = Context(config)  # its own connection: the request's closes before the body is streamed
        try:
            yield from _csv_chunks(own.store.iter_search(**arguments))
        finally:
            own.close()

    response = Response(body(), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=subscribers.csv"
    return response


# -- one subscriber --------------------------------------------------------------------------------------

def load_subscriber(subscriber_id: int) -> dict[str, Any]:
    row = get_ctx().store.get_subscriber(id=subscriber_id)
    if row is None:
        abort(404, description=f"There is no subscriber {subscriber_id} (erased, or never was).")
    return row


@bp.get("/<int:subscriber_id>")
@requires("subscribers")
def subscriber(subscriber_id: int) -> Any:
    return subscriber_page(load_subscriber(subscriber_id))


def subscriber_page(row: dict[str, Any], errors: dict[str, str] | None = None, status: int = 200) -> Any:
    store = get_ctx().store
    deliveries, events = store.subscriber_history(row["id"], row["email"])
    return render_template("editor/subscriber.html", sub=row, deliveries=deliveries, events=events,
                           history=store.audit_entries(target=subscriber_target(row["id"]), limit=None),
                           consents=store.consent_records(row["id"]),
                           manual=store.manual_suppression(row["id"]), segments=web_state().segments,
                           topics=known_topics(row["topics"]), errors=errors or {}), status


def _back(subscriber_id: int) -> Any:
    return redirect(url_for("people.subscriber", subscriber_id=subscriber_id), code=303)


def _change(subscriber_id: int, change: Any, done: str) -> Any:
    """Run one audited change of the store; a refusal is flashed, the record shown again."""
    try:
        change()
    except Refused as exc:
        flash(f"Not changed: {exc}.", "error")
    else:
        flash(done)
    return _back(subscriber_id)


@bp.post("/<int:subscriber_id>/preferences")
@requires("subscribers")
def preferences(subscriber_id: int) -> Any:
    row = load_subscriber(subscriber_id)
    choices, errors = read_choices(request.form, known_topics(row["topics"]))
    if errors:
        return subscriber_page(row, errors, 400)
    changed = get_ctx().store.editor_set_preferences(subscriber_id, choices["segment"], choices["cadence"],
                                                     choices["topics"], current_editor() or "?")
    flash(f"Saved: {', '.join(changed)} changed." if changed else "Nothing changed.")
    return _back(subscriber_id)


@bp.post("/<int:subscriber_id>/suppress")
@requires("subscribers")
def suppress(subscriber_id: int) -> Any:
    load_subscriber(subscriber_id)
    reason = request.form.get("reason", "")[:500]
    return _change(subscriber_id, lambda: get_ctx().store.editor_suppress(subscriber_id, reason, current_editor()),
                   "Suppressed: no digest goes to this address.")


@bp.post("/<int:subscriber_id>/lift")
@requires("subscribers")
def lift(subscriber_id: int) -> Any:
    load_subscriber(subscriber_id)
    confirmed = request.form.get("bounce_confirmed") == "yes"
    return _change(subscriber_id, lambda: get_ctx().store.editor_lift(subscriber_id, current_editor(), confirmed),
                   "The suppression is lifted.")


@bp.post("/<int:subscriber_id>/resend")
@requires("subscribers")
def resend(subscriber_id: int) -> Any:
    row = load_subscriber(subscriber_id)
    if row["status"] != "pending":
        flash(f"Not sent: only a pending subscriber gets a confirmation (this one is {row['status']}).", "error")
        return _back(subscriber_id)
    try:  # an editor is told at once (the sign-up form never says; newsletter/notices.py)
        mailer.hand_over(web_state().config, confirmation(row))
    except mailer.MailError as exc:
        flash(f"Not sent: {exc}", "error")
        return _back(subscriber_id)
    get_ctx().store.record_audit(current_editor() or "?", "subscriber.resend-confirmation",
                                 subscriber_target(subscriber_id))
    flash("The confirmation email was sent again.")
    return _back(subscriber_id)


@bp.post("/<int:subscriber_id>/erase")
@requires("subscribers")
def erase(subscriber_id: int) -> Any:
    row = load_subscriber(subscriber_id)
    if request.form.get("confirm") != row["email"]:
        flash("Not erased: type the address exactly to confirm.", "error")
        return _back(subscriber_id)
    state = web_state()
    erase_everywhere(state.config, get_ctx().store, row["email"], actor=current_editor() or "?",
                     subscriber_id=subscriber_id)
    state.limiter.forget(get_ctx().store, row["email"])
    flash(f"Subscriber {subscriber_id} is erased; only a hash of the address stays, so no import adds it again.")
    return redirect(url_for("people.index"), code=303)
