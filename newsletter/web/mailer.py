"""The emails the web app sends itself: the sign-up confirmation and the data-access link.

Plain-text notices (templates/public/*.txt) for the configured messenger (Maildir, SMTP or SendGrid with
tracking off, so the signed link reaches the reader unchanged). A confirmation is handed over only once the
answer has gone (newsletter/notices.py says why), and what the transport does not take is queued; the access
link, asked for by someone who already holds the reader's own link, is sent at once and a failure is a 503.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import after_this_request

from ..context import Context
from ..model import Notice
from ..notices import deliver, try_send


class MailError(Exception):
    """The notice could not be handed to the transport."""


def hand_over(config: Any, notice: Notice) -> None:
    """Hand the notice to the configured messenger now, or raise MailError."""
    status, error = try_send(config, notice)
    if status != "sent":
        raise MailError(error or status)


#: Hand-overs still running (tests wait for them; the interpreter waits for them at exit: not daemons).
_in_flight: set[threading.Thread] = set()
_lock = threading.Lock()


def hand_over_after_answer(config: Any, notice: Notice, withhold: bool = False) -> None:
    """Send the confirmation once this request's answer has been written (Werkzeug closes the response then),
    from a thread of its own: not the request's, or the next request on the same connection would wait for the
    transport and tell a withheld confirmation from one that went.

    A withheld one (an address that bounced or complained, or is over its limit) was composed all the same,
    and nothing on the way out tells them apart: the same page, at the same moment."""
    if withhold:
        return

    @after_this_request
    def send_when_answered(response: Any) -> Any:
        response.call_on_close(lambda: _start(deliver, config, notice, lambda: Context(config).store))
        return response


def _start(target: Any, *args: Any) -> None:
    def run() -> None:
        try:
            target(*args)
        finally:
            with _lock:
                _in_flight.discard(thread)

    thread = threading.Thread(target=run, name="newsletter-confirmation")
    with _lock:
        _in_flight.add(thread)
    thread.start()


def wait_for_handovers(timeout: float = 30.0) -> None:
    """Until every confirmation handed over so far has gone or been queued (tests; a graceful stop)."""
    with _lock:
        threads = list(_in_flight)
    for thread in threads:
        thread.join(timeout)
