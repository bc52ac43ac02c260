"""The memory Loa: ``vudo_alloc``, ``vudo_free``, ``vudo_realloc`` on the host heap."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..context import HostContext

_MASK = 0xFFFFFFFF
_log = logging.getLogger("vudo.memory")


def _refusal_logger(ctx: HostContext, fn: str) -> Callable[[int], None]:
    """Log the first refusal of each spell of exhaustion (not every one: a Spirit may retry)."""
    refusing = [False]

    def note(ptr: int) -> None:
        if ptr:
            refusing[0] = False
        elif not refusing[0]:
            refusing[0] = True
            _log.warning("%s: host heap of Spirit %r exhausted (memory %d bytes, max_memory %s)",
                         fn, ctx.name, ctx.memory.size, ctx.limits.max_memory)

    return note


def _oversized(ctx: HostContext, fn: str, size: int) -> int:
    _log.warning("%s: Spirit %r asked for %d bytes, over its max_alloc %s; refused",
                 fn, ctx.name, size, ctx.limits.max_alloc)
    return 0


def vudo_alloc(ctx: HostContext) -> Callable[[int], int]:
    """A zeroed, 8-byte aligned host-heap block; 0 on failure, for a size of 0 or less, and
    for a size over ``max_alloc`` (logged)."""
    alloc = ctx.memory.alloc
    note = _refusal_logger(ctx, "vudo_alloc")
    cap = ctx.limits.max_alloc

    def host(size: int) -> int:
        if size <= 0:
            return 0
        if cap is not None and size > cap:
            return _oversized(ctx, "vudo_alloc", size)
        ptr = alloc(size, 8)
        note(ptr)
        return ptr

    return host


def vudo_free(ctx: HostContext) -> Callable[[int, int], None]:
    """Release a block; pointers the host did not hand out are ignored."""
    free = ctx.memory.free

    def host(ptr: int, size: int) -> None:
        free(ptr & _MASK)

    return host


def vudo_realloc(ctx: HostContext) -> Callable[[int, int, int], int]:
    """Resize a block, keeping ``min(old, new)`` bytes; 0 on failure with the old block valid
    (also for a negative size or old size, and a size over ``max_alloc``, logged)."""
    realloc = ctx.memory.realloc
    note = _refusal_logger(ctx, "vudo_realloc")
    cap = ctx.limits.max_alloc

    def host(ptr: int, old: int, new: int) -> int:
        if new < 0 or old < 0:
            return 0
        if cap is not None and new > cap:
            return _oversized(ctx, "vudo_realloc", new)
        result = realloc(ptr & _MASK, old, new)
        note(result)
        return result

    return host
