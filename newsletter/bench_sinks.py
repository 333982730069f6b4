"""Loopback sinks for `newsletter bench`: an HTTP/1.1 server that answers like SendGrid's send API,
and aiosmtpd, each run in a process of its own so it does not share the digest's core."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
    target = "serve_http_sink" if kind == "sendgrid" else "serve_smtp_sink"
    args = f"{port}, {str(cert)!r}, {str(key)!r}" if cert else f"{port}"
    proc = subprocess.Popen([sys.executable, "-c", f"from newsletter.bench_sinks import {target}; {target}({args})"])
    if listening(port):
        return proc, port
    proc.kill()
    raise RuntimeError(f"{kind} sink did not start on port {port}")


