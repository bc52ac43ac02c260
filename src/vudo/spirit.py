"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "Spirit": "vudo._spirit",
    "SpiritProxy": "vudo._spirit",
    "aload_spirit": "vudo._spirit",
    "load_spirit": "vudo._spirit",
    "compile_source": "vudo._spirit",
    "engine_message": "vudo._spirit",
    "read_wasm": "vudo._spirit",
})
