"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "HostFunction": "vudo._host",
    "Loa": "vudo._host",
    "LoaRegistry": "vudo._host",
    "create_loa": "vudo._host",
    "f32": "vudo._host",
    "f64": "vudo._host",
    "i32": "vudo._host",
    "i64": "vudo._host",
    "marshal_for": "vudo._host",
    "Marshal": "vudo._host",
    "LoaContext": "vudo._host.context",
})
