"""The :class:`~vudo.HostContext` of a live Spirit: what its host functions see of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .._config import Limits, Permissions
from .._host import (
    DebugHandler,
    EffectHandler,
    Inbox,
    Logger,
    RandomProvider,
    TimeProvider,
)
from .._host.wasi_context import WasiContext
from .._memory import WasmMemory
from .._runtime.callstate import CallState


class _Owner(Protocol):
    """What the context needs of its Spirit (kept out of a circular import)."""

    @property
    def name(self) -> str: ...

    def deliver(self, from_: str, payload: bytes, channel: int = 0) -> bool: ...

    def terminate(self, cause: str) -> None: ...

__all__ = ["SpiritContext"]


class SpiritContext:
    """The host context of one Spirit (see :class:`~vudo.HostContext`).

    It holds the Spirit's parts, not the Spirit: host functions reach nothing else. ``spirit``
    is kept for custom Loas that really need the whole object (e.g. to call an export back).
    """

    __slots__ = (
        "_owner",
        "_state",
        "_wait_sleep",
        "debug",
        "debugger",
        "effects",
        "inbox",
        "limits",
        "logger",
        "memory",
        "name",
        "permissions",
        "random",
        "spirit",
        "time",
        "wasi",
    )

    def __init__(
        self,
        spirit: _Owner,
        *,
        state: CallState,
        memory: WasmMemory,
        limits: Limits,
        permissions: Permissions | None,
        logger: Logger,
        time: TimeProvider,
        random: RandomProvider,
        effects: EffectHandler,
        debugger: DebugHandler,
        debug: bool,
        inbox: Inbox,
        provider_sleep: Callable[[int], None] | None,
        wasi: WasiContext | None = None,
    ) -> None:
        #: The Spirit itself, for custom Loas that need it (e.g. to call an export back).
        self.spirit: Any = spirit
        self._owner = spirit
        self.name = spirit.name
        self._state = state
        self.memory = memory
        self.limits = limits
        self.permissions = permissions
        self.logger = logger
        self.time = time
        self.random = random
        self.effects = effects
        self.debugger = debugger
        self.debug = debug
        self.inbox = inbox
        self._wait_sleep = provider_sleep
        self.wasi = wasi

    @property
    def terminated(self) -> bool:
        """Whether the Spirit is terminated."""
        return self._state.terminated

    @property
    def termination_cause(self) -> str | None:
        """Why the Spirit was terminated, or ``None``."""
        return self._state.termination_cause

    @property
    def current_function(self) -> str:
        """The export executing (innermost), or ``"<host>"``."""
        return self._state.current_function

    @property
    def call_stack(self) -> list[str]:
        """Exports executing, outermost first."""
        return list(self._state.stack)

    def sleep(self, ms: int) -> None:
        """Pause this Spirit (see :meth:`~vudo.HostContext.sleep`)."""
        self._state.sleep(ms, self._wait_sleep)

    def deliver(self, from_: str, payload: bytes, /) -> bool:
        """Queue a message for this Spirit; ``False`` if its inbox is full or closed."""
        return self._owner.deliver(from_, payload)

    def terminate(self, cause: str, /) -> None:
        """Terminate the Spirit."""
        self._owner.terminate(cause)

    def __repr__(self) -> str:
        return f"<SpiritContext {self.name!r}>"

