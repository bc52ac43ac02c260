"""The SPAWN effect: a Spirit asks its session to summon another from a registered module."""

from __future__ import annotations

import logging
import struct
from typing import Any, Protocol

from .._effects import encode_result
from .._host import EffectTarget
from ..abi import ResultCode
from ..errors import SeanceError


class _Session(Protocol):
    """What SPAWN needs of its session (kept out of a circular import)."""

    max_spirits: int | None

    @property
    def size(self) -> int: ...

    def module_for(self, ref: str) -> Any: ...

    def summon(self, name: str, source: Any) -> Any: ...

__all__ = ["SeanceFull", "spawn_effect"]

_log = logging.getLogger("vudo.seance")
_U32 = struct.Struct("<I")


class SeanceFull(SeanceError):
    """The session holds ``max_spirits`` Spirits (those still loading included)."""


def spawn_effect(seance: _Session, spirit: EffectTarget, payload: bytes) -> int:
    """SPAWN payload: ``[name_len u32][name][module ref]`` (UTF-8). The result arrives in the
    spawner's inbox as ``effect:SPAWN`` with the new Spirit's name."""
    if len(payload) < 4:
        return ResultCode.INVALID_ARG
    (name_len,) = _U32.unpack_from(payload)
    if 4 + name_len > len(payload) or name_len == 0:
        return ResultCode.INVALID_ARG
    name = payload[4:4 + name_len].decode("utf-8", "replace")
    ref = payload[4 + name_len:].decode("utf-8", "replace")
    source = seance.module_for(ref)
    if source is None:
        _log.warning("SPAWN by %r: unknown module %r", spirit.name, ref)
        return ResultCode.NOT_FOUND
    cap = seance.max_spirits
    if cap is not None and seance.size >= cap:
        _log.warning("SPAWN by %r refused: session cap of %d Spirits reached", spirit.name, cap)
        return ResultCode.NOT_PERMITTED
    try:
        seance.summon(name, source)
    except SeanceFull:
        _log.warning("SPAWN by %r refused: session cap of %d Spirits reached", spirit.name, cap)
        return ResultCode.NOT_PERMITTED
    except Exception as exc:
        _log.warning("SPAWN by %r of %r failed: %s", spirit.name, name, exc)
        return ResultCode.ERROR
    spirit.deliver("effect:SPAWN", encode_result(ResultCode.OK, name.encode("utf-8")))
    return ResultCode.OK
