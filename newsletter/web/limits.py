"""Which counters a sign-up or a login touches: by network (an IPv6 /64 is one network), by address, by mailbox
(plus-tags and Gmail's dots folded), by (account, network). Keys are HMACs, so the table names no one."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

from ..store import Attempt, Limit

#: Domains whose mailboxes ignore dots in the local part (and the second is the same mailbox as the first).
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
LOGIN_ACCOUNT, LOGIN_NETWORK = "login-account", "login-network"
SIGNUP_NETWORK, SIGNUP_ADDRESS, SIGNUP_MAILBOX = "signup-network", "signup-address", "signup-mailbox"
ACCESS_LINK = "access-link"
#: The Flask config keys the limits are read from (web/app.py FLASK_DEFAULTS gives their defaults).
SETTINGS = ("LOGIN_MAX_FAILURES", "LOGIN_MAX_FAILURES_IP", "LOGIN_WINDOW_SECONDS", "LOGIN_MAX_LOCK_SECONDS",
            "SUBSCRIBE_MAX_PER_ADDRESS", "SUBSCRIBE_MAX_PER_MAILBOX", "SUBSCRIBE_MAX_PER_IP", "SUBSCRIBE_WINDOW_SECONDS",
            "ACCESS_MAX_PER_SUBSCRIBER")


def network_of(ip: str) -> str:
    """The network a client address stands for: IPv4 as is, IPv6 by its /64 (one household or host)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def mailbox_of(email: str) -> str:
    """The mailbox a normalised address delivers to: no +tag, and no dots where the domain ignores them."""
    local, _, domain = email.rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        domain = DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"


@dataclass(frozen=True)
class Limiter:
    """The app's limits (from its Flask config) and the key that hashes what they count."""
    secret: bytes
    settings: dict[str, Any]
    clock: Callable[[], float]

    @classmethod
    def from_config(cls, secret: str, flask_config: Any) -> "Limiter":
        return cls(hmac.new(secret.encode(), b"newsletter-throttle-keys", hashlib.sha256).digest(),
                   {name: flask_config[name] for name in SETTINGS}, flask_config["CLOCK"])

    def key(self, *parts: str) -> str:
        return hmac.new(self.secret, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def login(self, store: Any, name: str, ip: str) -> Attempt:
        """Count this login attempt before the password is checked; nothing is recorded when blocked."""
        s, network = self.settings, network_of(ip)
        window, cap = s["LOGIN_WINDOW_SECONDS"], s["LOGIN_MAX_LOCK_SECONDS"]
        return store.throttle_attempt([
            Limit(LOGIN_ACCOUNT, self.key(name.lower(), network), s["LOGIN_MAX_FAILURES"], window, cap),
            Limit(LOGIN_NETWORK, self.key(network), s["LOGIN_MAX_FAILURES_IP"], window, cap),
        ], self.clock())

    def login_succeeded(self, store: Any, attempt: Attempt, name: str, ip: str) -> None:
        """Take back this attempt, and forget this account's failures from this network."""
        store.throttle_release(attempt.hit_ids, clear=[(LOGIN_ACCOUNT, self.key(name.lower(), network_of(ip)))])

    def forget(self, store: Any, email: str) -> None:
        """Drop the sign-up counts keyed by an erased reader's address and mailbox."""
        store.throttle_release([], clear=[(SIGNUP_ADDRESS, self.key(email)),
                                          (SIGNUP_MAILBOX, self.key(mailbox_of(email)))])

    def access_link(self, store: Any, subscriber_id: int) -> Attempt:
        """Count a request for a fresh data link: whoever holds a forwarded digest cannot flood its owner."""
        s = self.settings
        return store.throttle_attempt([Limit(ACCESS_LINK, self.key(str(subscriber_id)), s["ACCESS_MAX_PER_SUBSCRIBER"],
                                             s["SUBSCRIBE_WINDOW_SECONDS"])], self.clock())

    def signup(self, store: Any, email: str, ip: str) -> Attempt:
        """Count a sign-up by network, address and mailbox; recorded every time, so every path does the same."""
        s = self.settings
        window = s["SUBSCRIBE_WINDOW_SECONDS"]
        return store.throttle_attempt([
            Limit(SIGNUP_NETWORK, self.key(network_of(ip)), s["SUBSCRIBE_MAX_PER_IP"], window),
            Limit(SIGNUP_ADDRESS, self.key(email), s["SUBSCRIBE_MAX_PER_ADDRESS"], window),
            Limit(SIGNUP_MAILBOX, self.key(mailbox_of(email)), s["SUBSCRIBE_MAX_PER_MAILBOX"], window),
        ], self.clock(), record_blocked=True)
