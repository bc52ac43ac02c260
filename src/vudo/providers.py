"""Providers: the injectable capabilities host functions delegate to.

Each provider is a small :class:`typing.Protocol` with a default implementation. Pass your own
per Spirit (``load_spirit(..., logger=...)`` or ``providers=Providers(...)``) or per session
(``Seance(logger=...)``); the test doubles live in :mod:`vudo.testing`.
"""

from __future__ import annotations

from ._effects import DefaultEffectHandler, EffectFn
from ._host import (
    DebugHandler,
    EffectHandler,
    EffectTarget,
    Logger,
    MessageBroker,
    RandomProvider,
    TimeProvider,
)
from ._providers import (
    DefaultDebugHandler,
    LoggerBase,
    MessageBus,
    Providers,
    StdLogger,
    SystemRandomProvider,
    SystemTimeProvider,
)

__all__ = [
    "DebugHandler",
    "DefaultDebugHandler",
    "DefaultEffectHandler",
    "EffectFn",
    "EffectHandler",
    "EffectTarget",
    "Logger",
    "LoggerBase",
    "MessageBroker",
    "MessageBus",
    "Providers",
    "RandomProvider",
    "StdLogger",
    "SystemRandomProvider",
    "SystemTimeProvider",
    "TimeProvider",
]
