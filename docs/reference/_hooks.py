"""MkDocs hooks of the documentation site (loaded by ``hooks:`` in mkdocs.yml).

The pages mark code blocks for ``tests/test_docs.py`` in the fence's info string:
```` ```python no-run ```` (shown, never run) and ```` ```toml file=session.toml ```` (written to a
file the page's later examples use). GitHub reads only the first word of an info string, but
Python-Markdown does not recognise a fence with extra words, so they are dropped here before
the page is rendered.
"""

from __future__ import annotations

import re
from typing import Any

_FENCE_WITH_MARKERS = re.compile(
    r"^(?P<open>[ \t]*(?:`{3,}|~{3,})[ \t]*[\w#.+-]+)[ \t]+[^\n`{}]*$", re.MULTILINE
)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Strip the test markers from fence info strings, keeping the language."""
    return _FENCE_WITH_MARKERS.sub(r"\g<open>", markdown)
