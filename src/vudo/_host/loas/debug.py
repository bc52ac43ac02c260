"""The debug Loa: ``vudo_breakpoint``, ``vudo_assert``, ``vudo_panic``."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import MemoryAccessError, SpiritAssertionError, SpiritPanic
from ..context import HostContext
from ._text import capped_reader

_MASK = 0xFFFFFFFF


def _too_long(length: int, ctx: HostContext) -> str:
    return f"<message of {length} bytes over max_string_length {ctx.limits.max_string_length}>"


def vudo_breakpoint(ctx: HostContext) -> Callable[[], None]:
    """Tell the debug handler, with the Spirit's current call stack."""
    debugger = ctx.debugger

    def host() -> None:
        debugger.breakpoint(ctx, [*ctx.call_stack, "vudo_breakpoint"])

    return host


def vudo_assert(ctx: HostContext) -> Callable[[int, int, int], None]:
    """Tell the debug handler's ``on_assert`` about every assertion, passing ones too; with
    ``cond == 0`` the current call fails with ``SpiritAssertionError``.

    A message over ``max_string_length`` is replaced by a placeholder; a bad message pointer
    fails a failing assertion (``MemoryAccessError``) but not a passing one (the handler gets
    a placeholder). Handlers written before ``on_assert`` existed are still accepted.
    """
    read = capped_reader(ctx, "vudo_assert")
    debugger = ctx.debugger
    on_assert: Callable[[HostContext, bool, str], None] | None = getattr(
        debugger, "on_assert", None
    )

    def host(cond: int, ptr: int, length: int) -> None:
        ptr &= _MASK
        length &= _MASK
        if cond == 0:
            message = read(ptr, length)
            if message is None:
                message = _too_long(length, ctx)
            if on_assert is not None:
                on_assert(ctx, False, message)
            debugger.assert_failed(ctx, message)
            raise SpiritAssertionError(ctx.name, ctx.current_function, message)
        if on_assert is not None:
            try:
                text = read(ptr, length)
            except MemoryAccessError as exc:  # a passing assertion must not fail the call
                text = f"<unreadable assertion message: {exc}>"
            on_assert(ctx, True, _too_long(length, ctx) if text is None else text)

    return host


def vudo_panic(ctx: HostContext) -> Callable[[int, int], None]:
    """Terminate the Spirit with a message; the call fails with ``SpiritPanic``."""
    read = capped_reader(ctx, "vudo_panic")
    debugger = ctx.debugger

    def host(ptr: int, length: int) -> None:
        cause: MemoryAccessError | None = None
        try:
            text = read(ptr & _MASK, length & _MASK)
            message = _too_long(length & _MASK, ctx) if text is None else text
        except MemoryAccessError as exc:  # a bad message pointer must not stop the panic
            cause = MemoryAccessError(
                exc.ptr, exc.length, exc.memory_size, spirit=ctx.name, function="vudo_panic"
            )
            message = f"<unreadable panic message: {cause}>"
        debugger.panic(ctx, message)
        raise SpiritPanic(ctx.name, ctx.current_function, message) from cause

    return host
