"""Who may do what in the editors' pages: three roles, each a superset of the one before, and the [editors]
table read in both its forms (`alice = "hash"`, the old one, read as admin so sites keep working, and
`alice = {hash = "...", role = "approver"}`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

ROLES = ("author", "approver", "admin")
#: What each role may do; a role may do everything of the roles before it.
GRANTS = {
    "author": ("preview", "test-send", "summaries", "account"),
    "approver": ("approve", "cancel", "schedule", "send", "reports"),
    "admin": ("subscribers", "editors", "audit"),
}
PERMISSIONS = tuple(p for role in ROLES for p in GRANTS[role])
#: The role of an editor written in the old form (a bare hash), from before roles existed.
LEGACY_ROLE = "admin"


def allowed(role: str, permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise ValueError(f"permission: unknown permission {permission!r}")
    if role not in ROLES:
        return False
    return any(permission in GRANTS[r] for r in ROLES[:ROLES.index(role) + 1])


def least_role(permission: str) -> str:
    """The first role that may do this (the pages and tests name it)."""
    return next(role for role in ROLES if allowed(role, permission))


@dataclass(frozen=True)
class EditorAccount:
    name: str
    password_hash: str
    role: str

    def may(self, permission: str) -> bool:
        return allowed(self.role, permission)


def entry_problem(value: Any) -> str | None:
    """What is wrong with one value of the [editors] table (None: nothing)."""
    if isinstance(value, str):
        return None if value else "empty password hash"
    if not isinstance(value, Mapping):
        return "expected a password hash or a table {hash = \"...\", role = \"...\"}"
    unknown = set(value) - {"hash", "role"}
    if unknown:
        return f"unknown key {sorted(unknown)[0]!r} (only hash and role)"
    if not isinstance(value.get("hash"), str) or not value["hash"]:
        return "hash: missing"
    if value.get("role", LEGACY_ROLE) not in ROLES:
        return f"role: must be one of {', '.join(ROLES)}, got {value.get('role')!r}"
    return None


def account(name: str, value: Any) -> EditorAccount:
    if isinstance(value, str):
        return EditorAccount(name, value, LEGACY_ROLE)
    return EditorAccount(name, value["hash"], value.get("role", LEGACY_ROLE))


def accounts(table: Mapping[str, Any]) -> dict[str, EditorAccount]:
    """Every editor of a (checked) [editors] table."""
    return {name: account(name, value) for name, value in table.items()}
