"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "Limits": "vudo._config",
    "MemoryOptions": "vudo._config",
})
