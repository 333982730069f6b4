"""The render stage: an issue's summaries into one HTML and one text part per (issue, segment, variant).

- `pipeline`: Jinja2 -> MJML -> premailer, the size cap and teaser fallback;
- `cards`: what each segment reads of a summary; `content`: Markdown and plain text, sanitised;
- `footer`: the guard that every part ends with the disclaimer and the links;
- `issue`: an existing issue's variants, for the send, the preview and the archive.
Nothing here opens a socket or fetches a font, stylesheet or image.
"""

from __future__ import annotations

from .content import date_label
from .footer import RenderError
from .issue import issue_variants, variants_of
from .pipeline import Renderer, RenderStats, bundled_templates_dir

__all__ = ["RenderError", "RenderStats", "Renderer", "bundled_templates_dir", "date_label",
           "issue_variants", "variants_of"]
