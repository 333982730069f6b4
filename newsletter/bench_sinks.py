"""Loopback sinks for `newsletter bench`: an HTTP/1.1 server that answers like SendGrid's send API,
aiosmtpd, and an SMTP server that only reads (`serve_smtp_reader`), each run in a process of its own so it
does not share the digest's core."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

TO_RE = re.compile(rb'"to":\s*\[')


class _SinkHandler(BaseHTTPRequestHandler):
    counts = {"requests": 0, "recipients": 0}
    lock = threading.Lock()  # one thread per connection: several workers post at once
    protocol_version = "HTTP/1.1"  # keep-alive, as SendGrid's API

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        recipients = len(TO_RE.findall(body))
        with self.lock:
            self.counts["requests"] += 1
            self.counts["recipients"] += recipients
            number = self.counts["requests"]
        self.send_response(202)
        self.send_header("X-Message-Id", f"sink-{number}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        with self.lock:
            data = json.dumps(self.counts).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def serve_http_sink(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _SinkHandler).serve_forever()


def serve_smtp_sink(port: int, cert: str = "", key: str = "") -> None:
    """aiosmtpd answering 250 to everything; with a certificate it offers (and requires) STARTTLS."""
    import ssl

    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            return "250 OK"

    tls: dict[str, Any] = {}
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        tls = {"tls_context": context, "require_starttls": True}
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, **tls)
    controller.start()
    threading.Event().wait()


# -- an SMTP server that only reads ---------------------------------------------------------------------
#
# Written by hand on purpose: aiosmtpd reads each message line by line in Python (readuntil per line,
# dot-unstuffing, decoding) and is itself the ceiling at about 240 messages a second on this machine, so it
# cannot show what the client can do. This one answers every command with a canned reply and reads DATA as
# raw chunks, looking only for the terminating CRLF.CRLF with bytes.find: no parsing of the message at all.
# It counts the messages it accepted and their recipients, and says so to a non-standard `XCOUNT` command
# (the bench asks it after the run, like the HTTP sink's GET /count).

END_OF_DATA = b"\r\n.\r\n"
CHUNK = 1 << 18


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = self.recipients = 0

    def add(self, recipients: int) -> None:
        with self.lock:
            self.messages += 1
            self.recipients += recipients


def read_data(recv: Callable[[int], bytes], data: bytes) -> bytes | None:
    """Read a message up to its CRLF.CRLF; what came after it (the next command), or None at EOF.
    `data` is what was already read after the DATA line, whose own CRLF may start the terminator."""
    tail = b"\r\n"
    while True:
        joined = tail + data[:4]  # a terminator across two reads starts in the tail
        at = joined.find(END_OF_DATA)
        if at >= 0:
            return data[at + 5 - len(tail):]
        at = data.find(END_OF_DATA)
        if at >= 0:
            return data[at + 5:]
        tail = (tail + data)[-4:] if len(data) < 4 else data[-4:]
        data = recv(CHUNK)
        if not data:
            return None


def _ehlo(tls: bool) -> bytes:
    lines = ["sink", "PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 104857600"] + (["STARTTLS"] if tls else [])
    return "".join(f"250{' ' if i == len(lines) - 1 else '-'}{line}\r\n" for i, line in enumerate(lines)).encode()


def _session(sock: socket.socket, context: ssl.SSLContext | None, counts: _Counts) -> None:
    """One client: canned replies, STARTTLS required when there is a certificate."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"220 sink ESMTP\r\n")
    buffer, recipients, secure = b"", 0, context is None
    while True:
        while b"\r\n" not in buffer:
            chunk = sock.recv(CHUNK)
            if not chunk:
                return
            buffer += chunk
        line, _, buffer = buffer.partition(b"\r\n")
        verb = line[:8].split(b" ", 1)[0].upper()
        if verb in (b"EHLO", b"HELO"):
            recipients = 0
            sock.sendall(_ehlo(not secure) if verb == b"EHLO" else b"250 sink\r\n")
        elif verb == b"STARTTLS" and not secure:
            sock.sendall(b"220 ready\r\n")
            sock = context.wrap_socket(sock, server_side=True)  # type: ignore[union-attr]
            buffer, secure = b"", True
        elif verb == b"XCOUNT":
            sock.sendall(f"250 {counts.messages} {counts.recipients}\r\n".encode())
        elif verb == b"QUIT":
            sock.sendall(b"221 bye\r\n")
            return
        elif verb in (b"RSET", b"NOOP"):
            recipients = 0 if verb == b"RSET" else recipients
            sock.sendall(b"250 OK\r\n")
        elif not secure:
            sock.sendall(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
        elif verb == b"MAIL":
            recipients = 0
            sock.sendall(b"250 OK\r\n")
        elif verb == b"RCPT":
            recipients += 1
            sock.sendall(b"250 OK\r\n")
        elif verb == b"DATA" and recipients:
            sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            rest = read_data(sock.recv, buffer)
            if rest is None:
                return
            counts.add(recipients)
            buffer, recipients = rest, 0
            sock.sendall(b"250 OK queued\r\n")
        elif verb == b"DATA":
            sock.sendall(b"503 5.5.1 RCPT first\r\n")
        else:
            sock.sendall(b"502 5.5.2 not implemented\r\n")


def serve_smtp_reader(port: int, cert: str = "", key: str = "") -> None:
    """The reading SMTP sink on 127.0.0.1:port, a thread per connection; with a certificate it offers (and
    requires) STARTTLS."""
    context = None
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    counts = _Counts()
    listener = socket.create_server(("127.0.0.1", port), backlog=64)

    def run(sock: socket.socket) -> None:
        try:
            _session(sock, context, counts)
        except OSError:  # ssl.SSLError is one: a client gone mid-session
            pass
        finally:
            sock.close()

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=run, args=(sock,), daemon=True).start()


def smtp_sink_counts(port: int) -> tuple[int, int]:
    """(messages, recipients) the reading sink on `port` accepted so far."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"XCOUNT\r\nQUIT\r\n")
        code, messages, recipients = reader.readline().split()
        if code != b"250":
            raise RuntimeError(f"smtp sink: XCOUNT answered {code!r}")
        return int(messages), int(recipients)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def start_sink(kind: str, cert: Path | None = None, key: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    target = {"sendgrid": "serve_http_sink", "smtp": "serve_smtp_sink", "smtp-reader": "serve_smtp_reader"}[kind]
    args = f"{port}, {str(cert)!r}, {str(key)!r}" if cert else f"{port}"
    proc = subprocess.Popen([sys.executable, "-c", f"from newsletter.bench_sinks import {target}; {target}({args})"])
    if listening(port):
        return proc, port
    proc.kill()
    raise RuntimeError(f"{kind} sink did not start on port {port}")


