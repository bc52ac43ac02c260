"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "Allocator": "vudo._memory",
    "BumpAllocator": "vudo._memory",
    "FreeListAllocator": "vudo._memory",
})
