"""The one Migrations object every schema module registers on; applied in the order they are imported."""

from __future__ import annotations

from sqlite_utils.migrations import Migrations

migrations = Migrations("newsletter")
