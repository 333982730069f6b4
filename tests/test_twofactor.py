"""Two-step login (TOTP, RFC 6238) with the app's clock fixed: enrolment from the account page and from the CLI,
login with a code, a code that works once, recovery codes, and `require_2fa_for_admins`."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from newsletter import twofactor
from newsletter.cli import cli
from newsletter.settings import load_config
from tests.conftest import SECRET
from tests.test_web import (EDITOR, HASH, PASSWORD, clock, drafts, form_token, logged_in, login,  # noqa: F401
                            make_app)

#: RFC 6238 appendix B: the SHA-1 secret "12345678901234567890" gives these 8-digit codes; pyotp's 6 digits are
#: their last six.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
RFC_VECTORS = {59: "94287082", 1111111109: "07081804", 1111111111: "14050471", 1234567890: "89005924",
               2000000000: "69279037"}


@pytest.mark.parametrize("at, code", sorted(RFC_VECTORS.items()))
def test_the_totp_library_gives_the_rfc_6238_codes(at, code):
    assert pyotp.TOTP(RFC_SECRET).at(at) == code[-6:]
    assert pyotp.TOTP(RFC_SECRET, digits=8).at(at) == code


def enrol(client, app_clock, drafts) -> tuple[str, list[str]]:
    """Set up two-step login from the account page; returns (secret, recovery codes)."""
    token = form_token(client, "/editor/account")
    assert client.post("/editor/account/2fa", data={"csrf_token": token}).status_code == 303
    page = client.get("/editor/account").get_data(as_text=True)
    assert re.search(r"<svg[^>]*class=\"qr\"", page) and "<script" not in page  # inline, no script, no <img>
    secret = re.search(r"Key: <code>([A-Z2-7]+)</code>", page).group(1)
    stored = drafts.store.editor_secret(EDITOR)
    assert secret not in stored["secret"] and stored["confirmed_at"] is None  # encrypted, not yet on
    wrong = client.post("/editor/account/2fa/confirm", data={"csrf_token": token, "code": "000000"})
    assert wrong.status_code == 400 and drafts.store.editor_secret(EDITOR)["confirmed_at"] is None
    done = client.post("/editor/account/2fa/confirm",
                       data={"csrf_token": token, "code": pyotp.TOTP(secret).at(app_clock.now)})
    assert done.status_code == 200
    codes = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", done.get_data(as_text=True))
    assert len(codes) == twofactor.RECOVERY_CODES
    assert secret not in client.get("/editor/account").get_data(as_text=True)  # never shown again
    return secret, codes


def log_out(client) -> None:
    client.post("/editor/logout", data={"csrf_token": form_token(client, "/")})


def code_step(client, code: str):
    return client.post("/editor/login/code", data={"code": code, "csrf_token": form_token(client, "/editor/login")})


def test_enrol_then_log_in_with_a_code_that_works_once(drafts, make_app, clock):
    app = make_app(drafts)
    client = app.test_client()
    assert login(client).status_code == 303
    secret, codes = enrol(client, clock, drafts)
    dump = "\n".join(str(r) for r in drafts.store.query("SELECT * FROM editor_recovery_codes"))
    assert not any(code.replace("-", "") in dump or code in dump for code in codes)  # only hashes
    log_out(client)

    first = login(client)
    assert first.status_code == 303 and first.headers["Location"].endswith("/editor/login/code")
    assert not logged_in(client)  # the password alone opens nothing
    assert code_step(client, "123456").status_code == 401
    clock.now += 30
    code = pyotp.TOTP(secret).at(clock.now)
    assert code_step(client, code).status_code == 303 and logged_in(client)
    log_out(client)
    login(client)
    assert code_step(client, code).status_code == 401  # the same code again: refused
    clock.now += 30
    assert code_step(client, pyotp.TOTP(secret).at(clock.now)).status_code == 303
    [row] = [r for r in drafts.store.query("SELECT second_factor FROM editor_sessions")]
    assert row["second_factor"] == 1
    actions = [r["detail"].get("second_factor") for r in drafts.store.audit_entries(action="login")]
    assert actions[:2] == ["totp", "totp"]


def test_a_code_a_step_early_or_late_passes_two_steps_away_does_not(drafts, make_app, clock):
    client = make_app(drafts).test_client()
    login(client)
    secret, _ = enrol(client, clock, drafts)
    totp = pyotp.TOTP(secret)
    for offset, expected in ((+30, 303), (-30, 303), (+60, 401), (-60, 401)):
        clock.now += 300  # a new step each time, past the one used before
        log_out(client)
        login(client)
        assert code_step(client, totp.at(clock.now + offset)).status_code == expected, offset


def test_a_recovery_code_works_once(drafts, make_app, clock):
    client = make_app(drafts).test_client()
    login(client)
    _, codes = enrol(client, clock, drafts)
    log_out(client)
    login(client)
    assert code_step(client, codes[0].upper()).status_code == 303  # case and dash do not matter
    log_out(client)
    login(client)
    assert code_step(client, codes[0]).status_code == 401
    assert drafts.store.recovery_codes_left(EDITOR) == twofactor.RECOVERY_CODES - 1


def test_the_code_step_expires_and_is_limited(drafts, make_app, clock):
    client = make_app(drafts, LOGIN_MAX_FAILURES=2).test_client()
    login(client)
    secret, _ = enrol(client, clock, drafts)
    log_out(client)
    login(client)
    clock.now += 301
    late = code_step(client, pyotp.TOTP(secret).at(clock.now))
    assert late.status_code == 303 and late.headers["Location"].endswith("/editor/login") and not logged_in(client)
    login(client)
    assert [code_step(client, "000000").status_code for _ in range(3)] == [401, 401, 429]


def test_an_admin_must_enrol_when_the_site_requires_it(drafts, make_app, clock):
    app = make_app(drafts, require_2fa_for_admins=True,
                   editors={EDITOR: HASH, "ann": {"hash": HASH, "role": "author"}})
    admin = app.test_client()
    login(admin)
    assert admin.get("/editor/").headers["Location"].endswith("/editor/account")
    token = form_token(admin, "/editor/account")
    assert admin.post("/editor/issues/1/approve", data={"csrf_token": token}).status_code == 403
    assert drafts.store.get_issue(1)["status"] == "draft"
    author = app.test_client()
    login(author, "ann")
    assert author.get("/editor/").status_code == 200  # authors are not asked
    enrol(admin, clock, drafts)
    assert admin.get("/editor/").status_code == 200  # this session proved the code
    assert admin.post("/editor/account/2fa/disable", data={"csrf_token": token, "code": "1"}).status_code == 403


def test_turning_it_off_needs_a_current_code(drafts, make_app, clock):
    client = make_app(drafts).test_client()
    login(client)
    secret, _ = enrol(client, clock, drafts)
    token = form_token(client, "/editor/account")
    assert client.post("/editor/account/2fa/disable", data={"csrf_token": token, "code": "000000"}).status_code == 400
    clock.now += 30
    assert client.post("/editor/account/2fa/disable",
                       data={"csrf_token": token, "code": pyotp.TOTP(secret).at(clock.now)}).status_code == 303
    assert not twofactor.is_on(drafts.store, EDITOR)
    log_out(client)
    assert login(client).headers["Location"].endswith("/editor/")


def test_an_admin_resets_a_lost_second_factor_and_ends_the_sessions(drafts, make_app, clock):
    app = make_app(drafts, editors={EDITOR: HASH, "ann": {"hash": HASH, "role": "author"}})
    ann = app.test_client()
    login(ann, "ann")
    enrol_secret = twofactor.begin(drafts.store, SECRET, "ann", "x").secret
    twofactor.confirm(drafts.store, SECRET, "ann", pyotp.TOTP(enrol_secret).at(clock.now), clock.now)
    admin = app.test_client()
    login(admin)
    response = admin.post("/editor/editors/ann/2fa-reset", data={"csrf_token": form_token(admin, "/editor/editors")})
    assert response.status_code == 303
    assert not twofactor.is_on(drafts.store, "ann") and not logged_in(ann)
    assert drafts.store.audit_entries(action="editor.2fa-reset")[0]["target"] == "editor:ann"


def test_the_secret_cannot_be_read_with_another_site_secret(drafts):
    twofactor.begin(drafts.store, SECRET, EDITOR, "x")
    with pytest.raises(twofactor.TwoFactorError, match="reset it"):
        twofactor.pending(drafts.store, "another secret", EDITOR, "x")


class CodeFromTheApp(io.RawIOBase):
    """Standard input that types the code an authenticator app would show once the command has made the secret:
    read when the command asks for it, from the otpauth URI `uri_source` gives (the one the QR code holds)."""

    def __init__(self, uri_source):
        self.uri_source = uri_source
        self.data: bytes | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not len(buffer):
            return 0
        if self.data is None:
            secret = parse_qs(urlsplit(self.uri_source()).query)["secret"][0]
            self.data = (pyotp.TOTP(secret).now() + "\n").encode()
        n = min(len(buffer), len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


def test_enrolment_from_the_cli_writes_an_owner_only_svg_and_prints_recovery_codes(drafts, runner, tmp_path):
    path = Path(drafts.config.source)
    runner.invoke(cli, ["--config", str(path), "editors", "add", EDITOR, "--role", "admin"],
                  input=f"{PASSWORD}\n{PASSWORD}\n", catch_exceptions=False)
    qr = tmp_path / "alice.svg"
    pending = lambda: twofactor.pending(drafts.store, SECRET, EDITOR, load_config(path).site_name).uri  # noqa: E731
    result = runner.invoke(cli, ["--config", str(path), "editors", "2fa", EDITOR, "--qr", str(qr)],
                           input=CodeFromTheApp(uri_source=pending), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "otpauth://totp/" in result.output and "two-step login of alice is on" in result.output
    assert len(re.findall(r"^  [a-z0-9]{5}-[a-z0-9]{5}$", result.output, flags=re.M)) == twofactor.RECOVERY_CODES
    assert qr.read_text().startswith("<svg") and qr.stat().st_mode & 0o077 == 0
    assert twofactor.is_on(drafts.store, EDITOR)
    off = runner.invoke(cli, ["--config", str(path), "editors", "2fa", EDITOR, "--off"], catch_exceptions=False)
    assert off.exit_code == 0 and not twofactor.is_on(drafts.store, EDITOR)


def test_a_wrong_code_at_the_cli_leaves_two_step_login_off(drafts, runner, tmp_path):
    path = Path(drafts.config.source)
    runner.invoke(cli, ["--config", str(path), "editors", "add", EDITOR], input=f"{PASSWORD}\n{PASSWORD}\n")
    result = runner.invoke(cli, ["--config", str(path), "editors", "2fa", EDITOR, "--qr", str(tmp_path / "q.svg")],
                           input="000000\n")
    assert result.exit_code == 1 and "is off, run the command again" in result.output
    assert drafts.store.editor_secret(EDITOR) is None
