"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "GeneField": "vudo._memory",
    "GeneLayout": "vudo._memory",
    "gene_layout": "vudo._memory",
})
