"""`newsletter bounces process`: read the bounce mailbox (Maildir or IMAP) and apply what each report says."""

from __future__ import annotations

import click

from ..context import Context
from ..feedback import process_mailbox
from ..model import delivery_tag_key
from ..setting_values import ConfigError, parse_mailbox
from ..sources.bounces import BounceMailboxError, open_mailbox
from .common import handle_errors, pass_ctx

#: outcomes in the order the summary line names them
OUTCOMES = ("hard", "soft", "complaint", "delivered", "ignored", "unmatched", "unreadable")


@click.group()
def bounces() -> None:
    """Bounces and complaints that come back by mail (SMTP and Maildir backends)."""


@bounces.command("process")
@pass_ctx
@handle_errors
def bounces_process(ctx: Context) -> None:
    """Read bounce_mailbox and handle each message once.

    Delivery status notifications (RFC 3464), the common free-text bounces and
    complaint reports (RFC 5965) are matched to their delivery by the
    Message-ID and X-Newsletter-Delivery header of the returned message (or
    a VERP address when bounce_address is set), each carrying the delivery's
    number signed with NEWSLETTER_SECRET, never by the address alone. A
    hard bounce (5.x.x) marks the subscriber bounced, soft ones (4.x.x) on three
    issues in a row do too, a complaint marks it complained. Handled messages
    move to the mailbox's `processed` folder, those that cannot be read or
    matched to `unreadable`; nothing is deleted. Safe to run at any time.

    \b
    Example (cron, every 30 minutes):
        NEWSLETTER_BOUNCE_PASSWORD=... newsletter --config /srv/newsletter/newsletter.toml bounces process
    """
    config = ctx.config
    if not config.bounce_mailbox:
        raise ConfigError(f"{config.source or 'settings'}: bounce_mailbox: not set (e.g. maildir:/srv/bounces "
                          "or imaps://bounces@imap.example.org/INBOX)")
    store = ctx.store  # refuses a bad database before the mailbox is touched
    try:
        box = open_mailbox(parse_mailbox(config.bounce_mailbox), config.bounce_password, config.bounce_ca_file)
        try:
            counts = process_mailbox(store, box, config.bounce_address, delivery_tag_key(config.require_secret()))
        finally:
            box.close()
    except BounceMailboxError as exc:
        raise click.ClickException(str(exc)) from None
    total = sum(counts.values())
    click.echo(f"{box.name}: {total} message(s): " + ", ".join(f"{name} {counts.get(name, 0)}" for name in OUTCOMES))
