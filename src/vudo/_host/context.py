"""What host functions and providers see of a Spirit: the :class:`HostContext`.

A host function never receives the Spirit object. It receives this small, typed interface (the
Spirit's name, memory, limits, providers, inbox, sleep, terminate, the current export), so every
host function can be unit-tested against a double (:class:`vudo.testing.FakeHostContext`) and
nothing below the Spirit layer depends on it. The provider Protocols live here too, because
host functions call them; their default implementations live in the providers layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, runtime_checkable

from .._config import Limits, Permissions
from .._memory import WasmMemory
from ..abi import LogLevel
from .broker import Message, MessageBroker
from .wasi_context import WasiContext

__all__ = [
    "DebugHandler",
    "EffectHandler",
    "EffectTarget",
    "HostContext",
    "Inbox",
    "Logger",
    "RandomProvider",
    "TimeProvider",
    "make_inbox",
]


# ------------------------------------------------------------------------------ providers
@runtime_checkable
class Logger(Protocol):
    """Where a Spirit's output and logs go."""

    def log(self, level: LogLevel, message: str) -> None:
        """A record at ``level``."""

    def debug(self, message: str) -> None:
        """A DEBUG record."""

    def info(self, message: str) -> None:
        """An INFO record."""

    def warn(self, message: str) -> None:
        """A WARN record."""

    def error(self, message: str) -> None:
        """An ERROR record."""

    def print(self, message: str) -> None:
        """Text exactly as the Spirit printed it (no newline added)."""

    def println(self, message: str) -> None:
        """Text followed by a newline."""


@runtime_checkable
class TimeProvider(Protocol):
    """Clocks and sleeping, injectable for deterministic tests."""

    def now(self) -> int:
        """Wall clock, milliseconds since the Unix epoch."""
        ...

    def monotonic_now(self) -> int:
        """Monotonic nanoseconds."""
        ...

    def sleep(self, ms: int) -> None:
        """Pause the calling Spirit for ``ms`` milliseconds."""


@runtime_checkable
class RandomProvider(Protocol):
    """Randomness, injectable for deterministic tests."""

    def random(self) -> float:
        """A float uniform in [0, 1)."""
        ...

    def random_bytes(self, n: int) -> bytes:
        """``n`` cryptographically secure random bytes."""
        ...


class EffectTarget(Protocol):
    """What an effect handler needs of a Spirit: its name, state, inbox and termination.

    ``permissions`` (``None``: the handler's defaults) are the Spirit's own grants.
    """

    @property
    def name(self) -> str:
        """The Spirit's name."""
        ...

    @property
    def terminated(self) -> bool:
        """Whether the Spirit is terminated (its pending results are then dropped)."""
        ...

    @property
    def permissions(self) -> Permissions | None:
        """The Spirit's own permissions, overriding the handler's defaults when set."""
        ...

    def deliver(self, from_: str, payload: bytes, /) -> bool:
        """Queue a message in the Spirit's inbox; ``False`` if full or closed."""
        ...

    def terminate(self, cause: str, /) -> None:
        """Terminate the Spirit with ``cause``."""


@runtime_checkable
class EffectHandler(Protocol):
    """Performs ``vudo_emit_effect`` and ``vudo_subscribe`` for a Spirit."""

    def emit(self, spirit: EffectTarget, effect_id: int, payload: bytes) -> int:
        """Perform or queue an effect; return a result code."""
        ...

    def subscribe(self, spirit: EffectTarget, channel: str) -> int:
        """Subscribe the Spirit to a host channel; return a result code."""
        ...


@runtime_checkable
class DebugHandler(Protocol):
    """Told about breakpoints, assertions and panics.

    ``on_assert`` is called for every ``vudo_assert``, passing ones too (before
    ``assert_failed`` for a failing one), so a debugger can count them; a handler without it
    (written before it existed) is still accepted and only hears of failures.
    """

    def breakpoint(self, spirit: HostContext, backtrace: list[str]) -> None:
        """``vudo_breakpoint`` was called (with the Spirit's call stack)."""

    def on_assert(self, spirit: HostContext, ok: bool, message: str) -> None:
        """``vudo_assert`` was called: ``ok`` is whether the condition held."""

    def assert_failed(self, spirit: HostContext, message: str) -> None:
        """``vudo_assert`` failed with ``message``."""

    def panic(self, spirit: HostContext, message: str) -> None:
        """``vudo_panic`` was called with ``message``."""


