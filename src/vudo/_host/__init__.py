"""The host side of the ABI: the host context, Loas, the registry and the 22 host functions."""

from __future__ import annotations

from .broker import (
    DEFAULT_INBOX_CAPACITY,
    ForwardingBroker,
    Message,
    MessageBroker,
    MessageCallback,
)
from .context import (
    DebugHandler,
    EffectHandler,
    EffectTarget,
    HostContext,
    Inbox,
    Logger,
    RandomProvider,
    TimeProvider,
)
from .loa import Factory, HostFunction, Loa, Marshal, create_loa, f32, f64, i32, i64, marshal_for
from .registry import LoaRegistry

__all__ = [
    "DEFAULT_INBOX_CAPACITY",
    "DebugHandler",
    "EffectHandler",
    "EffectTarget",
    "Factory",
    "ForwardingBroker",
    "HostContext",
    "HostFunction",
    "Inbox",
    "Loa",
    "LoaRegistry",
    "Logger",
    "Marshal",
    "Message",
    "MessageBroker",
    "MessageCallback",
    "RandomProvider",
    "TimeProvider",
    "create_loa",
    "f32",
    "f64",
    "i32",
    "i64",
    "marshal_for",
]
