"""The io Loa: ``vudo_print``, ``vudo_println``, ``vudo_log``, ``vudo_error``.

Text over the Spirit's ``max_string_length`` is refused with a WARNING (nothing is written).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...abi import LogLevel
from ..context import HostContext
from ._text import capped_reader

_MASK = 0xFFFFFFFF
_LEVELS = {int(level): level for level in LogLevel}
_log = logging.getLogger("vudo.host")


def _writer(ctx: HostContext, function: str, out: Callable[[str], None]
            ) -> Callable[[int, int], None]:
    read = capped_reader(ctx, function)

    def host(ptr: int, length: int) -> None:
        text = read(ptr & _MASK, length & _MASK)
        if text is not None:
            out(text)

    return host


def vudo_print(ctx: HostContext) -> Callable[[int, int], None]:
    """Write text without a newline through the logger's ``print``."""
    return _writer(ctx, "vudo_print", ctx.logger.print)


def vudo_println(ctx: HostContext) -> Callable[[int, int], None]:
    """Write text and a newline through the logger's ``println``."""
    return _writer(ctx, "vudo_println", ctx.logger.println)


def vudo_log(ctx: HostContext) -> Callable[[int, int, int], None]:
    """Log at a level; a level outside DEBUG..ERROR is logged at ERROR, and a WARNING on
    ``vudo.host`` says the level was invalid (as ``@vudo/runtime`` does)."""
    read = capped_reader(ctx, "vudo_log")
    log = ctx.logger.log

    def host(level: int, ptr: int, length: int) -> None:
        text = read(ptr & _MASK, length & _MASK)
        if text is None:
            return
        known = _LEVELS.get(level)
        if known is None:
            _log.warning("vudo_log: Spirit %r used invalid log level %d; logged as ERROR",
                         ctx.name, level)
            known = LogLevel.ERROR
        log(known, text)

    return host


def vudo_error(ctx: HostContext) -> Callable[[int, int], None]:
    """Log at ERROR; the Spirit continues."""
    return _writer(ctx, "vudo_error", ctx.logger.error)
