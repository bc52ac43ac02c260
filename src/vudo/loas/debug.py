"""The debug Loa: ``vudo_breakpoint``, ``vudo_assert``, ``vudo_panic``."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import MemoryAccessError, SpiritAssertionError, SpiritPanic
from ..loa import LoaContext

_MASK = 0xFFFFFFFF


def vudo_breakpoint(ctx: LoaContext) -> Callable[[], None]:
    """Tell the debug handler, with the Spirit's current call stack."""
    spirit = ctx.spirit

    def host() -> None:
        spirit.debug_handler.breakpoint(spirit, [*spirit.call_stack, "vudo_breakpoint"])

    return host


def vudo_assert(ctx: LoaContext) -> Callable[[int, int, int], None]:
    """With ``cond == 0`` the current call fails with ``SpiritAssertionError``."""
    spirit = ctx.spirit
    read = spirit.memory_or_null.read_string

    def host(cond: int, ptr: int, length: int) -> None:
        if cond == 0:
            message = read(ptr & _MASK, length & _MASK)
            spirit.debug_handler.assert_failed(spirit, message)
            raise SpiritAssertionError(spirit.name, spirit.current_function, message)

    return host


def vudo_panic(ctx: LoaContext) -> Callable[[int, int], None]:
    """Terminate the Spirit with a message; the call fails with ``SpiritPanic``."""
    spirit = ctx.spirit
    read = spirit.memory_or_null.read_string

    def host(ptr: int, length: int) -> None:
        cause: MemoryAccessError | None = None
        try:
            message = read(ptr & _MASK, length & _MASK)
        except MemoryAccessError as exc:  # a bad message pointer must not stop the panic
            cause = MemoryAccessError(
                exc.ptr, exc.length, exc.memory_size, spirit=spirit.name, function="vudo_panic"
            )
            message = f"<unreadable panic message: {cause}>"
        spirit.debug_handler.panic(spirit, message)
        raise SpiritPanic(spirit.name, spirit.current_function, message) from cause

    return host
