"""Deprecated alias of the effects package: import these names from ``vudo`` instead.

``vudo.effects`` was a single module; the implementation now lives in the private package
``vudo._effects``. Every name this module used to export still resolves here, with a
:class:`DeprecationWarning` on each access.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import _effects

# The names the old module exported (and the two it re-exported from vudo.providers).
_NAMES = (
    "DEFAULT_DB_MAX_ROWS",
    "DEFAULT_DB_TIMEOUT",
    "DEFAULT_FS_MAX_READ",
    "DEFAULT_HTTP_MAX_RESPONSE",
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_MAX_WORKERS",
    "EffectTarget",
    "Permissions",
    "StandardEffectHandler",
    "decode_http_result",
    "decode_result",
    "effect_sender",
    "encode_db_query",
    "encode_fs_write",
    "encode_http_post",
    "encode_result",
    "DefaultEffectHandler",
    "EffectHandler",
)
__all__ = list(_NAMES)  # computed: the names resolve through __getattr__ below


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"vudo.effects is deprecated; import {name} from vudo (or vudo._effects) instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_effects, name)


def __dir__() -> list[str]:
    return sorted(_NAMES)
