"""Subscribers' pages: sign-up with double opt-in, confirm, preferences, unsubscribe, archive.

No logins: every page that touches a subscription is reached by a signed link
bound to one subscriber and one purpose. A forged, expired or wrong-purpose
token gets a plain error page and changes nothing. One route per method: only
a POST changes anything (link scanners send GET, HEAD and OPTIONS).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from flask import (Blueprint, Response, abort, flash, make_response, redirect, render_template, request,
                   url_for)

from ..model import SUPPRESSED, Notice
from ..segments import CADENCES
from ..sources.subscribers import SubscriberError, normalise_email
from ..store import NOT_BY_LINK, subscriber_target
from ..tokens import TokenError
from ..welcome import send_welcome
from . import mailer
from .consent import Wording, record_form_consent
from .limits import SIGNUP_ADDRESS, SIGNUP_MAILBOX, SIGNUP_NETWORK
from .rendering import ARCHIVE_TOKEN, ARCHIVE_VALUES, topics_for_variant
from .security import csrf_exempt, csrf_valid
from .state import EMAIL_CSP, get_ctx, web_state

log = logging.getLogger("newsletter.web")
#: The audit log's actor for what readers do through their signed links.
READER = "subscriber"
bp = Blueprint("public", __name__)

# -- helpers -----------------------------------------------------------------

def known_topics(extra: Iterable[str] = ()) -> list[str]:
    """Topics of the stored summaries (plus a subscriber's own), one spelling each, sorted."""
    seen: dict[str, str] = {}
    for summary in get_ctx().store.summaries():
        for topic in summary["topics"]:
            seen.setdefault(topic.lower(), topic)
    for topic in extra:
        seen.setdefault(topic.lower(), topic)
    return sorted(seen.values(), key=str.lower)


CADENCE_LABELS = {"weekly": "Every week", "monthly": "Once a month"}


def form_options(topics: list[str]) -> dict[str, list[tuple[str, str]]]:
    return {"segments": [(s.name, s.display_name) for s in web_state().segments.values()],
            "cadences": [(c, CADENCE_LABELS.get(c, c.capitalize())) for c in CADENCES],
            "topics": [(t, t) for t in topics]}


def read_choices(form: Any, topics_allowed: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """segment, cadence and topics from a form, with an error message per bad field."""
    state = web_state()
    errors: dict[str, str] = {}
    segment = form.get("segment", "")
    if segment not in state.segments:
        errors["segment"] = "Choose who the digest is for."
    cadence = form.get("cadence", "")
    if cadence not in CADENCES:
        errors["cadence"] = "Choose how often you want it."
    canonical = {t.lower(): t for t in topics_allowed}
    chosen = form.getlist("topics")
    if any(t.lower() not in canonical for t in chosen):
        errors["topics"] = "Choose topics from the list."
    topics = sorted({canonical[t.lower()] for t in chosen if t.lower() in canonical}, key=str.lower)
    return {"segment": segment, "cadence": cadence, "topics": topics}, errors


def subscriber_for(purpose: str, token: str) -> dict[str, Any]:
    """The subscriber a signed link was made for, or an error page (nothing changes)."""
    if token == ARCHIVE_TOKEN:
        abort(404, description="This is the web copy of a digest. To unsubscribe or change what you receive, "
                               "use the links in the email you received.")
    try:
        subscriber_id = web_state().tokens.verify(purpose, token)
    except TokenError as exc:
        message = str(exc)
        hint = " Subscribe again to get a new link." if "expired" in message else ""
        abort(400, description=f"{message[0].upper()}{message[1:]}.{hint}")
    subscriber = get_ctx().store.get_subscriber(id=subscriber_id)
    if subscriber is None:
        abort(404, description="We have no subscription for this link: it may have been deleted.")
    return subscriber


def links_for(subscriber_id: int) -> dict[str, str]:
    tokens = web_state().tokens
    return {"preferences": url_for("public.preferences", preferences_token=tokens.sign("preferences", subscriber_id)),
            "unsubscribe": url_for("public.unsubscribe_page",
                                   unsubscribe_token=tokens.sign("unsubscribe", subscriber_id))}


def absolute(path: str) -> str:
    return web_state().config.site_url + path


# -- sign-up -----------------------------------------------------------------

#: A field people never see (hidden by the stylesheet, skipped by keyboard and screen readers) that form-filling
#: robots do fill: such a sign-up gets the usual answer, and nothing is stored or sent.
HONEYPOT = "website"


@bp.get("/")
def subscribe() -> Any:
    return render_template("public/subscribe.html", values={"topics": []}, errors={},
                           options=form_options(known_topics()), wording=Wording.from_config(web_state().config))


@bp.post("/")
def subscribe_submit() -> Any:
    state = web_state()
    topics_allowed = known_topics()
    choices, errors = read_choices(request.form, topics_allowed)
    raw_email = request.form.get("email", "")
    try:
        email = normalise_email(raw_email)
    except SubscriberError:
        email = ""
        errors["email"] = "Enter an email address, like name@example.org."
    if request.form.get("consent") != "yes":
        errors["consent"] = "Tick the box to agree, or we cannot send you the digest."
    if request.form.get("consent_health") != "yes":
        errors["consent_health"] = "Tick the box to agree that we keep your choice, or we cannot send the digest."
    if errors:
        values = {**choices, "email": raw_email.strip(), "consent": request.form.get("consent") == "yes",
                  "consent_health": request.form.get("consent_health") == "yes"}
        return render_template("public/subscribe.html", values=values, errors=errors,
                               options=form_options(topics_allowed), wording=Wording.from_config(state.config)), 400
    if request.form.get(HONEYPOT):
        log.info("sign-up with the hidden field filled: ignored")
        return render_template("public/check_inbox.html")
    store = get_ctx().store
    attempt = state.limiter.signup(store, email, request.remote_addr or "unknown")
    if attempt.waits[SIGNUP_NETWORK]:
        abort(429, description="Too many sign-ups from your network. Try again in an hour.")
    # From here every address does the same work, whatever its state: the same statements, one message
    # composed and handed over. Only a new address is stored (pending); an existing one is never changed here.
    subscriber = store.sign_up(email, choices["segment"], choices["cadence"], choices["topics"])
    # A few confirmations per window per address and mailbox, none to an address that bounced or reported
    # us as spam. The page says the same whatever happened.
    withhold = subscriber["status"] in NOT_BY_LINK or bool(attempt.waits[SIGNUP_ADDRESS] or
                                                           attempt.waits[SIGNUP_MAILBOX])
    mailer.hand_over_after_answer(web_state().config, confirmation(subscriber), withhold=withhold)
    return render_template("public/check_inbox.html")


def confirmation(subscriber: dict[str, Any]) -> Notice:
    """The confirmation (or, for an active subscriber, a link to preferences)."""
    state = web_state()
    config = state.config
    active = subscriber["status"] == "active"
    if active:
        url = absolute(links_for(subscriber["id"])["preferences"])
        subject = f"Your {config.site_name} subscription"
    else:
        url = absolute(url_for("public.confirm", confirm_token=state.tokens.sign("confirm", subscriber["id"])))
        subject = f"Confirm your subscription to {config.site_name}"
    text = render_template("public/confirmation.txt", active=active, url=url).rstrip("\n") + "\n"
    return Notice(to=subscriber["email"], subject=subject, text=text, category="confirmation")


def confirm_view(subscriber: dict[str, Any], **extra: Any) -> str:
    return render_template("public/confirm.html", subscriber=subscriber, done=subscriber["status"] == "active",
                           refused=subscriber["status"] in NOT_BY_LINK, links=links_for(subscriber["id"]),
                           wording=Wording.from_config(web_state().config), **extra)


@bp.get("/confirm/<confirm_token>")
def confirm_page(confirm_token: str) -> Any:
    return confirm_view(subscriber_for("confirm", confirm_token))


@bp.post("/confirm/<confirm_token>")
def confirm(confirm_token: str) -> Any:
    subscriber = subscriber_for("confirm", confirm_token)
    store = get_ctx().store
    # An old link never brings back an address that bounced or reported spam; an unsubscribed person's may.
    if subscriber["status"] == "active":
        return confirm_view(subscriber, just_confirmed=True)
    if subscriber["status"] not in NOT_BY_LINK and store.confirm_subscriber(subscriber["id"]):
        store.record_audit(READER, "subscriber.confirm", subscriber_target(subscriber["id"]))
        record_form_consent(store, web_state().config, subscriber["id"], request.remote_addr)
        # Only the request whose UPDATE activated the address gets here; the welcome itself is planned at
        # most once per person (newsletter/welcome.py), so a repeated confirm never sends a second one.
        outcome = send_welcome(get_ctx(), subscriber["id"], tokens=web_state().tokens)
        if outcome is not None and outcome.status != "sent":
            log.error("welcome email %s: %s", outcome.status, outcome.error)
        return confirm_view({**subscriber, "status": "active"}, just_confirmed=True)
    return confirm_view(store.get_subscriber(id=subscriber["id"]) or subscriber)


# -- preferences ---------------------------------------------------------------

def preferences_page(subscriber: dict[str, Any], token: str, values: dict[str, Any], errors: dict[str, str]) -> str:
    return render_template("public/preferences.html", subscriber=subscriber, values=values, errors=errors,
                           options=form_options(known_topics(subscriber["topics"])), links=links_for(subscriber["id"]),
                           token=token)


def back_to_preferences(token: str) -> Any:
    return redirect(url_for("public.preferences", preferences_token=token), code=303)


@bp.get("/p/<preferences_token>")
def preferences(preferences_token: str) -> Any:
    subscriber = subscriber_for("preferences", preferences_token)
    return preferences_page(subscriber, preferences_token, subscriber, {})


@bp.post("/p/<preferences_token>")
def preferences_save(preferences_token: str) -> Any:
    subscriber = subscriber_for("preferences", preferences_token)
    choices, errors = read_choices(request.form, known_topics(subscriber["topics"]))
    if errors:
        return preferences_page(subscriber, preferences_token, choices, errors), 400
    get_ctx().store.editor_set_preferences(subscriber["id"], choices["segment"], choices["cadence"], choices["topics"],
                                           READER)  # audited (what changed) as the subscriber's own act
    flash("Your preferences are saved.")
    return back_to_preferences(preferences_token)


@bp.post("/p/<preferences_token>/pause")
def pause(preferences_token: str) -> Any:
    subscriber = subscriber_for("preferences", preferences_token)
    if subscriber["status"] not in SUPPRESSED:
        get_ctx().store.set_subscriber_status(subscriber["id"], "unsubscribed")
        get_ctx().store.record_audit(READER, "subscriber.pause", subscriber_target(subscriber["id"]))
    flash("The digest is paused: we will send you nothing until you resume it.")
    return back_to_preferences(preferences_token)


@bp.post("/p/<preferences_token>/resume")
def resume(preferences_token: str) -> Any:
    subscriber = subscriber_for("preferences", preferences_token)
    if subscriber["status"] == "unsubscribed":  # paused; a bounce or spam report is not undone here
        get_ctx().store.set_subscriber_status(subscriber["id"], "active")
        get_ctx().store.record_audit(READER, "subscriber.resume", subscriber_target(subscriber["id"]))
    elif subscriber["status"] != "active":
        flash("This address cannot receive the digest: emails to it bounced, or it reported our email as spam. "
              "Only the people who run this site can undo that.", "error")
        return back_to_preferences(preferences_token)
    flash("The digest is on again.")
    return back_to_preferences(preferences_token)


# -- unsubscribe ---------------------------------------------------------------

@bp.get("/u/<unsubscribe_token>")
def unsubscribe_page(unsubscribe_token: str) -> Any:
    subscriber = subscriber_for("unsubscribe", unsubscribe_token)
    return render_template("public/unsubscribe.html", subscriber=subscriber, token=unsubscribe_token,
                           links=links_for(subscriber["id"]))


@bp.post("/u/<unsubscribe_token>")
@csrf_exempt  # RFC 8058: the mail client's POST carries no session; the signed token is the authority
def unsubscribe(unsubscribe_token: str) -> Any:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    if not one_click and not csrf_valid():
        abort(400, description="This form has expired or did not come from this site. "
                               "Go back, reload the page and try again.")
    if unsubscribe_token == ARCHIVE_TOKEN:
        subscriber_for("unsubscribe", unsubscribe_token)  # explains the web copy's links
    try:
        subscriber_id = web_state().tokens.verify("unsubscribe", unsubscribe_token)
    except TokenError as exc:
        abort(400, description=f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    store = get_ctx().store
    subscriber = store.get_subscriber(id=subscriber_id)
    # Already gone (deleted, bounced, unsubscribed): the answer is the same, nothing changes.
    if subscriber is not None and subscriber["status"] not in SUPPRESSED:
        store.set_subscriber_status(subscriber_id, "unsubscribed")
        store.record_audit(READER, "subscriber.unsubscribe", subscriber_target(subscriber_id), {"one_click": one_click})
    if one_click:
        return Response("Unsubscribed.\n", mimetype="text/plain")
    links = links_for(subscriber_id) if subscriber is not None else None
    return render_template("public/unsubscribed.html", links=links)


# -- archive -------------------------------------------------------------------

@bp.get("/archive/<int:issue_id>/<variant>")
def archive(issue_id: int, variant: str) -> Response:
    """A sent issue as a web page: the target of "View in browser" (no one's tokens in it)."""
    ctx = get_ctx()
    issue = ctx.store.get_issue(issue_id)
    if issue is None or issue["status"] not in ("sending", "sent"):
        abort(404, description="There is no sent digest at this address.")
    topics = topics_for_variant(ctx.store.issue_summaries(issue_id), variant)
    if topics is None:
        abort(404, description="There is no sent digest at this address.")
    rendered = web_state().renders.variant(ctx, issue, topics)
    if rendered is None or rendered.variant != variant:
        abort(404, description="There is no sent digest at this address.")
    html, _ = rendered.personalise(ARCHIVE_VALUES)
    response = make_response(html)
    response.headers["Content-Security-Policy"] = EMAIL_CSP
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
