"""SMTP delivery over one reused connection, reconnecting when it drops.

A failure before the message's last byte went out is safe to retry (the server
cannot have queued a message whose end it never saw); a lost answer after that
is ambiguous (the server may have queued it), so that message is reported
unknown and never retried blindly. The DATA command is therefore driven step
by step instead of through smtplib's `data()`, which cannot tell the two apart
and does not check the final reply code.

Outcomes: a 4xx answer, or a relay that cannot be reached or drops the line
before the message was handed over, is `deferred` (a later run retries it); a
5xx refusal of the recipient or the message is `failed`; a 5xx refusal of the
sender concerns every message and stops the run (FatalSendError), as do TLS
trust and set-up errors.
"""

from __future__ import annotations

import email.errors
import re
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from ..model import Envelope, FatalSendError, Notice, Outcome, Rendered, Sender, stop_mid_batch
from .mime import notice_bytes, wire_bytes, wire_message

RETRY_ATTEMPTS = 3
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
NAME_MISMATCH = (62, 64)


class _Dropped(Exception):
    """The server closed the channel (421 or EOF) before the message was handed over."""


class _NoDelay:
    """Every SMTP socket with TCP_NODELAY: smtplib writes each command on its own and then waits for
    the answer, so Nagle's algorithm holding back the last segment until the server's delayed ACK
    (about 40 ms) costs a pause per command (measured: 22 against 317 messages a second to Postfix)."""

    def _get_socket(self, host, port, timeout):  # smtplib's hook for every new connection
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class _SMTP(_NoDelay, smtplib.SMTP):
    """Plain and STARTTLS: starttls() wraps the same socket, so the option stays set."""


class _SMTP_SSL(_NoDelay, smtplib.SMTP_SSL):
    pass


#: An address smtplib.quoteaddr gives back as <address>: ASCII atoms, dots and one @ (what nearly all are).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9.-]+")


def _mail(conn: smtplib.SMTP, sender: str, options: list[str]) -> tuple[int, bytes]:
    """conn.mail() without its address parser for a plain address: smtplib.quoteaddr runs the email
    package's RFC 2822 parser (about a tenth of the client's time per message) to return `<address>`.
    The same command, the same reply handling (docmd is putcmd and getreply, as mail() does)."""
    if options or not _PLAIN_ADDRESS.fullmatch(sender):
        return conn.mail(sender, options)
    return conn.docmd("mail", f"FROM:<{sender}>")


def _rcpt(conn: smtplib.SMTP, recipient: str) -> tuple[int, bytes]:
    """conn.rcpt() likewise."""
    if not _PLAIN_ADDRESS.fullmatch(recipient):
        return conn.rcpt(recipient)
    return conn.docmd("rcpt", f"TO:<{recipient}>")


def _text(resp: bytes | str) -> str:
    return resp.decode(errors="replace") if isinstance(resp, bytes) else str(resp)


def _quietly(step: Callable[[], object]) -> None:
    """Closing a channel that may already be dead: an error there changes nothing."""
    try:
        step()
    except OSError:  # smtplib.SMTPException is an OSError
        pass


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates and host names verified; with `ca_file` (smtp_ca_file) only that PEM bundle is trusted."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except OSError as exc:  # FileNotFoundError, PermissionError, and ssl.SSLError for a file that is not PEM
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise FatalSendError(f"smtp_ca_file: {ca_file}: cannot be used as a CA bundle: {reason}") from None


