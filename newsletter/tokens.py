"""Signed tokens for every public link that changes state.

Each token is bound to one subscriber and one purpose (unsubscribe,
preferences, confirm, access), HMAC-signed with NEWSLETTER_SECRET through itsdangerous.
The per-purpose key is derived once, so signing costs one HMAC per link: it
runs for every recipient of every digest.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac

from itsdangerous import BadSignature, Signer, SignatureExpired, TimestampSigner

PURPOSES = ("unsubscribe", "preferences", "confirm", "access")
CONFIRM_MAX_AGE = 7 * 24 * 3600
#: A link to read or erase one's data is sent fresh to the address and works an hour: digests get forwarded.
ACCESS_MAX_AGE = 3600
#: Purposes whose tokens carry their time and expire
MAX_AGE = {"confirm": CONFIRM_MAX_AGE, "access": ACCESS_MAX_AGE}


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _hmac_pads(key: bytes) -> tuple["hashlib._Hash", "hashlib._Hash"]:
    """HMAC-SHA256 (RFC 2104) with its two padded-key states hashed once per key.

    Written out because `hmac.digest` rebuilds both states on every call, and
    signing runs twice per recipient of every digest: copying the states costs
    less than half. The result is the standard HMAC (tests check it against hmac).
    """
    block = key.ljust(64, b"\0") if len(key) <= 64 else hashlib.sha256(key).digest().ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block)))


class TokenError(Exception):
    pass


class Tokens:
    def __init__(self, secret: str):
        if not secret:
            raise TokenError("secret: empty")
        self._signers = {}
        self._pads = {}
        for purpose in PURPOSES:
            key = hmac.new(secret.encode(), f"newsletter-link:{purpose}".encode(), hashlib.sha256).digest()
            cls = TimestampSigner if purpose in MAX_AGE else Signer
            self._signers[purpose] = cls(key, salt=purpose, key_derivation="none", digest_method=hashlib.sha256)
            self._pads[purpose] = _hmac_pads(key)
        self._link_pads = (self._pads["unsubscribe"], self._pads["preferences"])

    def sign(self, purpose: str, subscriber_id: int) -> str:
        if purpose in MAX_AGE:
            return self._signers[purpose].sign(str(subscriber_id).encode()).decode()
        # Byte for byte what itsdangerous' Signer makes (tests compare them): this runs per recipient.
        value = str(subscriber_id).encode()
        inner, outer = self._pads[purpose]
        inner = inner.copy()
        inner.update(value)
        outer = outer.copy()
        outer.update(inner.digest())
        mac = binascii.b2a_base64(outer.digest(), newline=False)[:43].translate(_URLSAFE)
        return (value + b"." + mac).decode()

    def link_tokens(self, subscriber_id: int) -> tuple[str, str]:
        """(unsubscribe, preferences): what sign() makes for each (tests compare them), in one call with the
        subscriber's bytes written once; every recipient of every digest carries both. Written out, not
        looped: this is most of the per-recipient work."""
        value = str(subscriber_id).encode()
        (u_inner, u_outer), (p_inner, p_outer) = self._link_pads
        u_inner, u_outer, p_inner, p_outer = u_inner.copy(), u_outer.copy(), p_inner.copy(), p_outer.copy()
        u_inner.update(value)
        p_inner.update(value)
        u_outer.update(u_inner.digest())
        p_outer.update(p_inner.digest())
        prefix = value + b"."
        return ((prefix + binascii.b2a_base64(u_outer.digest(), newline=False)[:43].translate(_URLSAFE)).decode(),
                (prefix + binascii.b2a_base64(p_outer.digest(), newline=False)[:43].translate(_URLSAFE)).decode())

    def verify(self, purpose: str, token: str, max_age: int | None = None) -> int:
        """The subscriber id the token was made for, or TokenError (an expiring purpose: by default MAX_AGE)."""
        signer = self._signers.get(purpose)
        if signer is None:
            raise TokenError(f"purpose: unknown {purpose!r}")
        try:
            if isinstance(signer, TimestampSigner):
                value = signer.unsign(token.encode(), max_age=max_age or MAX_AGE[purpose])
            else:
                value = signer.unsign(token.encode())
            return int(value)
        except SignatureExpired:
            raise TokenError("this link has expired") from None
        except (BadSignature, ValueError):
            raise TokenError("this link is not valid") from None
