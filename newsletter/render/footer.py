"""The footer guard: whatever a site's template overrides say, every part ends with the disclaimer,
the postal address, and the preferences and unsubscribe links."""

from __future__ import annotations

from typing import Any, Mapping

import lxml.html

from ..model import neutralise_text


class RenderError(Exception):
    pass


def check_footer(html: str, text: str, context: Mapping[str, Any], cards: list[Mapping[str, Any]],
                 postal_address: str) -> None:
    """Templates can be overridden per site; none may drop or move the footer."""
    body = lxml.html.document_fromstring(html).body
    html_text = " ".join(body.text_content().split()) if body is not None else ""
    plain = " ".join(text.split())
    required = [*context["disclaimer"], " ".join(postal_address.split())]
    for part, content, links, shown in (("HTML", html_text, html, str), ("text", plain, text, neutralise_text)):
        start = content.find(required[0])
        if start < 0:
            raise RenderError(f"{part} part: the disclaimer is missing: check the site's template overrides")
        footer = content[start:]
        missing = [piece for piece in required if piece not in footer]
        if missing:
            raise RenderError(f"{part} part: footer lacks {missing[0]!r}: the disclaimer, then the postal "
                              "address, must end every digest")
        late = [c["title"] for c in cards if c["title"] and shown(" ".join(c["title"].split())) in footer]
        if late:
            raise RenderError(f"{part} part: {late[0]!r} appears after the disclaimer: it must come last")
        for name in ("unsubscribe_url", "preferences_url"):
            if context[name] not in links:
                raise RenderError(f"{part} part: no {name.replace('_url', '')} link")
