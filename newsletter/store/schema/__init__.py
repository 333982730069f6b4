"""Every schema change, named and applied in order on open (sqlite-utils migrations); never edit one, add one.

Each module registers its migrations on `registry.migrations` when imported, so the import order below is the
order they apply in. A new migration goes at the end of the last module (or a new module imported last).
"""

from __future__ import annotations

from . import m001_m005, m006_m010, m011_m016, m017_ledger, m020_m024  # noqa: F401 - they register
from .registry import migrations

__all__ = ["migrations"]
