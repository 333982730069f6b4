"""The sign-up consent's wording, as the site wrote it (consent.txt in templates_dir, else the bundled one), and
the record of each consent given with the version of the wording shown, so the exact text can be produced later."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..store import now_iso

BUNDLED = Path(__file__).parent / "templates" / "public" / "consent.txt"
BASIS = "sign-up form, confirmed from the link sent to the address"


@dataclass(frozen=True)
class Wording:
    version: str  # the first 16 hex digits of the text's SHA-256: the same text is the same version
    text: str
    email: str  # agreeing to receive email
    health: str  # what the choice of segment and topics reveals

    @classmethod
    def from_config(cls, config: Any) -> "Wording":
        override = Path(config.templates_dir) / "consent.txt" if config.templates_dir else None
        source = (override if override and override.is_file() else BUNDLED).read_text(encoding="utf-8")
        text = jinja2.Template(source, autoescape=False).render(site_name=config.site_name).strip()
        parts = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
        if len(parts) != 2:
            raise ValueError(f"consent.txt: needs two paragraphs (receiving email; what the choice reveals), "
                             f"has {len(parts)}")
        text = "\n\n".join(parts)
        return cls(hashlib.sha256(text.encode()).hexdigest()[:16], text, parts[0], parts[1])


def record_form_consent(store: Any, config: Any, subscriber_id: int, ip: str | None) -> None:
    """The consent of a reader who confirmed: the wording they were shown, now, and their address only when
    record_consent_ip is on."""
    wording = Wording.from_config(config)
    now = now_iso()
    store.record_consent_wording(wording.version, wording.text, now)
    store.record_consent(subscriber_id, "form", BASIS, opted_in_at=now, wording_version=wording.version,
                         ip=ip if config.record_consent_ip else None)
