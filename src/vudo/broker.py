"""Deprecated: moved (import from :mod:`vudo`). Kept so old imports keep working."""

from __future__ import annotations

from ._compat import deprecated_names

__getattr__ = deprecated_names(__name__, {
    "Message": "vudo._host",
    "MessageBroker": "vudo._host",
    "MessageCallback": "vudo._host",
    "DEFAULT_INBOX_CAPACITY": "vudo._host",
    "MessageBus": "vudo._providers",
})
