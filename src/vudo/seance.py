"""Séances: many Spirits in one session, sharing a message bus.

:class:`Seance` is the synchronous face and holds all the logic; :class:`AsyncSeance` is the
asyncio face of the same object, running Spirit calls in worker threads. Every Spirit has its own
store and lock, and wasmtime releases the GIL while WebAssembly runs, so Spirits invoked from
several threads (or concurrently from ``AsyncSeance``) run in parallel on separate cores.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._trace import TraceRecorder, TracingBroker
from .abi import EffectId, ResultCode
from .broker import DEFAULT_INBOX_CAPACITY, MessageBroker, MessageBus
from .effects import Permissions, StandardEffectHandler, encode_result
from .errors import SeanceError
from .limits import Limits
from .loa import LoaRegistry
from .providers import (
    DebugHandler,
    EffectHandler,
    Logger,
    RandomProvider,
    TimeProvider,
)
from .spirit import Source, Spirit, load_spirit

__all__ = ["AsyncSeance", "Seance", "SpiritStats"]

_log = logging.getLogger("vudo.seance")
_U32 = struct.Struct("<I")
R = TypeVar("R")


class _SeanceFull(SeanceError):
    """The session holds ``max_spirits`` Spirits (those still loading included)."""


@dataclass(slots=True)
class SpiritStats:
    """Per-Spirit counters kept by the session (for summaries such as ``vudo seance``)."""

    calls: int = 0
    failures: int = 0
    seconds: float = 0.0


class Seance:
    """A session of Spirits sharing a message bus (synchronous face).

    Session-wide defaults (providers, Loas, limits, permissions) are given here and can be
    overridden per :meth:`summon`. Use it as a context manager: leaving it dismisses every Spirit.
    ``trace="session.json"`` (or a :class:`vudo._trace.TraceRecorder`) records calls, host calls
    and messages as Chrome trace events, written when the session is dismissed.
    """

    def __init__(
        self,
        *,
        broker: MessageBroker | None = None,
        loas: LoaRegistry | None = None,
        logger: Logger | None = None,
        time_provider: TimeProvider | None = None,
        random_provider: RandomProvider | None = None,
        effect_handler: EffectHandler | None = None,
        debug_handler: DebugHandler | None = None,
        limits: Limits | None = None,
        permissions: Permissions | None = None,
        inbox_capacity: int = DEFAULT_INBOX_CAPACITY,
        max_spirits: int | None = None,
        channels: tuple[str, ...] | list[str] = (),
        debug: bool = False,
        trace: str | os.PathLike[str] | TraceRecorder | None = None,
    ) -> None:
        self.debug = debug
        #: Records calls, host calls and messages as Chrome trace events (``trace=``), or None.
        self.tracer: TraceRecorder | None = (
            trace if isinstance(trace, TraceRecorder) or trace is None else TraceRecorder(trace)
        )
        # A broker given by the caller stays the caller's to close (it may serve other
        # sessions); the session closes only the bus it made.
        self._owns_broker = broker is None
        #: The session's message broker (the in-process :class:`MessageBus` by default).
        self.messages: MessageBroker = (
            broker if broker is not None else MessageBus(capacity=inbox_capacity, debug=debug)
        )
        if self.tracer is not None:
            self.messages = TracingBroker(self.messages, self.tracer)
            self.tracer.capture_host_calls()
        #: The Loas every Spirit of the session links against.
        self.loas = loas if loas is not None else LoaRegistry()
        self._owns_effects = effect_handler is None
        self.effect_handler: EffectHandler = (
            effect_handler if effect_handler is not None else StandardEffectHandler()
        )
        self.max_spirits = max_spirits
        self._defaults: dict[str, Any] = {
            "logger": logger,
            "time_provider": time_provider,
            "random_provider": random_provider,
            "effect_handler": self.effect_handler,
            "debug_handler": debug_handler,
            "loas": self.loas,
            "limits": limits,
            "permissions": permissions,
            **({"trace": True} if self.tracer is not None else {}),
        }
        self._spirits: dict[str, Spirit] = {}
        self._stats: dict[str, SpiritStats] = {}
        self._modules: dict[str, Source] = {}
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._dismissed = False
        # Set by AsyncSeance: where ``async def`` host functions of every Spirit of the
        # session run (Spirits spawned through SPAWN included).
        self._async_loop: asyncio.AbstractEventLoop | None = None
        for channel in channels:
            self.register_channel(channel)
        register = getattr(self.effect_handler, "register", None)
        if callable(register):
            register(EffectId.SPAWN, self._spawn_effect)

    # ------------------------------------------------------------------------ Spirits
    def summon(self, name: str, source: Source, **options: Any) -> Spirit:
        """Load ``source`` as a Spirit called ``name`` (options override session defaults)."""
        if not name:
            raise SeanceError("a Spirit needs a non-empty name")
        with self._lock:
            self._check_open()
            if name in self._spirits:
                raise SeanceError(f"a Spirit named {name!r} is already in this Séance")
            if self.max_spirits is not None and len(self._spirits) >= self.max_spirits:
                raise _SeanceFull(f"this Séance is full ({self.max_spirits} Spirits)")
            # Claim the name on the bus first: with a distributed broker this is atomic
            # across processes, so two sessions cannot summon the same name.
            limits: Limits | None = options.get("limits", self._defaults["limits"])
            try:
                self.messages.register(name, capacity=limits.max_inbox if limits else None)
            except ValueError as exc:
                raise SeanceError(str(exc)) from None
            self._spirits[name] = _PLACEHOLDER
        try:
            merged = {**self._defaults, **options}
            spirit = load_spirit(source, name=name, broker=self.messages, **merged)
        except BaseException:
            with self._lock:
                if self._spirits.get(name) is _PLACEHOLDER:
                    del self._spirits[name]
                    self.messages.unregister(name)
            raise
        if self._async_loop is not None:
            spirit._async_loop = self._async_loop
        with self._lock:
            # Dismissed (or the name released) while loading: the Spirit must not outlive it.
            if self._dismissed or self._spirits.get(name) is not _PLACEHOLDER:
                spirit.interrupt()
                if not self._dismissed:
                    self.messages.unregister(name)
                raise SeanceError(f"this Séance was dismissed while {name!r} was loading")
            self._spirits[name] = spirit
            self._stats[name] = SpiritStats()
        if self.debug:
            _log.debug("summoned %r from %s: %s", name, spirit.source, ", ".join(spirit.functions))
        return spirit

    def invoke(self, name: str, function: str, *args: Any) -> Any:
        """Call ``function`` of the Spirit ``name`` (thread-safe; Spirits run in parallel)."""
        with self._lock:
            spirit = self.get_spirit(name)
            stats = self._stats[name]
        fn = spirit.function(function)  # UnknownExportError lists the exports
        if self.debug:
            _log.debug("invoke %s.%s%r", name, function, args)
        start = time.perf_counter()
        failed = True
        try:
            if self.tracer is None:
                result = fn(*args)
            else:
                with self.tracer.call(name, function):
                    result = fn(*args)
            failed = False
        finally:
            elapsed = time.perf_counter() - start
            with self._stats_lock:
                stats.calls += 1
                stats.failures += failed
                stats.seconds += elapsed
        if self.debug:
            _log.debug("invoke %s.%s -> %r", name, function, result)
        return result

    def get_spirit(self, name: str) -> Spirit:
        """The Spirit called ``name`` (``SeanceError`` if there is none)."""
        spirit = self._spirits.get(name)
        if spirit is None or spirit is _PLACEHOLDER:
            self._check_open()
            known = ", ".join(self.spirits()) or "(none)"
            raise SeanceError(f"no Spirit named {name!r} in this Séance; Spirits: {known}")
        return spirit

    def has_spirit(self, name: str) -> bool:
        """Whether a Spirit called ``name`` is in the session."""
        spirit = self._spirits.get(name)
        return spirit is not None and spirit is not _PLACEHOLDER

    def spirits(self) -> list[str]:
        """Names of the Spirits in the session, in summoning order."""
        with self._lock:
            return [n for n, s in self._spirits.items() if s is not _PLACEHOLDER]

    def stats(self, name: str) -> SpiritStats:
        """Calls, failures and time spent in calls of the Spirit ``name`` (a snapshot)."""
        with self._lock:
            self.get_spirit(name)
            stats = self._stats[name]
        with self._stats_lock:
            return SpiritStats(stats.calls, stats.failures, stats.seconds)

    @property
    def size(self) -> int:
        """Number of Spirits in the session."""
        return len(self.spirits())

    def release(self, name: str) -> None:
        """Remove one Spirit: it is terminated, its inbox and queued messages are dropped."""
        with self._lock:
            spirit = self.get_spirit(name)
            del self._spirits[name]
            self._stats.pop(name, None)
        spirit.interrupt()
        self.messages.unregister(name)
        if self.debug:
            _log.debug("released %r", name)

    def dismiss(self) -> None:
        """End the session: every Spirit is stopped (a running call is interrupted within a
        few milliseconds) and every queue emptied. Returns without waiting for running calls."""
        with self._lock:
            if self._dismissed:
                return
            self._dismissed = True
            spirits = list(self._spirits.items())
            self._spirits.clear()
        for name, spirit in spirits:
            if spirit is not _PLACEHOLDER:
                spirit.interrupt()
            self.messages.unregister(name)
        if self._owns_broker:
            self.messages.close()
        if self._owns_effects and isinstance(self.effect_handler, StandardEffectHandler):
            self.effect_handler.close()
        if self.tracer is not None:
            self.tracer.close()
        if self.debug:
            _log.debug("dismissed %d Spirit(s)", len(spirits))

    @property
    def dismissed(self) -> bool:
        """Whether :meth:`dismiss` was called."""
        return self._dismissed

    def _check_open(self) -> None:
        if self._dismissed:
            raise SeanceError("this Séance has been dismissed")

    def __enter__(self) -> Seance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dismiss()

    # ------------------------------------------------------------------------ messaging
    def send(self, from_: str, to: str, payload: bytes | str, *, channel: int = 0) -> ResultCode:
        """Queue a message from the host (or on behalf of ``from_``) for ``to``."""
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        code = self.messages.post(from_, to, data, channel)
        if self.debug:
            _log.debug("send %r -> %r ch=%d %d bytes: %s", from_, to, channel, len(data), code.name)
        return code

    def pending(self, name: str, channel: int = 0) -> int:
        """Messages waiting for ``name`` (on ``channel``; 0 = any)."""
        return self.messages.pending(name, channel)

    def broadcast(self, from_: str, payload: bytes | str, *, channel: int = 0) -> int:
        """Send to every Spirit except ``from_``; return how many received it.

        (``vudo_broadcast`` from inside a Spirit includes the sender, as host-abi.md says.)
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        # The broker's view: with a distributed broker, Spirits of other processes too.
        return sum(
            1 for n in self.messages.spirits()
            if n != from_ and self.messages.post(from_, n, data, channel) == ResultCode.OK
        )

    def register_channel(self, channel: str) -> None:
        """Declare a host channel Spirits may ``vudo_subscribe`` to."""
        register = getattr(self.effect_handler, "register_channel", None)
        if not callable(register):
            raise SeanceError("the session's effect handler does not support channels")
        register(channel)

    def publish(self, channel: str, payload: bytes | str) -> int:
        """Notify every Spirit subscribed to ``channel``; return how many were notified."""
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        handlers = {id(h): h for h in [self.effect_handler] + [
            s.effect_handler for s in self._live()
        ]}
        delivered = 0
        for handler in handlers.values():
            notify = getattr(handler, "notify", None)
            if callable(notify):
                delivered += int(notify(channel, data))
        if self.debug:
            _log.debug("publish %r %d bytes -> %d subscriber(s)", channel, len(data), delivered)
        return delivered

    def _live(self) -> list[Spirit]:
        with self._lock:
            return [s for s in self._spirits.values() if s is not _PLACEHOLDER]

    # ------------------------------------------------------------------------ SPAWN
    def register_module(self, ref: str, source: Source) -> None:
        """Make ``source`` spawnable by Spirits through the SPAWN effect under ``ref``."""
        self._modules[ref] = source

    def _spawn_effect(self, spirit: Spirit, payload: bytes) -> int:
        """SPAWN payload: ``[name_len u32][name][module ref]`` (UTF-8)."""
        if len(payload) < 4:
            return ResultCode.INVALID_ARG
        (name_len,) = _U32.unpack_from(payload)
        if 4 + name_len > len(payload) or name_len == 0:
            return ResultCode.INVALID_ARG
        name = payload[4:4 + name_len].decode("utf-8", "replace")
        ref = payload[4 + name_len:].decode("utf-8", "replace")
        source = self._modules.get(ref)
        if source is None:
            _log.warning("SPAWN by %r: unknown module %r", spirit.name, ref)
            return ResultCode.NOT_FOUND
        if self.max_spirits is not None and self.size >= self.max_spirits:
            _log.warning("SPAWN by %r refused: session cap of %d Spirits reached",
                         spirit.name, self.max_spirits)
            return ResultCode.NOT_PERMITTED
        try:
            self.summon(name, source)
        except _SeanceFull:
            _log.warning("SPAWN by %r refused: session cap of %d Spirits reached",
                         spirit.name, self.max_spirits)
            return ResultCode.NOT_PERMITTED
        except Exception as exc:
            _log.warning("SPAWN by %r of %r failed: %s", spirit.name, name, exc)
            return ResultCode.ERROR
        spirit.deliver("effect:SPAWN", encode_result(ResultCode.OK, name.encode("utf-8")))
        return ResultCode.OK


