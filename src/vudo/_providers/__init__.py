"""Providers: the default implementations of the capabilities host functions delegate to
(logger, clocks, randomness, effects, debugging, the in-process message bus), and the
:class:`Providers` object that carries a Spirit's choice of them."""

from __future__ import annotations

from .bus import MessageBus
from .defaults import (
    DefaultDebugHandler,
    LoggerBase,
    Providers,
    StdLogger,
    SystemRandomProvider,
    SystemTimeProvider,
)

__all__ = [
    "DefaultDebugHandler",
    "LoggerBase",
    "MessageBus",
    "Providers",
    "StdLogger",
    "SystemRandomProvider",
    "SystemTimeProvider",
]
