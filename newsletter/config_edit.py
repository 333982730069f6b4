"""Changing one table of newsletter.toml (the editors' password hashes and roles) without touching its other lines.

Written by hand because tomllib only reads and the TOML writers re-format the
whole file, losing the operator's comments; the result is re-parsed before it
replaces the file, atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from .roles import ROLES, account
from .settings import ConfigError

TABLE_RE = re.compile(r"^\s*\[\s*editors\s*\]\s*(#.*)?$")
HEADER_RE = re.compile(r"^\s*\[")


def _lines(path: Path) -> tuple[list[str], str]:
    text = path.read_bytes().decode("utf-8")
    return text.splitlines(keepends=True), "\r\n" if "\r\n" in text else "\n"


def _editors_table(lines: list[str], name: str) -> tuple[int | None, int, int | None]:
    """Where the [editors] table starts and ends, and the line of `name` in it (None when absent)."""
    key_re = re.compile(rf"""^\s*(?:{re.escape(name)}|"{re.escape(name)}"|'{re.escape(name)}')\s*=""")
    start = next((i for i, line in enumerate(lines) if TABLE_RE.match(line.rstrip("\r\n"))), None)
    if start is None:
        return None, len(lines), None
    end = next((i for i in range(start + 1, len(lines)) if HEADER_RE.match(lines[i])), len(lines))
    return start, end, next((i for i in range(start + 1, end) if key_re.match(lines[i])), None)


def _write_checked(path: Path, lines: list[str], expected: dict[str, Any]) -> None:
    """Re-parse the new text and write it only if [editors] holds exactly `expected`."""
    new_text = "".join(lines)
    try:
        written = tomllib.loads(new_text).get("editors", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: the [editors] table could not be updated safely: {exc}") from None
    if written != expected:
        raise ConfigError(f"{path}: the [editors] table could not be updated safely")
    _write_atomically(path, new_text.encode("utf-8"))


def _current_editors(path: Path) -> dict[str, Any]:
    try:
        return dict(tomllib.loads(path.read_text(encoding="utf-8")).get("editors", {}))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_editor(path: Path, name: str, password_hash: str, role: str | None = None) -> tuple[bool, str]:
    """Put `name = {hash = "...", role = "..."}` in the [editors] table, changing no other line.

    Without `role` an existing editor keeps theirs (admin for the old bare-hash form) and a new one is an
    author, the least. Returns (whether it replaced a line, the role written)."""
    current = _current_editors(path)
    if role is None:
        role = account(name, current[name]).role if name in current else ROLES[0]
    if role not in ROLES:
        raise ConfigError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    entry = {"hash": password_hash, "role": role}
    return _put_entry(path, name, entry, {**current, name: entry}), role


def set_role(path: Path, name: str, role: str) -> str:
    """Give an existing editor another role, keeping their hash; returns the role they had."""
    current = _current_editors(path)
    if name not in current:
        raise ConfigError(f"{path}: no editor {name!r} under [editors]; nothing was changed")
    if role not in ROLES:
        raise ConfigError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    old = account(name, current[name])
    entry = {"hash": old.password_hash, "role": role}
    _put_entry(path, name, entry, {**current, name: entry})
    return old.role


def _put_entry(path: Path, name: str, entry: dict[str, str], expected: dict[str, Any]) -> bool:
    lines, newline = _lines(path)
    text = f"{name} = {{hash = {_quoted(entry['hash'])}, role = {_quoted(entry['role'])}}}{newline}"
    start, end, existing = _editors_table(lines, name)
    if start is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        lines += [newline, f"[editors]{newline}", text]
    elif existing is not None:
        lines[existing] = text
    else:
        # after the table's last entry (before trailing blank lines and comments of the next table)
        at = start + 1
        for i in range(start + 1, end):
            if "=" in lines[i] and not lines[i].lstrip().startswith("#"):
                at = i + 1
        if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
            lines[at - 1] += newline
        lines.insert(at, text)
    _write_checked(path, lines, expected)
    return existing is not None


def remove_editor(path: Path, name: str) -> None:
    """Delete the line of `name` from the [editors] table, changing no other line."""
    current = _current_editors(path)
    lines, _ = _lines(path)
    _, _, existing = _editors_table(lines, name)
    if name not in current or existing is None:
        raise ConfigError(f"{path}: no editor {name!r} under [editors]; nothing was changed")
    del lines[existing]
    _write_checked(path, lines, {k: v for k, v in current.items() if k != name})


def _write_atomically(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
