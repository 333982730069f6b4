"""SMTP delivery over one reused connection, reconnecting when it drops.

A failure before DATA is safe to retry (nothing was handed over); a failure
while DATA is in flight is ambiguous (the server may have queued the message),
so that message is reported unknown and never retried blindly.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from typing import Callable, Sequence

from ..mime import build_message
from ..render import Rendered
from .base import Envelope, FatalSendError, Outcome, Sender

RETRY_ATTEMPTS = 3


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

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.security == "ssl":
            conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                conn.starttls(context=context)
        if self.username:
            try:
                conn.login(self.username, self.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                conn.close()
                raise FatalSendError(f"smtp: login refused for {self.username!r}: {exc.smtp_code} "
                                     f"{exc.smtp_error.decode(errors='replace')}") from None
        self.connections += 1
        return conn

    def _ensure(self) -> smtplib.SMTP:
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.conn = None

    def send(self, rendered: Rendered, envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [self._send_one(rendered, env) for env in envelopes]

    def _send_one(self, rendered: Rendered, env: Envelope) -> Outcome:
        data = build_message(rendered, env, self.sender).as_bytes()
        last_error = ""
        for attempt in range(RETRY_ATTEMPTS):
            try:
                conn = self._ensure()
                code, resp = conn.mail(self.sender.email)
                if code != 250:
                    conn.rset()
                    return Outcome("failed", [env.delivery_id], error=f"smtp MAIL FROM: {code} {resp.decode(errors='replace')}")
                code, resp = conn.rcpt(env.email)
                if code not in (250, 251):
                    conn.rset()
                    return Outcome("failed", [env.delivery_id], error=f"smtp RCPT TO: {code} {resp.decode(errors='replace')}")
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                # Nothing was handed over yet: reconnect and try again.
                last_error = f"smtp: {exc or type(exc).__name__}"
                self._drop()
                self.sleep(0.2 * 2 ** attempt)
                continue
            try:
                code, resp = conn.data(data)
            except smtplib.SMTPDataError as exc:
                return Outcome("failed", [env.delivery_id], error=f"smtp DATA: {exc.smtp_code} "
                                                                   f"{exc.smtp_error.decode(errors='replace')}")
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                return Outcome("unknown", [env.delivery_id],
                               error=f"smtp: connection lost during DATA ({exc or type(exc).__name__})")
            return Outcome("sent", [env.delivery_id], provider_id=resp.decode(errors="replace")[:200])
        return Outcome("failed", [env.delivery_id], error=f"{last_error} (after {RETRY_ATTEMPTS} attempts)")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self.conn = None
