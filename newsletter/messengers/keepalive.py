"""One keep-alive HTTP(S) connection for API requests: a million-recipient send is about 900 POSTs of ~600 KB.

Written over http.client because the official SendGrid client (urllib underneath) opens a new connection
per request and formats each body into a debug string even with logging off; the official package still
supplies the headers, the webhook verifier and the error model.
"""

from __future__ import annotations

import http.client
import select
import ssl
from typing import NamedTuple
from urllib.parse import urlsplit


class NotSent(Exception):
    """The request never went out whole (no connection, or it broke while writing the body):
    the server cannot have accepted it, so it is safe to retry."""


class Answer(NamedTuple):
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


def _dropped(sock) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (EOF): do not reuse it."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class KeepAlive:
    def __init__(self, base_url: str, timeout: float):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"host: need http(s)://host[:port], got {base_url!r}")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far (tests check that requests share one)

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is not None and (self.conn.sock is None or _dropped(self.conn.sock)):
            self.close()
        if self.conn is None:
            if self.https:
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                raise NotSent(str(exc)) from None
            self.conn = conn
            self.connections += 1
        return self.conn

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """NotSent when the request did not go out whole; OSError or HTTPException when it went out and
        its answer was lost or garbled (the caller must treat that request as possibly accepted)."""
        conn = self._connection()
        try:
            conn.request("POST", self.base_path + path, body=body, headers=headers)
        except (OSError, http.client.HTTPException) as exc:  # the body did not reach the server whole
            self.close()
            raise NotSent(str(exc) or type(exc).__name__) from None
        try:
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return Answer(response.status, response.reason, response.msg, data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