class SmtpMessenger:
    name = "smtp"

    def __init__(self, host: str, port: int, sender: Sender, *, security: str = "starttls", username: str = "",
                 password: str | None = None, timeout: float = 30.0, batch_size: int = 20, ca_file: str = "",
                 sleep: Callable[[float], None] = time.sleep):
        self.host, self.port, self.sender = host, port, sender
        self.processor = f"smtp:{host}"  # who gets the messages (the ledger notes it per issue)
        self.security, self.username, self.password = security, username, password
        self.timeout, self.batch_size, self.sleep = timeout, batch_size, sleep
        self.context = tls_context(ca_file) if security != "none" else None
        self.ca_file = ca_file
        self.conn: smtplib.SMTP | None = None
        self.connections = 0
        self.fatal: FatalSendError | None = None

    @property
    def where(self) -> str:
        return f"smtp: {self.host}:{self.port}"

    def _connect(self) -> smtplib.SMTP:
        try:
            if self.security == "ssl":
                conn: smtplib.SMTP = _SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.context)
            else:
                conn = _SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    try:
                        conn.starttls(context=self.context)
                    except smtplib.SMTPNotSupportedError:
                        conn.close()
                        raise FatalSendError(f"{self.where} does not offer STARTTLS "
                                             "(set smtp_security to ssl, or none for a local relay)") from None
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in NAME_MISMATCH:
                raise FatalSendError(f"{self.where}: TLS certificate is for another name: {exc.verify_message} "
                                     "(set smtp_host to a name the certificate carries)") from None
            hint = "check smtp_ca_file" if self.ca_file else "set smtp_ca_file to the CA bundle that signed it"
            raise FatalSendError(f"{self.where}: TLS certificate not trusted: {exc.verify_message} ({hint})") from None
        except ssl.SSLEOFError:
            raise  # the line went down during the handshake: transient, retried like any drop
        except ssl.SSLError as exc:
            raise FatalSendError(f"{self.where}: TLS handshake failed: {exc.reason or exc} "
                                 f"(is smtp_security = {self.security!r} what this port speaks?)") from None
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
                # The server could not be reached at all: do not spend the same retries on every
                # other message of the batch; they go back to pending, untried.
                outcomes.append(Outcome("pending", [e.delivery_id for e in envelopes[index + 1:]],
                                        error=outcome.error))
                break
        return outcomes

    def send_notice(self, notice: Notice) -> Outcome:
        try:
            data = wire_bytes(notice_bytes(notice, self.sender))
        except (ValueError, email.errors.MessageError) as exc:
            return Outcome("failed", [], error=f"smtp: cannot build the message: {exc}")
        try:
            return self._transmit(data, notice.to, [])[0]
        except FatalSendError as exc:
            return Outcome("failed", [], error=str(exc))

    def _send_one(self, rendered: Rendered, env: Envelope) -> tuple[Outcome, bool]:
        try:
            data = wire_message(rendered, env, self.sender)
        except (ValueError, email.errors.MessageError) as exc:  # UnicodeError is a ValueError
            return Outcome("failed", [env.delivery_id], error=f"smtp: cannot build the message: {exc}"), False
        return self._transmit(data, env.email, [env.delivery_id])

    def _refused_sender(self, code: int, resp: bytes) -> FatalSendError:
        """A 5xx to MAIL FROM refuses every message alike: one line saying what to change."""
        said = f"{code} {_text(resp)}"
        if "starttls" in said.lower():
            hint = "set smtp_security to starttls"
        elif "auth" in said.lower():
            hint = "set smtp_username (and NEWSLETTER_SMTP_PASSWORD)"
        else:
            hint = "check sender_email and what the relay lets it send"
        return FatalSendError(f"{self.where} refuses mail from {self.sender.email}: {said} ({hint})")

    def _transmit(self, data: bytes, recipient: str, ids: list[int]) -> tuple[Outcome, bool]:
        """MAIL, RCPT, DATA step by step: (outcome, whether the server was unreachable)."""
        # Display text is RFC 2047 (ASCII); only a non-ASCII address (To, From, Reply-To) needs SMTPUTF8.
        # One delivery: its VERP envelope sender when bounce_address is set; a notice (no delivery) the plain one.
        mail_from = self.sender.envelope_from(ids[0]) if len(ids) == 1 else self.sender.email
        utf8 = not (recipient.isascii() and mail_from.isascii() and data.isascii())
        last_error, unreachable = "", False
        for attempt in range(RETRY_ATTEMPTS):
            if attempt:
                self.sleep(0.2 * 2 ** (attempt - 1))
            try:
                conn = self._ensure()
                conn.ehlo_or_helo_if_needed()
            except OSError as exc:  # refused, timed out, or greeted with an error
                last_error, unreachable = f"{self.where}: cannot connect: {exc or type(exc).__name__}", True
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
                for step, command in (("MAIL FROM", lambda: _mail(conn, mail_from, options)),
                                      ("RCPT TO", lambda: _rcpt(conn, recipient)), ("DATA", lambda: conn.docmd("DATA"))):
                    code, resp = command()
                    if code == 421:
                        raise _Dropped(f"{step}: {code} {_text(resp)}")
                    if code in (250, 251, 354):
                        continue
                    if step == "MAIL FROM" and code >= 500:
                        self._drop()
                        raise self._refused_sender(code, resp)
                    self._rset(conn)
                    status = "deferred" if 400 <= code < 500 else "failed"
                    return Outcome(status, ids, error=f"smtp {step}: {code} {_text(resp)}"), False
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
            # An answer to the final dot other than 250 means the server did not take the message.
            status = "deferred" if 400 <= code < 500 else "failed"
            return Outcome(status, ids, error=f"smtp after DATA: {code} {_text(resp)}"), False
        return Outcome("deferred", ids, error=f"{last_error} (after {RETRY_ATTEMPTS} attempts)"), unreachable

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
        self.batch_size, self.processor = self.workers[0].batch_size, self.workers[0].processor
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
