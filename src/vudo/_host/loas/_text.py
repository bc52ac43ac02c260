"""Reading a Spirit's text within its ``max_string_length`` (shared by the Loas that read text)."""

from __future__ import annotations

from collections.abc import Callable

from ..._runtime.caps import refuse_text
from ..context import HostContext

__all__ = ["capped_reader"]


def capped_reader(ctx: HostContext, function: str) -> Callable[[int, int], str | None]:
    """``read(ptr, length)``: the text, or ``None`` (with a WARNING) when ``length`` is over
    the Spirit's ``max_string_length``. A bad pointer is still a ``MemoryAccessError``."""
    read = ctx.memory.read_string
    check = ctx.memory.check
    cap = ctx.limits.max_string_length
    if cap is None:
        return read

    def reader(ptr: int, length: int) -> str | None:
        if length > cap:
            check(ptr, length)
            refuse_text(ctx.name, function, length, cap)
            return None
        return read(ptr, length)

    return reader
