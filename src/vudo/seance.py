"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "Seance": "vudo._session",
    "AsyncSeance": "vudo._session",
    "SpiritStats": "vudo._session",
})
