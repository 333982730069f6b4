"""The welcome email a reader gets once, when they confirm: what they will get and when, the latest digest, the links.

Why it is a ledger delivery: it goes to a person on the list and carries their unsubscribe link, so it is
sent and recorded like a digest. Each (segment, cadence) has one issue of kind 'welcome' (store/welcomes.py),
and a welcome is a `deliveries` row against it: the row is written (pending) before anything is sent, claimed
(`sending`, only while the subscriber is still active) and marked sent, failed or unknown exactly as the
dispatcher does; the envelope (tokens, List-Unsubscribe, X-Newsletter-Delivery) is the dispatcher's own, so
bounces and complaints about a welcome suppress the address as for a digest. At most one welcome per person,
ever: planning checks, in the same write transaction, that no welcome row exists for the subscriber (the
unique (issue, subscriber) key backs it up), so a double click, a link scanner or a second confirmation sends
nothing more. Welcome issues are kept out of the digest's lists, sends and retries (kind 'digest' only there).

It is not sent through `Dispatcher.send_issue`: that first marks every row of the issue left in `sending` as
interrupted, which is right under the digest's run lock but would, between two web requests confirming at the
same moment, mislabel the other's welcome. Only this request's own row is touched here.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import mjml

from .dispatch import Dispatcher, requires_consent
from .messengers import messenger_from_config
from .model import (GREETING_HTML, GREETING_TEXT, PREFS_TOKEN, UNSUB_TOKEN, FatalSendError, Messenger, Outcome,
                    Rendered, neutralise_html, neutralise_text)
from .render import RenderError, Renderer, date_label
from .render.content import plain_text
from .render.footer import check_footer
from .render.pipeline import finish, fresh_markers
from .segments import Segment
from .store import NO_LONGER_ACTIVE
from .select import Period
from .tokens import Tokens

#: When schedule.cron's default lines build each cadence (local time of the `timezone` setting).
SEND_TIMES = {"weekly": time(7, 0), "monthly": time(7, 15)}
SCHEDULES = {"weekly": "every Monday", "monthly": "on the first Monday of each month"}


def next_send_day(now: datetime, cadence: str, tz: str) -> date:
    """The next day schedule.cron builds this cadence: weekly on Mondays, monthly on the first Monday of a
    month, at the SEND_TIMES hour in the zone `tz` (a naive `now` is read as already local)."""
    local = now.astimezone(ZoneInfo(tz)) if now.tzinfo else now
    for offset in range(0, 42):
        day = local.date() + timedelta(days=offset)
        if day.weekday() != 0 or (cadence == "monthly" and day.day > 7):
            continue
        if offset == 0 and local.time() >= SEND_TIMES[cadence]:
            continue
        return day
    raise ValueError(f"cadence: no send day found for {cadence!r}")  # unreachable: a first Monday is < 42 days off


def latest_issue_link(store: Any, site_url: str, segment: str, cadence: str) -> dict[str, str] | None:
    """The web copy ("all" variant) of the newest sent digest of this audience, with its period label."""
    issue = store.latest_archived_issue(segment, cadence)
    if issue is None:
        return None
    return {"url": f"{site_url}/archive/{issue['id']}/all", "label": Period.from_key(issue["period"]).label}


def render_welcome(renderer: Renderer, *, issue_id: int, segment: Segment, cadence: str, topics: list[str],
                   next_send: date, latest: dict[str, str] | None) -> Rendered:
    """The welcome as a Rendered variant: the tokens and greeting left as placeholders for the envelope."""
    if not renderer.postal_address.strip():
        raise RenderError("postal_address: required in every footer (CAN-SPAM)")
    site, due = renderer.site_url, next_send_label(next_send)
    subject = f"Welcome to {renderer.site_name}"
    markers = fresh_markers()
    context = {
        "lang": renderer.lang, "site_name": renderer.site_name, "segment": segment, "cadence": cadence,
        "topics": [plain_text(t) for t in topics], "schedule": SCHEDULES[cadence], "next_send": due,
        "latest": latest, "archive_index_url": f"{site}/archive", "subject": subject,
        "preheader": f"Your first {cadence} digest is due on {due}.",
        "disclaimer": renderer.disclaimer(), "postal_address": renderer.postal_address,
        "unsubscribe_url": f"{site}/u/{markers[UNSUB_TOKEN]}", "preferences_url": f"{site}/p/{markers[PREFS_TOKEN]}",
        "privacy_url": f"{site}/privacy",
        "greeting_html": markers[GREETING_HTML], "greeting_text": markers[GREETING_TEXT],
    }
    text = finish(neutralise_text, renderer.template("welcome.txt", context), markers)
    try:
        html = mjml.mjml2html(renderer.template("welcome.mjml", context), disable_comments=True, fonts={})
    except ValueError as exc:
        raise RenderError(f"welcome.mjml: MJML did not compile: {exc}") from None
    html = finish(neutralise_html, html, markers)
    finished = {**context, "unsubscribe_url": f"{site}/u/{UNSUB_TOKEN}", "preferences_url": f"{site}/p/{PREFS_TOKEN}"}
    check_footer(html, text, finished, [], renderer.postal_address)
    return Rendered(issue_id=issue_id, segment=segment.name, cadence=cadence, variant="welcome",
                    subject=neutralise_text(subject), preheader=neutralise_text(context["preheader"]), html=html,
                    text=text, summary_ids=[], full_cards=0)


def next_send_label(day: date) -> str:
    return f"{day:%A} {date_label(day.isoformat())}"


def send_welcome(ctx: Any, subscriber_id: int, *, tokens: Tokens | None = None, messenger: Messenger | None = None,
                 now: datetime | None = None) -> Outcome | None:
    """Send the subscriber's one welcome, if they are active and never had one; None when nothing was due.

    Never raises for a send problem: the outcome says what happened, and the ledger row records it
    (failed with the reason when the email could not be built or handed over)."""
    config, store = ctx.config, ctx.store
    planned = store.plan_welcome(subscriber_id)
    if planned is None:
        return None
    delivery_id = planned["delivery_id"]
    try:
        rendered = render_welcome(
            Renderer.from_config(config), issue_id=planned["issue_id"], segment=ctx.segments[planned["segment"]],
            cadence=planned["cadence"], topics=json.loads(planned["topics"] or "[]"),
            next_send=next_send_day(now or datetime.now(timezone.utc), planned["cadence"], config.timezone),
            latest=latest_issue_link(store, config.site_url.rstrip("/"), planned["segment"], planned["cadence"]))
    except (RenderError, KeyError) as exc:  # KeyError: a segment no longer in segments.toml
        return _failed(store, delivery_id, f"welcome not rendered: {exc}", expect="pending")
    own = messenger is None
    try:
        messenger = messenger or messenger_from_config(config)
    except FatalSendError as exc:
        return _failed(store, delivery_id, str(exc), expect="pending")
    try:
        dispatcher = Dispatcher(store, messenger, tokens or Tokens(config.require_secret()), config.site_url,
                                require_consent=requires_consent(config))
        if not store.claim_for_sending([delivery_id], uuid.uuid4().hex[:12], dispatcher.processor):
            return Outcome("skipped", [delivery_id], error=NO_LONGER_ACTIVE)
        try:
            outcomes = messenger.send(rendered, [dispatcher.envelope(planned)])
        except FatalSendError as exc:  # nothing was handed over; no later run resends a welcome, so: failed
            return _failed(store, delivery_id, str(exc), expect="sending")
        for outcome in outcomes:
            store.mark_deliveries(outcome.delivery_ids, outcome.status, provider_id=outcome.provider_id,
                                  error=outcome.error, expect="sending")
        return outcomes[0]
    finally:
        if own:
            messenger.close()


def _failed(store: Any, delivery_id: int, error: str, expect: str) -> Outcome:
    store.mark_deliveries([delivery_id], "failed", error=error, expect=expect)
    return Outcome("failed", [delivery_id], error=error)
