"""SMTP delivery over one reused connection, reconnecting when it drops.

A failure before the message's last byte went out is safe to retry (the server
cannot have queued a message whose end it never saw); a lost answer after that
is ambiguous (the server may have queued it), so that message is reported
unknown and never retried blindly. The DATA command is therefore driven step
by step instead of through smtplib's `data()`, which cannot tell the two apart
and does not check the final reply code.
"""

from __future__ import annotations

import email.errors
import re
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from ..model import Envelope, FatalSendError, Notice, Outcome, Rendered, Sender, stop_mid_batch
from .mime import message_bytes, notice_bytes

RETRY_ATTEMPTS = 3
CRLF = b"\r\n"


class _Dropped(Exception):
    """The server closed the channel (421 or EOF) before the message was handed over."""


def wire_bytes(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends (smtplib sends bytes as they are, and the MIME is
    written with LF), leading dots doubled, ended by CRLF.CRLF (RFC 5321 4.5.2)."""
    data = re.sub(rb"\r?\n", CRLF, data)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(CRLF):
        data += CRLF
    return data + b"." + CRLF


def _text(resp: bytes | str) -> str:
    return resp.decode(errors="replace") if isinstance(resp, bytes) else str(resp)


def _quietly(step: Callable[[], object]) -> None:
    """Closing a channel that may already be dead: an error there changes nothing."""
    try:
        step()
    except OSError:  # smtplib.SMTPException is an OSError
        pass


class SmtpMessenger:
    name = "smtp"

    def __init__(self, host: str, port: int, sender: Sender, *, security: str = "starttls", username: str = "",
                 password: str | None = None, timeout: float = 30.0, batch_size: int = 20,
                 sleep: Callable[[float], None] = time.sleep):
        self.host, self.port, self.sender = host, port, sender
        self.security, self.username, self.password = security, username, password
        self.timeout, self.batch_size, self.sleep = timeout, batch_size, sleep
        self.conn: smtplib.SMTP | None = None
        self.connections = 0
        self.fatal: FatalSendError | None = None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        try:
            if self.security == "ssl":
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    try:
                        conn.starttls(context=context)
                    except smtplib.SMTPNotSupportedError:
                        conn.close()
                        raise FatalSendError(f"smtp: {self.host}:{self.port} does not offer STARTTLS "
                                             "(set smtp_security to ssl, or none for a local relay)") from None
        except ssl.SSLCertVerificationError as exc:
            raise FatalSendError(f"smtp: {self.host}:{self.port}: TLS certificate not trusted: "
                                 f"{exc.verify_message}") from None
        if self.username:
            try:
                conn.login(self.username, self.password or "")
            except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as exc:
                conn.close()
                detail = (f"{exc.smtp_code} {_text(exc.smtp_error)}" if isinstance(exc, smtplib.SMTPAuthenticationError)
                          else "the server offers no AUTH")
                raise FatalSendError(f"smtp: login refused for {self.username!r}: {detail}") from None
        self.connections += 1
        return conn

    def _ensure(self) -> smtplib.SMTP:
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            _quietly(self.conn.close)
        self.conn = None

    def _rset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except OSError:  # smtplib.SMTPException is an OSError
            self._drop()

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if self.fatal is not None:
            raise self.fatal
        outcomes: list[Outcome] = []
        for index, env in enumerate(envelopes):
            try:
                outcome, unreachable = self._send_one(rendered, env)
            except FatalSendError as exc:
                outcomes.append(stop_mid_batch(exc, outcomes, (e.delivery_id for e in envelopes[index:])))
                self.fatal = exc
                break
            outcomes.append(outcome)
            if unreachable and index + 1 < len(envelopes):
                # The server could not be reached at all: do not spend the same retries on
                # every other message of the batch; the next batch tries again.
                outcomes.append(Outcome("failed", [e.delivery_id for e in envelopes[index + 1:]],
                                        error=outcome.error))
                break
        return outcomes

    def send_notice(self, notice: Notice) -> Outcome:
        try:
            data = wire_bytes(notice_bytes(notice, self.sender))
        except (ValueError, email.errors.MessageError) as exc:
            return Outcome("failed", [], error=f"smtp: cannot build the message: {exc}")
        return self._transmit(data, notice.to, [])[0]

    def _send_one(self, rendered: Rendered, env: Envelope) -> tuple[Outcome, bool]:
        try:
            data = wire_bytes(message_bytes(rendered, env, self.sender))
        except (ValueError, email.errors.MessageError) as exc:  # UnicodeError is a ValueError
            return Outcome("failed", [env.delivery_id], error=f"smtp: cannot build the message: {exc}"), False
        return self._transmit(data, env.email, [env.delivery_id])

    def _transmit(self, data: bytes, recipient: str, ids: list[int]) -> tuple[Outcome, bool]:
        """MAIL, RCPT, DATA step by step: (outcome, whether the server was unreachable)."""
        # Display text is RFC 2047 (ASCII); only a non-ASCII address (To, From, Reply-To) needs SMTPUTF8.
        utf8 = not (recipient.isascii() and self.sender.email.isascii() and data.isascii())
        last_error, unreachable = "", False
        for attempt in range(RETRY_ATTEMPTS):
            if attempt:
                self.sleep(0.2 * 2 ** (attempt - 1))
            try:
                conn = self._ensure()
                conn.ehlo_or_helo_if_needed()
            except OSError as exc:  # refused, timed out, or greeted with an error
                last_error, unreachable = f"smtp: cannot connect to {self.host}:{self.port}: {exc}", True
                self._drop()
                continue
            unreachable = False
            try:
                options: list[str] = []
                if utf8:
                    if not conn.has_extn("smtputf8"):
                        return Outcome("failed", ids, error="smtp: the address is not ASCII and the server does "
                                                            "not offer SMTPUTF8"), False
                    options = ["SMTPUTF8", "BODY=8BITMIME"] if conn.has_extn("8bitmime") else ["SMTPUTF8"]
                code, resp = conn.mail(self.sender.email, options)
                if code == 421:
                    raise _Dropped(f"MAIL FROM: {code} {_text(resp)}")
                if code != 250:
                    self._rset(conn)
                    return Outcome("failed", ids, error=f"smtp MAIL FROM: {code} {_text(resp)}"), False
                code, resp = conn.rcpt(recipient)
                if code == 421:
                    raise _Dropped(f"RCPT TO: {code} {_text(resp)}")
                if code not in (250, 251):
                    self._rset(conn)
                    return Outcome("failed", ids, error=f"smtp RCPT TO: {code} {_text(resp)}"), False
                code, resp = conn.docmd("DATA")
                if code == 421:
                    raise _Dropped(f"DATA: {code} {_text(resp)}")
                if code != 354:
                    self._rset(conn)
                    return Outcome("failed", ids, error=f"smtp DATA: {code} {_text(resp)}"), False
                conn.send(data)
            except (_Dropped, OSError) as exc:  # smtplib.SMTPException is an OSError
                # The end of the message never went out: reconnect and try again.
                last_error = f"smtp: {exc or type(exc).__name__}"
                self._drop()
                continue
            try:
                code, resp = conn.getreply()
            except OSError as exc:
                self._drop()
                return Outcome("unknown", ids, error=f"smtp: no answer after the message was sent "
                                                     f"({exc or type(exc).__name__})"), False
            if code == 250:
                return Outcome("sent", ids, provider_id=_text(resp)[:200]), False
            if code == 421:
                self._drop()
            return Outcome("failed", ids, error=f"smtp after DATA: {code} {_text(resp)}"), False
        return Outcome("failed", ids, error=f"{last_error} (after {RETRY_ATTEMPTS} attempts)"), unreachable

    def close(self) -> None:
        if self.conn is not None:
            _quietly(self.conn.quit)
            self._drop()


class SmtpPool:
    """Several SMTP connections at once, for a relay whose round trips dominate.

    Each worker is an SmtpMessenger with its own connection and the same
    per-message rules; a batch is dealt out among them and their outcomes
    gathered, so the ledger sees one batch exactly as with one connection.
    """
    name = "smtp"

    def __init__(self, connections: int, host: str, port: int, sender: Sender, **options) -> None:
        if connections < 2:
            raise ValueError("connections: a pool needs at least 2 (use SmtpMessenger for one)")
        self.workers = [SmtpMessenger(host, port, sender, **options) for _ in range(connections)]
        self.batch_size = self.workers[0].batch_size
        self.pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="smtp")
        self.fatal: FatalSendError | None = None

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if self.fatal is not None:
            raise self.fatal
        count = len(self.workers)
        shares = [list(envelopes[i::count]) for i in range(count)]
        futures = [(share, self.pool.submit(worker.send, rendered, share))
                   for worker, share in zip(self.workers, shares) if share]
        outcomes: list[Outcome] = []
        stopped: list[tuple[list[Envelope], FatalSendError]] = []
        for share, future in futures:
            try:
                outcomes += future.result()
            except FatalSendError as exc:  # this worker handed over nothing of its share
                stopped.append((share, exc))
        if stopped:
            exc = stopped[0][1]
            outcomes.append(stop_mid_batch(exc, outcomes, (e.delivery_id for share, _ in stopped for e in share)))
            self.fatal = exc
        return outcomes

    def send_notice(self, notice: Notice) -> Outcome:
        return self.workers[0].send_notice(notice)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.pool.shutdown(wait=True)
