"""HTML the kernel shows (widget, magics): every URL and text put into it escaped."""

from __future__ import annotations

import html


def link(url: str, text: str) -> str:
    """A link opening `url` in a new tab; a URL may hold `"`, `<`, `&` or `'`: escaped, quotes included."""
    return f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener noreferrer">{html.escape(text)}</a>'
