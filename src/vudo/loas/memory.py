"""The memory Loa: ``vudo_alloc``, ``vudo_free``, ``vudo_realloc`` on the host heap."""

from __future__ import annotations

from collections.abc import Callable

from ..loa import LoaContext

_MASK = 0xFFFFFFFF


def vudo_alloc(ctx: LoaContext) -> Callable[[int], int]:
    """A zeroed, 8-byte aligned host-heap block; 0 on failure (or a negative size)."""
    alloc = ctx.spirit.memory_or_null.alloc

    def host(size: int) -> int:
        return alloc(size, 8) if size >= 0 else 0

    return host


def vudo_free(ctx: LoaContext) -> Callable[[int, int], None]:
    """Release a block; pointers the host did not hand out are ignored."""
    free = ctx.spirit.memory_or_null.free

    def host(ptr: int, size: int) -> None:
        free(ptr & _MASK)

    return host


def vudo_realloc(ctx: LoaContext) -> Callable[[int, int, int], int]:
    """Resize a block, keeping ``min(old, new)`` bytes; 0 on failure with the old block valid."""
    realloc = ctx.spirit.memory_or_null.realloc

    def host(ptr: int, old: int, new: int) -> int:
        if new < 0:
            return 0
        return realloc(ptr & _MASK, max(old, 0), new)

    return host
