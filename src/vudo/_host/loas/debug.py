"""The debug Loa: ``vudo_breakpoint``, ``vudo_assert``, ``vudo_panic``."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import MemoryAccessError, SpiritAssertionError, SpiritPanic
from ..context import HostContext

_MASK = 0xFFFFFFFF


def vudo_breakpoint(ctx: HostContext) -> Callable[[], None]:
    """Tell the debug handler, with the Spirit's current call stack."""
    debugger = ctx.debugger

    def host() -> None:
        debugger.breakpoint(ctx, [*ctx.call_stack, "vudo_breakpoint"])

    return host


def vudo_assert(ctx: HostContext) -> Callable[[int, int, int], None]:
    """With ``cond == 0`` the current call fails with ``SpiritAssertionError``."""
    read = ctx.memory.read_string
    debugger = ctx.debugger

    def host(cond: int, ptr: int, length: int) -> None:
        if cond == 0:
            message = read(ptr & _MASK, length & _MASK)
            debugger.assert_failed(ctx, message)
            raise SpiritAssertionError(ctx.name, ctx.current_function, message)

    return host


def vudo_panic(ctx: HostContext) -> Callable[[int, int], None]:
    """Terminate the Spirit with a message; the call fails with ``SpiritPanic``."""
    read = ctx.memory.read_string
    debugger = ctx.debugger

    def host(ptr: int, length: int) -> None:
        cause: MemoryAccessError | None = None
        try:
            message = read(ptr & _MASK, length & _MASK)
        except MemoryAccessError as exc:  # a bad message pointer must not stop the panic
            cause = MemoryAccessError(
                exc.ptr, exc.length, exc.memory_size, spirit=ctx.name, function="vudo_panic"
            )
            message = f"<unreadable panic message: {cause}>"
        debugger.panic(ctx, message)
        raise SpiritPanic(ctx.name, ctx.current_function, message) from cause

    return host
