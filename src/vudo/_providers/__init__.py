"""Providers: the default implementations of the capabilities host functions delegate to
(logger, clocks, randomness, effects, debugging, the in-process message bus), and the
:class:`Providers` object that carries a Spirit's choice of them."""

from __future__ import annotations

from .._runtime.native import native_module as _native
from .bus import MessageBus as PyMessageBus
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
    "PyMessageBus",
    "StdLogger",
    "SystemRandomProvider",
    "SystemTimeProvider",
]

_nbus = _native()
#: The in-process message bus: the C one when the extension is built, else the Python one.
MessageBus: type[PyMessageBus] = _nbus.MessageBus if _nbus is not None else PyMessageBus