# ------------------------------------------------------------------------------ inbox
@dataclass(slots=True)
class Inbox:
    """One Spirit's handle on its message broker, with every operation bound to its name.

    Built by the Spirit from the session's broker; the messaging host functions bind these
    callables once, so a send or receive costs one call into the broker. ``requeue`` is
    ``None`` for brokers that cannot put a message back (they are read peek-then-take).
    ``outstanding`` holds the message blocks handed to the Spirit and not yet freed; for a
    broker that acknowledges when the Spirit is finished (NATS), ``done`` tells it so and
    ``finished`` maps each such block to its message.
    """

    name: str
    post: Callable[[str, bytes], int]
    recv: Callable[[], Message | None]
    peek: Callable[[], Message | None]
    pending: Callable[[], int]
    broadcast: Callable[[bytes], int]
    peers: Callable[[], int]
    requeue: Callable[[Message], None] | None = None
    done: Callable[[Message], bool] | None = None
    outstanding: set[int] = field(default_factory=set)
    finished: dict[int, Message] = field(default_factory=dict)


def make_inbox(broker: MessageBroker, name: str) -> Inbox:
    """The :class:`~vudo.Inbox` of ``name`` on ``broker``, every operation bound once."""
    return Inbox(
        name=name,
        post=partial(broker.post, name),
        recv=partial(broker.recv, name),
        peek=partial(broker.peek, name),
        pending=partial(broker.pending, name),
        broadcast=partial(broker.broadcast, name),
        peers=lambda: len(broker.spirits()),
        requeue=broker.requeue if broker.supports_requeue else None,
        done=None if broker.supports_requeue else partial(broker.done, name),
    )


# ------------------------------------------------------------------------------ context
class HostContext(EffectTarget, Protocol):
    """What a host function (and a host function factory) sees of the calling Spirit."""

    @property
    def memory(self) -> WasmMemory:
        """The Spirit's memory; for a Spirit without one, every access is out of bounds."""
        ...

    @property
    def limits(self) -> Limits:
        """The Spirit's limits."""
        ...

    @property
    def logger(self) -> Logger:
        """The Spirit's logger."""
        ...

    @property
    def time(self) -> TimeProvider:
        """The Spirit's time provider."""
        ...

    @property
    def random(self) -> RandomProvider:
        """The Spirit's random provider."""
        ...

    @property
    def effects(self) -> EffectHandler:
        """The Spirit's effect handler."""
        ...

    @property
    def debugger(self) -> DebugHandler:
        """The Spirit's debug handler."""
        ...

    @property
    def debug(self) -> bool:
        """Whether the Spirit was loaded with ``debug=True``."""
        ...

    @property
    def inbox(self) -> Inbox:
        """The Spirit's inbox on the session's broker."""
        ...

    @property
    def current_function(self) -> str:
        """The export executing (innermost), or ``"<host>"`` when it is not tracked."""
        ...

    @property
    def wasi(self) -> WasiContext | None:
        """The Spirit's WASI state (output sinks, the engine's functions), or ``None`` for a
        Spirit that imports no WASI."""
        ...

    @property
    def call_stack(self) -> list[str]:
        """Exports executing, outermost first (tracked for Spirits with limits or debug)."""
        ...

    @property
    def termination_cause(self) -> str | None:
        """Why the Spirit was terminated, or ``None``."""
        ...

    def sleep(self, ms: int) -> None:
        """Pause this Spirit for ``ms`` milliseconds, within its timeout, woken by dismissal;
        raises ``SpiritTimeout``/``SpiritTerminated`` when the pause was cut short."""


#: The former name of :class:`HostContext` (what a host function factory receives).
LoaContext = HostContext
