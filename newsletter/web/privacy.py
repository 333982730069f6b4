"""The privacy page, generated from the settings, and a reader's own data: reading or erasing it needs a fresh
link sent to the address and valid for an hour, because a digest's links get forwarded."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, make_response, render_template, url_for

from ..model import Notice
from ..retention import erase
from ..store import now_iso, subscriber_target
from ..tokens import ACCESS_MAX_AGE
from . import mailer
from .consent import Wording
from .public import READER, absolute, log, subscriber_for
from .state import get_ctx, web_state

bp = Blueprint("privacy", __name__)

#: Who receives what, by backend: what `/privacy` and each data download say was shared.
PROCESSORS = {
    "maildir": [],
    "smtp": [("the mail relay {smtp_host}", "your address and name, and each message as you receive it")],
    "sendgrid": [("SendGrid (Twilio Inc., USA), our email provider",
                  "your address and name, each message's text, an opaque list code, the issue and delivery "
                  "numbers; {tracking}")],
}


def processors(config: Any, processor: str = "") -> list[tuple[str, str]]:
    """Who receives what: for the configured backend, or for a processor the ledger noted (maildir,
    smtp:HOST, sendgrid)."""
    backend, _, host = (processor or current_processor(config)).partition(":")
    tracking = ", ".join(name for name, on in (("when you open a digest", config.track_opens),
                                               ("which links you click", config.track_clicks)) if on)
    tracking = f"and {tracking} (shown to us only as totals)" if tracking else "no opens or clicks (tracking is off)"
    return [(who.format(smtp_host=host), what.format(tracking=tracking)) for who, what in PROCESSORS.get(backend, [])]


def current_processor(config: Any) -> str:
    return f"smtp:{config.smtp_host}" if config.backend == "smtp" else config.backend


def shared_with(config: Any, handed: list[dict[str, Any]], noted: dict[int, list[str]]) -> list[dict[str, Any]]:
    """Per processor, the messages to this reader it was handed: as the ledger noted each issue's processors
    (every one that issue went through); an issue sent before they were noted is put under today's backend."""
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for delivery in handed:
        found = noted.get(delivery["issue_id"])
        for key in [(p, False) for p in found] if found else [(current_processor(config), True)]:
            groups.setdefault(key, []).append(delivery)
    shared = []
    for (processor, assumed), rows in groups.items():
        for who, what in processors(config, processor):
            entry = {"with": who, "what": what, "messages": len(rows), "issues": sorted({d["issue_id"] for d in rows})}
            if assumed:
                entry["note"] = "sent before we noted who each issue went to: today's email service is assumed"
            shared.append(entry)
    return shared


@bp.get("/privacy")
def policy() -> Any:
    config = web_state().config
    return render_template("public/privacy.html", config=config, processors=processors(config),
                           wording=Wording.from_config(config), access_hours=ACCESS_MAX_AGE // 3600)


# -- a fresh link, then the download or the erasure ------------------------------------------------

@bp.get("/p/<preferences_token>/delete")
def data_page(preferences_token: str) -> Any:
    subscriber = subscriber_for("preferences", preferences_token)
    return render_template("public/delete.html", subscriber=subscriber, token=preferences_token)


@bp.post("/p/<preferences_token>/access")
def send_access_link(preferences_token: str) -> Any:
    """Mail a link that works an hour to the subscriber's own address; the page says only that it was sent."""
    subscriber = subscriber_for("preferences", preferences_token)
    state = web_state()
    if state.limiter.access_link(get_ctx().store, subscriber["id"]).wait:
        abort(429, description="A link was sent to this address several times in the last hour. "
                               "Use the newest one, or try again later.")
    url = absolute(url_for("privacy.access", access_token=state.tokens.sign("access", subscriber["id"])))
    text = render_template("public/access.txt", url=url).rstrip("\n") + "\n"
    try:
        mailer.hand_over(state.config, Notice(to=subscriber["email"], subject=f"Your data at {state.config.site_name}",
                                              text=text, category="access"))
    except mailer.MailError as exc:
        log.error("access link not sent: %s", exc)
        abort(503, description="We could not send the email just now. Please try again later.")
    return render_template("public/access_sent.html")


@bp.get("/a/<access_token>")
def access(access_token: str) -> Any:
    subscriber = subscriber_for("access", access_token)
    return render_template("public/access.html", subscriber=subscriber, token=access_token)


def person_export(config: Any, store: Any, subscriber: dict[str, Any]) -> dict[str, Any]:
    """Everything we hold about the person, and what was shared with whom (from the ledger)."""
    tables = store.person_data(subscriber["id"], subscriber["email"])
    for row in tables.get("events", []):
        row["payload"] = json.loads(row["payload"] or "{}")
    handed = [d for d in tables.get("deliveries", []) if d["status"] in ("sent", "unknown")]
    handed += tables.get("compacted_recipients", [])  # issues compacted since: each reached them
    shared = shared_with(config, handed, store.issue_processors(sorted({d["issue_id"] for d in handed})))
    return {"exported_at": now_iso(), "site": config.site_name, "subscriber": tables["subscribers"][0],
            "tables": tables, "consent_records": tables.get("consent_records", []),
            "consent_wordings": tables["consent_wordings"], "shared_with": shared}


@bp.get("/a/<access_token>/data.json")
def download(access_token: str) -> Response:
    subscriber = subscriber_for("access", access_token)
    data = person_export(web_state().config, get_ctx().store, subscriber)
    response = make_response(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    response.content_type = "application/json; charset=utf-8"
    response.headers["Content-Disposition"] = 'attachment; filename="my-newsletter-data.json"'
    return response


@bp.post("/a/<access_token>/delete")
def delete(access_token: str) -> Any:
    subscriber = subscriber_for("access", access_token)
    state = web_state()
    erase(state.config, get_ctx().store, subscriber["email"], reason="deleted by the subscriber")
    state.limiter.forget(get_ctx().store, subscriber["email"])
    get_ctx().store.record_audit(READER, "subscriber.erase", subscriber_target(subscriber["id"]))
    return render_template("public/deleted.html")
