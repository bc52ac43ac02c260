"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "CORE_LOA": "vudo._host.loas",
    "CORE_LOA_NAME": "vudo._host.loas",
    "GROUPS": "vudo._host.loas",
})
