"""The per-call caps of :class:`~vudo.Limits` that host functions enforce, shared by the Python
host functions and the native built-ins (which call :func:`refuse_text` when text is too long),
so both paths refuse in the same words."""

from __future__ import annotations

import logging

__all__ = ["refuse_text"]

_log = logging.getLogger("vudo.host")


def refuse_text(spirit: str, function: str, length: int, cap: int) -> None:
    """Log that ``function`` refused ``length`` bytes of text from ``spirit`` (over ``cap``)."""
    _log.warning("%s: Spirit %r passed %d bytes of text, over its max_string_length %d; "
                 "refused", function, spirit, length, cap)
