"""Editors' second factor: TOTP (RFC 6238, through pyotp), its enrolment QR code as inline SVG (segno), and
single-use recovery codes. Used by `newsletter editors 2fa` and the editor's own account page.

The secret is stored in the database, encrypted (Fernet) with a key derived from NEWSLETTER_SECRET, so a copy
of the database file alone gives no codes; once confirmed it is never shown again. Recovery codes are kept
only as SHA-256 hashes (they are random, 50 bits each, so no slow hash is needed). Each code works once: the
store keeps the newest time step used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
from dataclasses import dataclass
from typing import Any

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

#: Codes of the step before and after the current one are accepted too (clocks drift, people type slowly).
VALID_WINDOW = 1
RECOVERY_CODES = 10


class TwoFactorError(ValueError):
    """Enrolment or a code went wrong; the message says what to do."""


@dataclass(frozen=True)
class Enrolment:
    secret: str      # base32, for people who type it into their app
    uri: str         # otpauth://totp/...
    svg: str         # the QR code of `uri`, as an <svg> element


def _fernet(site_secret: str) -> Fernet:
    key = hmac.new(site_secret.encode(), b"newsletter-totp-secrets", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _decrypt(site_secret: str, token: str) -> str:
    try:
        return _fernet(site_secret).decrypt(token.encode()).decode()
    except InvalidToken:
        raise TwoFactorError("the stored second factor cannot be read with this NEWSLETTER_SECRET; "
                             "reset it with `newsletter editors 2fa NAME --reset`") from None


def qr_svg(uri: str) -> str:
    """The QR code as an SVG element to put inline in a page (no script, no image fetched)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, svgns=True, scale=5, border=4,
                                    title="QR code to scan with an authenticator app", svgclass="qr")
    return out.getvalue().decode()


def _enrolment(secret: str, name: str, issuer: str) -> Enrolment:
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)
    return Enrolment(secret, uri, qr_svg(uri))


def begin(store: Any, site_secret: str, name: str, issuer: str) -> Enrolment:
    """A new secret for `name`, waiting for its first code; any earlier second factor of theirs ends."""
    secret = pyotp.random_base32()
    store.begin_editor_secret(name, _fernet(site_secret).encrypt(secret.encode()).decode())
    return _enrolment(secret, name, issuer)


def pending(store: Any, site_secret: str, name: str, issuer: str) -> Enrolment | None:
    """The enrolment waiting for its first code (shown until confirmed, never after)."""
    row = store.editor_secret(name)
    if row is None or row["confirmed_at"]:
        return None
    return _enrolment(_decrypt(site_secret, row["secret"]), name, issuer)


def is_on(store: Any, name: str) -> bool:
    row = store.editor_secret(name)
    return bool(row and row["confirmed_at"])


def _matching_step(secret: str, code: str, now: float) -> int | None:
    code = "".join(code.split())
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(int(now))
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _code_hash(code: str) -> str:
    return hashlib.sha256("".join(code.lower().replace("-", "").split()).encode()).hexdigest()


def new_recovery_codes() -> list[str]:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def confirm(store: Any, site_secret: str, name: str, code: str, now: float) -> list[str]:
    """Check the first code from the app; the second factor is then on. Returns the recovery codes (shown once)."""
    row = store.editor_secret(name)
    if row is None or row["confirmed_at"]:
        raise TwoFactorError("there is no enrolment waiting: start again")
    step = _matching_step(_decrypt(site_secret, row["secret"]), code, now)
    if step is None:
        raise TwoFactorError("that code is not the one the app shows now: check the phone's clock and try again")
    codes = new_recovery_codes()
    if not store.confirm_editor_secret(name, step, [_code_hash(c) for c in codes]):
        raise TwoFactorError("there is no enrolment waiting: start again")
    return codes


def verify(store: Any, site_secret: str, name: str, code: str, now: float) -> str | None:
    """A login's second step: "totp" or "recovery" when the code is good (and now used up), else None."""
    row = store.editor_secret(name)
    if row is None or not row["confirmed_at"]:
        return None
    step = _matching_step(_decrypt(site_secret, row["secret"]), code, now)
    if step is not None:
        return "totp" if store.use_totp_step(name, step) else None
    if len("".join(code.split())) > 6 and store.use_recovery_code(name, _code_hash(code)):
        return "recovery"
    return None
