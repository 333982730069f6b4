"""Real servers on loopback, started by the tests: SMTP (aiosmtpd) and SendGrid's contract (Prism).

A missing server program is a failure, never a skip.

- `smtp_server` (and `smtp_server_ascii`, which does not offer SMTPUTF8):
  aiosmtpd in a thread on 127.0.0.1, collecting every accepted message in memory
  (`EmailMessage` objects carrying `mail_from`, `rcpt_tos` and the raw bytes
  as received). Faults can be switched on per address: drop the
  connection before DATA, answer 421, drop it after the message arrived, refuse
  a recipient or the message. It lives in the test process, so it outlives a
  killed child process.
- `prism`: Stoplight Prism serving the copy of SendGrid's mail/send contract in
  tests/contracts/ (CI runs on a clean clone; ../shared may not be there).
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

import pytest

TESTS = Path(__file__).resolve().parent
SENDGRID_SPEC = TESTS / "contracts" / "sendgrid_mail_send.openapi.json"
PRISM = TESTS / "node" / "node_modules" / ".bin" / "prism"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# -- SMTP ----------------------------------------------------------------------

@dataclass
class SmtpSink:
    """The aiosmtpd handler and what it received.

    Faults are switched on by filling the sets below: `drop_at_mail` holds
    ordinals of MAIL FROM commands (over all connections), the others hold
    recipient addresses; the drops and the 421 fire once per address, the
    refusals every time.
    """

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    drop_at_mail: set[int] = field(default_factory=set)    # close the connection at the n-th MAIL FROM (1-based)
    say_421_at_rcpt: set[str] = field(default_factory=set)  # "421 closing" at RCPT TO, then close
    drop_at_rcpt: set[str] = field(default_factory=set)     # close the connection at RCPT TO, no answer
    drop_after_data: set[str] = field(default_factory=set)  # keep the message, close without answering
    refuse_rcpt: set[str] = field(default_factory=set)      # 550 at RCPT TO (every time)
    refuse_data: set[str] = field(default_factory=set)      # 554 after DATA (every time)
    on_message: Callable[[EmailMessage], None] | None = None  # called before the 250 goes out
    connections: int = 0  # SMTP sessions that said EHLO/HELO
    mails: int = 0  # MAIL FROM commands seen, over all connections
    cond: threading.Condition = field(default_factory=threading.Condition)

    # aiosmtpd hooks (run on the server's event loop thread) ---------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if session.host_name is None:
            with self.cond:
                self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        if self.mails in self.drop_at_mail:
            server.transport.close()
            return "250 OK"  # never reaches the client
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.say_421_at_rcpt:
            self.say_421_at_rcpt.discard(address)
            server.loop.call_soon(server.transport.close)
            return "421 4.3.2 Service shutting down, closing channel"
        if address in self.drop_at_rcpt:
            self.drop_at_rcpt.discard(address)
            server.transport.close()
            return "250 OK"
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if set(envelope.rcpt_tos) & self.refuse_data:
            return "554 5.7.1 Message refused by policy"
        raw = envelope.original_content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        msg.mail_from = envelope.mail_from
        msg.rcpt_tos = list(envelope.rcpt_tos)
        msg.raw = raw
        msg.peer = session.peer  # (host, port) of the client: which process sent it
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()
        if self.on_message is not None:
            self.on_message(msg)
        dropped = set(envelope.rcpt_tos) & self.drop_after_data
        if dropped:
            self.drop_after_data -= dropped
            server.transport.close()
        return "250 2.0.0 Ok: queued"

    # test helpers ---------------------------------------------------------------

    def count(self) -> int:
        with self.cond:
            return len(self.messages)

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.messages) >= count, timeout)

    def by_recipient(self) -> dict[str, list[EmailMessage]]:
        out: dict[str, list[EmailMessage]] = {}
        with self.cond:
            for msg in self.messages:
                for rcpt in msg.rcpt_tos:
                    out.setdefault(rcpt, []).append(msg)
        return out


def _serve_smtp(**smtp_parameters):
    """aiosmtpd on 127.0.0.1 at a free port, with aiosmtpd's SMTP parameters; yields its SmtpSink."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        pytest.fail("aiosmtpd is not installed: run tests/setup.sh (pip install -e '.[test]'); SMTP tests never skip")
    sink = SmtpSink()
    for _ in range(5):
        sink.port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=sink.port, ready_timeout=10, **smtp_parameters)
        try:
            controller.start()
        except OSError:  # the port was taken between probe and bind
            continue
        break
    else:
        pytest.fail("could not start aiosmtpd on a free loopback port")
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_server():
    """aiosmtpd on 127.0.0.1 at a free port (offering SMTPUTF8, aiosmtpd's default); yields the SmtpSink."""
    yield from _serve_smtp()


@pytest.fixture
def smtp_server_ascii():
    """The same without SMTPUTF8 (RFC 6531), as many relays are: it takes ASCII addresses only."""
    yield from _serve_smtp(enable_SMTPUTF8=False)


# -- Prism (SendGrid's contract) -------------------------------------------------

@dataclass
class PrismServer:
    url: str
    log: Path


@pytest.fixture(scope="session")
def prism(tmp_path_factory):
    """Stoplight Prism mocking SendGrid's v3 mail/send on loopback; fails when Prism or node is missing."""
    if not PRISM.exists():
        pytest.fail(f"{PRISM} not found: run tests/setup.sh (npm ci --prefix tests/node); contract tests never skip")
    if shutil.which("node") is None:
        pytest.fail("node not found on PATH: Prism needs Node.js 18+; contract tests never skip")
    if not SENDGRID_SPEC.exists():
        pytest.fail(f"{SENDGRID_SPEC} missing: the contract copy belongs in the repository")
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    for _ in range(3):
        port = free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen([str(PRISM), "mock", str(SENDGRID_SPEC), "-h", "127.0.0.1", "-p", str(port)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        if wait_for_port(port, 60, alive=lambda: proc.poll() is None):
            break
        _stop(proc)
    else:
        pytest.fail(f"Prism did not start; its log:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        yield PrismServer(url=f"http://127.0.0.1:{port}", log=log)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
