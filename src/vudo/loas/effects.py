"""The effects Loa: ``vudo_emit_effect`` and ``vudo_subscribe``, delegating to the Spirit's
:class:`~vudo.providers.EffectHandler` (which also checks capabilities)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import SpiritTerminated
from ..loa import LoaContext

_MASK = 0xFFFFFFFF


def vudo_emit_effect(ctx: LoaContext) -> Callable[[int, int, int], int]:
    """Ask the host for a side effect; returns the handler's result code."""
    spirit = ctx.spirit
    read = spirit.memory_or_null.read_bytes

    def host(effect_id: int, ptr: int, length: int) -> int:
        payload = read(ptr & _MASK, length & _MASK)
        code = int(spirit.effect_handler.emit(spirit, effect_id, payload))
        if spirit.terminated:  # TERMINATE (or a handler) ended the Spirit: stop it now
            raise SpiritTerminated(spirit.name, "vudo_emit_effect", spirit.termination_cause or "")
        return code

    return host


def vudo_subscribe(ctx: LoaContext) -> Callable[[int, int], int]:
    """Receive a host channel's notifications in the inbox (sender ``channel:<name>``)."""
    spirit = ctx.spirit
    read = spirit.memory_or_null.read_string

    def host(ptr: int, length: int) -> int:
        channel = read(ptr & _MASK, length & _MASK)
        return int(spirit.effect_handler.subscribe(spirit, channel))

    return host
