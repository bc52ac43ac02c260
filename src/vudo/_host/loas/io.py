"""The io Loa: ``vudo_print``, ``vudo_println``, ``vudo_log``, ``vudo_error``."""

from __future__ import annotations

from collections.abc import Callable

from ...abi import LogLevel
from ..context import HostContext

_MASK = 0xFFFFFFFF
_coerce = LogLevel.coerce


def vudo_print(ctx: HostContext) -> Callable[[int, int], None]:
    """Write text without a newline through the logger's ``print``."""
    read = ctx.memory.read_string
    out = ctx.logger.print

    def host(ptr: int, length: int) -> None:
        out(read(ptr & _MASK, length & _MASK))

    return host


def vudo_println(ctx: HostContext) -> Callable[[int, int], None]:
    """Write text and a newline through the logger's ``println``."""
    read = ctx.memory.read_string
    out = ctx.logger.println

    def host(ptr: int, length: int) -> None:
        out(read(ptr & _MASK, length & _MASK))

    return host


def vudo_log(ctx: HostContext) -> Callable[[int, int, int], None]:
    """Log at a level; levels outside DEBUG..ERROR are logged at ERROR."""
    read = ctx.memory.read_string
    log = ctx.logger.log

    def host(level: int, ptr: int, length: int) -> None:
        log(_coerce(level), read(ptr & _MASK, length & _MASK))

    return host


def vudo_error(ctx: HostContext) -> Callable[[int, int], None]:
    """Log at ERROR; the Spirit continues."""
    read = ctx.memory.read_string
    err = ctx.logger.error

    def host(ptr: int, length: int) -> None:
        err(read(ptr & _MASK, length & _MASK))

    return host
