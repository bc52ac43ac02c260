"""A Spirit: one loaded WebAssembly module instance, callable like a Python object."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

import wasmtime

from .._config import Limits, Permissions, SpiritConfig
from .._effects import StandardEffectHandler
from .._host import LoaRegistry, MessageBroker
from .._host.context import make_inbox
from .._linking import ImportSpec, LinkPlan, plan_imports, valtype
from .._memory import WasmMemory
from .._providers import (
    DefaultDebugHandler,
    MessageBus,
    Providers,
    StdLogger,
    SystemRandomProvider,
    SystemTimeProvider,
)
from .._runtime import cnative, signals, valtypes
from .._runtime.asyncbridge import AsyncBridge
from .._runtime.backend import get_backend
from .._runtime.callstate import CallState
from .._runtime.spiritlock import new_spirit_lock
from ..abi import ResultCode, ValType
from ..errors import UnknownExportError, VudoError
from .context import SpiritContext
from .instance import instantiate, link_externs, new_store
from .proxy import SpiritProxy, protocol_methods
from .toolchains import finish_load, install_host_allocator, setup_wasi

__all__ = ["Spirit"]

T = TypeVar("T")
_log = logging.getLogger("vudo.spirit")


class Spirit:
    """A loaded, instantiated Spirit. Create it with :func:`vudo.load_spirit`.

    Calls are thread-safe: each Spirit has its own store and lock, so different Spirits run in
    parallel (wasmtime releases the GIL while WebAssembly runs) while calls into one Spirit are
    serialised. A host function may call back into its own Spirit (re-entrancy).
    """

    def __init__(
        self,
        module: wasmtime.Module,
        *,
        name: str,
        source_label: str = "<module>",
        config: SpiritConfig | None = None,
        providers: Providers | None = None,
        loas: LoaRegistry | None = None,
        imports: ImportSpec | None = None,
        broker: MessageBroker | None = None,
        plan: LinkPlan | None = None,
    ) -> None:
        cfg = config if config is not None else SpiritConfig()
        prov = providers if providers is not None else Providers()
        self.name = name
        self.module = module
        self.source = source_label
        self._config = cfg
        self.logger = prov.logger if prov.logger is not None else StdLogger(name)
        self.time_provider = prov.time if prov.time is not None else SystemTimeProvider()
        self.random_provider = prov.random if prov.random is not None else SystemRandomProvider()
        self._owns_effects = prov.effects is None
        self.effect_handler = prov.effects if prov.effects is not None else StandardEffectHandler()
        self.debug_handler = (
            prov.debug if prov.debug is not None else DefaultDebugHandler(cfg.debug)
        )
        self.loas = loas if loas is not None else LoaRegistry()
        self._owns_broker = broker is None
        self.broker: MessageBroker = broker if broker is not None else MessageBus()
        if plan is None:
            plan = plan_imports(module, self.loas, imports=imports, memory=cfg.memory_options,
                                source=source_label)
        plan.check()
        if not self.broker.is_registered(name):
            self.broker.register(name, capacity=cfg.limits.max_inbox)

        signals.protect()  # Ctrl-C/SIGTERM in a call path: deferred to a safe point
        limits = cfg.limits
        tracked = cfg.debug or limits.fuel is not None or limits.timeout is not None
        self._state = CallState(
            name, limits, tracked=tracked,
            on_terminate=self._on_terminate, memory_size=self._memory_size,
        )
        self._lock = new_spirit_lock(self._state, cnative.rlock())  # deadlock-checked waits
        self._memory = WasmMemory(allocator=cfg.allocator, name=name, lock=self._lock)
        install_host_allocator(self, self._memory, self._lock)  # [toolchains] host-abi.md
        self._bridge = AsyncBridge(self._state)
        self._keepalive: list[Any] = []
        backend = get_backend()
        self.store: wasmtime.Store = new_store(
            module, limits, self._state, backend, self._keepalive
        )
        #: What this Spirit's host functions see of it.
        self.context = SpiritContext(
            self, state=self._state, memory=self._memory, limits=limits,
            permissions=cfg.permissions, logger=self.logger, time=self.time_provider,
            random=self.random_provider, effects=self.effect_handler,
            debugger=self.debug_handler, debug=cfg.debug, inbox=make_inbox(self.broker, name),
            provider_sleep=(None if isinstance(self.time_provider, SystemTimeProvider)
                            else self.time_provider.sleep), wasi=setup_wasi(self, self.store),
        )
        externs, imported, binders = link_externs(
            plan, self.store, self.context, self._state, backend, self._bridge,
            trace=cfg.trace, keepalive=self._keepalive,
            default_time=type(self.time_provider) is SystemTimeProvider,
            default_random=type(self.random_provider) is SystemRandomProvider,
        )
        self.instance = instantiate(self.store, module, externs, self._state, source_label)
        shape = valtypes.shape_of(module)  # by name: wasmtime-py's iteration is quadratic
        self.exports: dict[str, Any] = (
            dict(self.instance.exports(self.store)) if shape is None else
            valtypes.exports_by_name(self.instance, self.store, (n for n, _ in shape.exports)))
        mem = self.exports.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            mem = imported or next(
                (e for e in self.exports.values() if isinstance(e, wasmtime.Memory)), None
            )
        if mem is not None:
            self._memory.attach(self.store, mem)
        address = ctypes.addressof(mem._memory) if mem is not None else 0
        for bind in binders:
            bind(address, self.logger)
        self._callers: dict[str, Callable[..., Any]] = {}
        self._signatures: dict[str, tuple[tuple[ValType, ...], tuple[ValType, ...]]] = {}
        for ename, ext in self.exports.items():
            if isinstance(ext, wasmtime.Func):
                ty = ext.type(self.store)
                sig = (tuple(valtype(t) for t in ty.params), tuple(valtype(t) for t in ty.results))
                self._signatures[ename] = sig
                self._callers[ename] = backend.caller(
                    self._state, self._lock, self.store, ename, ext, *sig, self._keepalive)
        finish_load(self)  # [toolchains] the strategy-3 warning; a reactor's _initialize

    # --------------------------------------------------------------------------- config
    @property
    def config(self) -> SpiritConfig:
        """How the Spirit was loaded (read-only: it applies at load time)."""
        return self._config

    @property
    def limits(self) -> Limits:
        """The Spirit's limits (read-only)."""
        return self._config.limits

    @property
    def permissions(self) -> Permissions | None:
        """The Spirit's effect permissions, or ``None`` for the handler's defaults (read-only)."""
        return self._config.permissions

    @property
    def debug(self) -> bool:
        """Whether the Spirit was loaded with ``debug=True``."""
        return self._config.debug

    # --------------------------------------------------------------------------- exports
    def _exports_table(self) -> dict[str, Callable[..., Any]]:
        return self._callers

    @property
    def functions(self) -> list[str]:
        """Names of the exported functions."""
        return list(self._callers)

    def has_function(self, name: str) -> bool:
        """Whether the Spirit exports a function called ``name``."""
        return name in self._callers

    def signature(self, name: str) -> tuple[tuple[ValType, ...], tuple[ValType, ...]]:
        """The wasm ``(params, results)`` of an exported function."""
        try:
            return self._signatures[name]
        except KeyError:
            raise UnknownExportError(self.name, name, self.functions) from None

    def call(self, name: str, *args: Any) -> Any:
        """Call export ``name``; Python values are converted to its declared wasm types.

        Returns ``None``, one value, or a tuple for multi-value results.
        """
        try:
            fn = self._callers[name]
        except KeyError:
            raise UnknownExportError(self.name, name, self.functions) from None
        return fn(*args)

    def function(self, name: str) -> Callable[..., Any]:
        """The precompiled call path of export ``name`` (the fastest way to call it)."""
        try:
            return self._callers[name]
        except KeyError:
            raise UnknownExportError(self.name, name, self.functions) from None

    @overload
    def as_(self, protocol: None = None) -> SpiritProxy: ...
    @overload
    def as_(self, protocol: Callable[..., T]) -> T: ...
    # Callable, not type[T]: mypy refuses a Protocol class where type[T] is expected.
    def as_(self, protocol: Callable[..., T] | None = None) -> T | SpiritProxy:
        """A typed proxy: ``spirit.as_(Calculator).add(1, 2)``.

        With a Protocol, every method it declares must be exported (checked now, with an error
        listing the missing ones). Gene methods ``Counter.add`` are ``proxy.Counter.add``.
        """
        if protocol is not None:
            if not isinstance(protocol, type):
                raise TypeError(f"as_() expects a class (a typing.Protocol), got {protocol!r}")
            missing = [m for m in protocol_methods(protocol) if m not in self._callers]
            if missing:
                raise UnknownExportError(self.name, ", ".join(missing), self.functions)
        return SpiritProxy(self, "")

    # --------------------------------------------------------------------------- memory
    @property
    def memory(self) -> WasmMemory:
        """The Spirit's linear memory (``VudoError`` if the module has none)."""
        if not self._memory.attached:
            raise VudoError(f"Spirit {self.name!r} has no memory")
        return self._memory

    @property
    def memory_or_null(self) -> WasmMemory:
        """The memory, or (for a Spirit without one) a stand-in on which every access is out
        of bounds."""
        return self._memory

    @property
    def has_memory(self) -> bool:
        """Whether the Spirit has a linear memory."""
        return self._memory.attached

    def _memory_size(self) -> int:
        return self._memory.size

    def use_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Run this Spirit's ``async def`` host functions on ``loop`` (a running loop on
        another thread); ``None``: on a private loop of the Spirit's own."""
        self._bridge.loop = loop

    # --------------------------------------------------------------------------- state
    @property
    def call_stack(self) -> list[str]:
        """Export names currently executing, outermost first (kept for Spirits with limits
        or ``debug``)."""
        return self._state.stack

    @property
    def current_function(self) -> str:
        """The export currently executing (innermost), or ``"<host>"``."""
        return self._state.current_function

    @property
    def terminated(self) -> bool:
        """Whether the Spirit was terminated (panic, TERMINATE, dismissal, fatal limit)."""
        return self._state.terminated

    @property
    def termination_cause(self) -> str | None:
        """Why the Spirit was terminated, or ``None``."""
        return self._state.termination_cause

    def terminate(self, cause: str) -> None:
        """End the Spirit: later calls raise ``SpiritTerminated``; its inbox is closed."""
        self._state.terminate(cause)

    def _on_terminate(self, cause: str) -> None:
        self.broker.unregister(self.name)
        _log.debug("Spirit %r terminated: %s", self.name, cause)

    def interrupt(self) -> None:
        """Stop a running call at the next epoch tick (from any thread) and terminate."""
        self._state.cancel()
        self.terminate(self._state.termination_cause or "dismissed")

    def cancel_call(self) -> None:
        """Stop the call running now (from any thread) within one epoch tick; it raises
        :class:`~vudo.errors.CallCancelled` and the Spirit stays usable. Call
        :meth:`cancel_done` once that call has returned."""
        self._state.abort_call()

    def cancel_done(self) -> None:
        """The cancelled call has returned: later calls run normally."""
        self._state.call_aborted()

    def deliver(self, from_: str, payload: bytes, channel: int = 0) -> bool:
        """Queue a message for this Spirit (thread-safe); ``False`` if full or closed."""
        return self.broker.post(from_, self.name, payload, channel) == ResultCode.OK

    def close(self) -> None:
        """Terminate the Spirit and free its store, memory and everything they hold now
        (not when the garbage collector gets to them), with the bus and effect handler it made
        for itself. Safe to call twice."""
        self._state.cancel()
        self.terminate(self._state.termination_cause or "closed")
        if self._owns_broker:
            self.broker.close()
        if self._owns_effects and isinstance(self.effect_handler, StandardEffectHandler):
            self.effect_handler.close()
        self._bridge.close()
        if self._lock._is_owned():
            return  # closed from inside one of its own calls: wasm is still on the stack
        with self._lock:
            self._memory.detach()
            self._keepalive.clear()
            self._state.set_fuel = self._state.set_epoch_deadline = None
            self.__dict__.pop("instance", None)
            self.__dict__.pop("store", None)

    def __enter__(self) -> Spirit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "terminated" if self.terminated else "live"
        n = len(self._callers)
        return f"<Spirit {self.name!r} from {self.source} ({state}, {n} functions)>"
