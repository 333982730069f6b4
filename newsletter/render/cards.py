"""What one summary's card shows a segment, and the subject and preheader an issue's cards make."""

from __future__ import annotations

from typing import Any, Mapping

from ..segments import Segment
from .content import date_label, first_sentence, html_to_text, markdown_to_safe_html, plain_text, shorten

SECTION_LABELS = {
    "findings": "What was found",
    "patients": "What it could mean for people living with MS",
    "caregivers": "For caregivers and family",
    "clinicians": "For healthcare providers",
    "limitations": "Limitations",
}
#: When a segment reads its own paragraph (the patients segment reading "patients"), it is addressed as "you".
OWN_SECTION_LABELS = {
    "patients": "What it could mean for you",
    "caregivers": "What it could mean for you and the person you support",
    "clinicians": "For your practice",
}
NO_LIMITATIONS = "The source did not state its limitations; read the original study before drawing conclusions."
PREHEADER_MAX = 140
SUBJECT_MAX = 90


def card(summary: Mapping[str, Any], segment: Segment, site_url: str) -> dict[str, Any]:
    """The segment's sections, in its order, each as HTML and as the text walked from that HTML.

    Limitations are never dropped: the section is added at the end when a segment leaves it out
    (as segments.py does on load), a summary without limitations gets a line saying the source
    did not state them, and a teaser entry (past the card or size cap) keeps their first sentence.
    """
    sections = []
    names = list(segment.sections) + ([] if "limitations" in segment.sections else ["limitations"])
    for name in names:
        if name == "details":
            sections.append({"name": "details", "label": "Study details"})
            continue
        body = summary.get(name) or ""
        if not body.strip():
            if name != "limitations":
                continue
            body = NO_LIMITATIONS
        label = OWN_SECTION_LABELS.get(name, "") if name == segment.name else ""
        html = markdown_to_safe_html(body)
        sections.append({"name": name, "label": label or SECTION_LABELS[name], "html": html,
                         "text": html_to_text(html)})
    limitations = next(s["text"] for s in sections if s["name"] == "limitations")
    source_url = summary.get("source_url") or ""
    doi = summary.get("doi") or ""
    return {
        "id": summary["id"],
        "title": plain_text(summary["title"]),
        "teaser": plain_text(summary.get("teaser") or ""),
        "date_label": date_label(summary["published"]),
        "topics": [plain_text(str(t)) for t in summary.get("topics") or []],
        "journal": plain_text(summary.get("journal") or ""),
        "doi": doi,
        "doi_url": f"https://doi.org/{doi}" if doi else "",
        "source_url": source_url,
        "url": summary.get("url") or f"{site_url}/summaries/{summary['slug']}",
        "is_update": bool(summary.get("is_update")),
        "sections": sections,
        "limitations_note": first_sentence(limitations) or NO_LIMITATIONS,
        # The details section carries the source link up front; the card does not repeat it below.
        "source_in_details": bool(source_url) and "details" in names,
    }


def subject_and_preheader(cards: list[Mapping[str, Any]], segment: Segment, test: bool) -> tuple[str, str]:
    """Subject: how many summaries, and the lead title. Preheader: the lead teaser (or the intro)."""
    count = len(cards)
    updated = sum(1 for c in cards if c["is_update"])
    kind = "new" if not updated else "updated" if updated == count else "new and updated"
    subject = shorten(f"{count} {kind} research {'summary' if count == 1 else 'summaries'}: {cards[0]['title']}",
                      SUBJECT_MAX)
    if test:
        subject = "[TEST] " + subject
    preheader = shorten(cards[0]["teaser"] or segment.intro, PREHEADER_MAX)
    return subject, preheader