_PLACEHOLDER: Any = object()  # reserves a name while its Spirit loads


class AsyncSeance:
    """The asyncio face of :class:`Seance`: the same session, awaited.

    Loading and calls run in worker threads, so concurrent ``invoke`` calls on different
    Spirits run in parallel, and ``async def`` host functions run on this event loop.
    """

    def __init__(self, **options: Any) -> None:
        #: The synchronous session doing the work.
        self.sync = Seance(**options)

    async def _run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    async def summon(self, name: str, source: Source, **options: Any) -> Spirit:
        """Load a Spirit off the event loop; its async host functions run on this loop."""
        self.sync._async_loop = asyncio.get_running_loop()
        return await self._run(self.sync.summon, name, source, **options)

    async def invoke(self, name: str, function: str, *args: Any) -> Any:
        """Call a Spirit's function in a worker thread."""
        return await self._run(self.sync.invoke, name, function, *args)

    async def release(self, name: str) -> None:
        """Remove one Spirit."""
        self.sync.release(name)

    async def dismiss(self) -> None:
        """End the session."""
        self.sync.dismiss()

    async def __aenter__(self) -> AsyncSeance:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dismiss()

    def get_spirit(self, name: str) -> Spirit:
        """The Spirit called ``name``."""
        return self.sync.get_spirit(name)

    def has_spirit(self, name: str) -> bool:
        """Whether a Spirit called ``name`` is in the session."""
        return self.sync.has_spirit(name)

    def spirits(self) -> list[str]:
        """Names of the Spirits in the session."""
        return self.sync.spirits()

    @property
    def size(self) -> int:
        """Number of Spirits."""
        return self.sync.size

    @property
    def loas(self) -> LoaRegistry:
        """The session's Loas."""
        return self.sync.loas

    @property
    def dismissed(self) -> bool:
        """Whether the session was dismissed."""
        return self.sync.dismissed

    def stats(self, name: str) -> SpiritStats:
        """Calls, failures and time spent in calls of the Spirit ``name``."""
        return self.sync.stats(name)

    @property
    def messages(self) -> MessageBroker:
        """The session's message broker."""
        return self.sync.messages

    def send(self, from_: str, to: str, payload: bytes | str, *, channel: int = 0) -> ResultCode:
        """Queue a message for ``to`` (never blocks)."""
        return self.sync.send(from_, to, payload, channel=channel)

    def pending(self, name: str, channel: int = 0) -> int:
        """Messages waiting for ``name``."""
        return self.sync.pending(name, channel)

    def broadcast(self, from_: str, payload: bytes | str, *, channel: int = 0) -> int:
        """Send to every Spirit except ``from_``."""
        return self.sync.broadcast(from_, payload, channel=channel)

    def publish(self, channel: str, payload: bytes | str) -> int:
        """Notify every subscriber of ``channel``."""
        return self.sync.publish(channel, payload)

    def register_channel(self, channel: str) -> None:
        """Declare a host channel."""
        self.sync.register_channel(channel)

    def register_module(self, ref: str, source: Source) -> None:
        """Make ``source`` spawnable through the SPAWN effect."""
        self.sync.register_module(ref, source)
