"""Test doubles of the host context and memory: host functions tested without wasm."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

from .._config import Limits, Permissions
from .._host import DebugHandler, EffectHandler, Inbox, Logger, RandomProvider, TimeProvider
from .._host.context import make_inbox
from .._host.wasi_context import WasiContext
from .._memory import PAGE_SIZE, WasmMemory
from .._providers import MessageBus, PyMessageBus
from ..abi import ResultCode
from ._mocks import (
    MockDebugHandler,
    MockEffectHandler,
    MockLogger,
    MockRandomProvider,
    MockTimeProvider,
)

__all__ = ["FakeHostContext", "FakeMemory"]


# ------------------------------------------------------------------------------------------
# A host context without wasm
# ------------------------------------------------------------------------------------------
class FakeMemory(WasmMemory):
    """A linear memory without a Spirit: ``pages`` of zeroed bytes that can grow up to
    ``max_pages``, with the same bounds checks, typed access and host heap as a real one."""

    def __init__(self, pages: int = 1, *, max_pages: int = 16, allocator: str = "freelist",
                 name: str = "fake") -> None:
        super().__init__(allocator=allocator, name=name)
        if not 0 <= pages <= max_pages:
            raise ValueError(f"pages must be within 0..{max_pages}")
        self._buffer = (ctypes.c_ubyte * (max_pages * PAGE_SIZE))()
        self._base = ctypes.addressof(self._buffer)
        self._fake_pages = pages
        self._max_pages = max_pages
        self._refresh()
        self.heap_floor = self._size

    @property
    def attached(self) -> bool:
        """Always ``True``."""
        return True

    def _refresh(self) -> int:
        size = self._fake_pages * PAGE_SIZE
        if size != self._size:
            self._view = memoryview(self._buffer).cast("B")[:size]
            self._size = size
        return size

    def grow(self, pages: int) -> int:
        """Grow by ``pages`` up to ``max_pages``; the previous size in pages, or -1."""
        if pages < 0:
            raise ValueError("cannot grow memory by a negative number of pages")
        old = self._fake_pages
        if self._max_pages is not None and old + pages > self._max_pages:
            return -1
        self._fake_pages += pages
        self._refresh()
        return old


class FakeHostContext:
    """A :class:`~vudo.HostContext` double: call a host function factory with it to test the
    host function without wasm, e.g. ``vudo_print(FakeHostContext())(ptr, len)``.

    Defaults: a :class:`FakeMemory`, ``Limits()``, the mocks of this module, and an inbox on
    a :class:`~vudo.MessageBus` of its own (``bus``: register peers and post to them there).
    ``slept`` records every :meth:`sleep`, ``terminations`` every :meth:`terminate`.
    """

    def __init__(
        self,
        name: str = "spirit",
        *,
        memory: WasmMemory | None = None,
        limits: Limits | None = None,
        permissions: Permissions | None = None,
        logger: Logger | None = None,
        time: TimeProvider | None = None,
        random: RandomProvider | None = None,
        effects: EffectHandler | None = None,
        debugger: DebugHandler | None = None,
        debug: bool = False,
        bus: PyMessageBus | None = None,
        call_stack: Iterable[str] = (),
        wasi: WasiContext | None = None,
    ) -> None:
        self.name = name
        self.memory: WasmMemory = memory if memory is not None else FakeMemory(name=name)
        self.limits = limits if limits is not None else Limits()
        self.permissions = permissions
        self.logger: Logger = logger if logger is not None else MockLogger()
        self.time: TimeProvider = time if time is not None else MockTimeProvider()
        self.random: RandomProvider = random if random is not None else MockRandomProvider()
        self.effects: EffectHandler = effects if effects is not None else MockEffectHandler()
        self.debugger: DebugHandler = debugger if debugger is not None else MockDebugHandler()
        self.debug = debug
        self.bus = bus if bus is not None else MessageBus()
        if not self.bus.is_registered(name):
            self.bus.register(name, capacity=self.limits.max_inbox)
        self.inbox: Inbox = make_inbox(self.bus, name)
        self._stack = list(call_stack)
        self.terminated = False
        self.termination_cause: str | None = None
        self.slept: list[int] = []
        self.terminations: list[str] = []
        self.wasi = wasi

    @property
    def current_function(self) -> str:
        """The innermost name of ``call_stack``, or ``"<host>"``."""
        return self._stack[-1] if self._stack else "<host>"

    @property
    def call_stack(self) -> list[str]:
        """The call stack given at construction."""
        return list(self._stack)

    def sleep(self, ms: int) -> None:
        """Record the pause and pass it to the time provider (a mock clock advances)."""
        ms = max(ms, 0)
        self.slept.append(ms)
        self.time.sleep(ms)

    def deliver(self, from_: str, payload: bytes, /) -> bool:
        """Queue a message in this context's inbox."""
        return self.bus.post(from_, self.name, payload) == ResultCode.OK

    def terminate(self, cause: str, /) -> None:
        """Record the termination."""
        self.terminated = True
        self.termination_cause = cause
        self.terminations.append(cause)
