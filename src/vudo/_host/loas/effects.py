"""The effects Loa: ``vudo_emit_effect`` and ``vudo_subscribe``, delegating to the Spirit's
:class:`~vudo.EffectHandler` (which also checks capabilities)."""

from __future__ import annotations

from collections.abc import Callable

from ...abi import ResultCode
from ...errors import SpiritTerminated
from ..context import HostContext
from ._text import capped_reader

_MASK = 0xFFFFFFFF
_INVALID = int(ResultCode.INVALID_ARG)


def vudo_emit_effect(ctx: HostContext) -> Callable[[int, int, int], int]:
    """Ask the host for a side effect; returns the handler's result code."""
    read = ctx.memory.read_bytes
    emit = ctx.effects.emit

    def host(effect_id: int, ptr: int, length: int) -> int:
        payload = read(ptr & _MASK, length & _MASK)
        code = int(emit(ctx, effect_id, payload))
        if ctx.terminated:  # TERMINATE (or a handler) ended the Spirit: stop it now
            raise SpiritTerminated(ctx.name, "vudo_emit_effect", ctx.termination_cause or "")
        return code

    return host


def vudo_subscribe(ctx: HostContext) -> Callable[[int, int], int]:
    """Receive a host channel's notifications in the inbox (sender ``channel:<name>``); a
    channel name over ``max_string_length`` returns InvalidArg."""
    read = capped_reader(ctx, "vudo_subscribe")
    subscribe = ctx.effects.subscribe

    def host(ptr: int, length: int) -> int:
        channel = read(ptr & _MASK, length & _MASK)
        if channel is None:
            return _INVALID
        return int(subscribe(ctx, channel))

    return host
