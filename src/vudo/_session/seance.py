"""Séances: many Spirits in one session, sharing a message bus.

:class:`Seance` is the synchronous face and holds all the logic; :class:`~vudo.AsyncSeance`
(:mod:`._session.aseance`) is the asyncio face of the same object, running calls in threads.
Every Spirit has its own store and lock, and wasmtime releases the GIL while WebAssembly runs,
so Spirits invoked from several threads (or concurrently from ``AsyncSeance``) run in parallel
on separate cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack, cast

from .._config import Limits, Permissions, SpiritConfig
from .._effects import StandardEffectHandler
from .._host import (
    DEFAULT_INBOX_CAPACITY,
    DebugHandler,
    EffectHandler,
    EffectTarget,
    LoaRegistry,
    Logger,
    MessageBroker,
    RandomProvider,
    TimeProvider,
)
from .._providers import MessageBus, Providers
from .._spirit import Source, Spirit, SpiritOptions, load_spirit, split_options
from .._trace import TraceRecorder, TracingBroker
from ..abi import EffectId, ResultCode
from ..errors import NameTaken, SeanceError
from .spawn import SeanceFull, spawn_effect

__all__ = ["Seance", "SeanceOptions", "SpiritStats"]

_log = logging.getLogger("vudo.seance")


class SeanceOptions(TypedDict, total=False):
    """The options of :class:`Seance` (and :class:`AsyncSeance`).

    ``config`` and ``providers`` are the defaults of every Spirit summoned (each ``summon`` may
    override them field by field); ``limits``, ``permissions`` and the provider keywords are
    typed shortcuts for their fields. ``broker`` is the message broker (an in-process
    :class:`~vudo.MessageBus` of ``inbox_capacity`` by default), ``loas`` the Loas every Spirit
    links against, ``max_spirits`` a cap on the session's size, ``channels`` host channels to
    declare, and ``debug`` turns on the session's debug logging (``vudo.seance``, ``vudo.bus``).
    ``trace`` (a file, or a :class:`vudo._trace.TraceRecorder`) records calls, host calls and
    messages as Chrome trace events, written when the session is dismissed.
    """

    config: SpiritConfig
    providers: Providers
    broker: MessageBroker
    loas: LoaRegistry
    logger: Logger
    time_provider: TimeProvider
    random_provider: RandomProvider
    effect_handler: EffectHandler
    debug_handler: DebugHandler
    limits: Limits
    permissions: Permissions
    inbox_capacity: int
    max_spirits: int | None
    channels: tuple[str, ...] | list[str]
    debug: bool
    trace: str | os.PathLike[str] | TraceRecorder


@dataclass(slots=True)
class SpiritStats:
    """Per-Spirit counters kept by the session (for summaries such as ``vudo seance``)."""

    calls: int = 0
    failures: int = 0
    seconds: float = 0.0


class Seance:
    """A session of Spirits sharing a message bus (synchronous face).

    Session-wide defaults (a :class:`~vudo.SpiritConfig`, :class:`~vudo.Providers`, Loas) are
    given here and can be overridden per :meth:`summon`, field by field. Use it as a context
    manager: leaving it dismisses every Spirit.
    """

    def __init__(self, **options: Unpack[SeanceOptions]) -> None:
        self.debug = options.get("debug", False)
        broker = options.get("broker")
        # A broker given by the caller stays the caller's to close (it may serve other
        # sessions); the session closes only the bus it made.
        self._owns_broker = broker is None
        #: The session's message broker (the in-process :class:`MessageBus` by default).
        self.messages: MessageBroker = broker if broker is not None else MessageBus(
            capacity=options.get("inbox_capacity", DEFAULT_INBOX_CAPACITY), debug=self.debug
        )
        trace = options.get("trace")
        #: Records calls, host calls and messages as Chrome trace events (``trace=``), or None.
        self.tracer: TraceRecorder | None = (
            trace if isinstance(trace, TraceRecorder) or trace is None else TraceRecorder(trace)
        )
        if self.tracer is not None:
            self.messages = TracingBroker(self.messages, self.tracer)
            self.tracer.capture_host_calls()
        loas = options.get("loas")
        #: The Loas every Spirit of the session links against.
        self.loas = loas if loas is not None else LoaRegistry()
        spirit_options = cast(SpiritOptions, {
            k: v for k, v in options.items()
            if k in SpiritOptions.__annotations__ and k not in ("loas", "trace")
        })
        config, providers = split_options(spirit_options)
        providers = providers if providers is not None else Providers()
        self._owns_effects = providers.effects is None
        #: The session's effect handler (shared by its Spirits unless one brings its own).
        self.effect_handler: EffectHandler = (
            providers.effects if providers.effects is not None else StandardEffectHandler()
        )
        #: Defaults of every Spirit summoned.
        self.config: SpiritConfig = config if config is not None else SpiritConfig()
        if self.tracer is not None:  # host calls reach the recorder through vudo.trace
            self.config = dataclasses.replace(self.config, trace=True)
        #: Default providers of every Spirit summoned (the session's effect handler included).
        self.providers: Providers = Providers(
            providers.logger, providers.time, providers.random, self.effect_handler,
            providers.debug,
        )
        self.max_spirits = options.get("max_spirits")
        self._spirits: dict[str, Spirit] = {}
        self._stats: dict[str, SpiritStats] = {}
        self._modules: dict[str, Source] = {}
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._dismissed = False
        # Set by AsyncSeance: where ``async def`` host functions of every Spirit of the
        # session run (Spirits spawned through SPAWN included).
        self._async_loop: asyncio.AbstractEventLoop | None = None
        for channel in options.get("channels", ()):
            self.register_channel(channel)
        register = getattr(self.effect_handler, "register", None)
        if callable(register):
            register(EffectId.SPAWN, self._spawn)

    def use_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the ``async def`` host functions of Spirits summoned from now on on ``loop``."""
        self._async_loop = loop

    # ------------------------------------------------------------------------ Spirits
    def summon(self, name: str, source: Source, **options: Unpack[SpiritOptions]) -> Spirit:
        """Load ``source`` as a Spirit called ``name``.

        ``options`` (``config``, ``providers`` and their shortcuts, ``loas``, ``imports``)
        override the session's defaults field by field: ``limits=Limits(timeout=1)`` keeps
        the session's fuel limit.
        """
        if not name:
            raise SeanceError("a Spirit needs a non-empty name")
        override, providers = split_options(options)
        config = self.config.merged(override)
        with self._lock:
            self._check_open()
            if name in self._spirits:
                raise SeanceError(f"a Spirit named {name!r} is already in this Séance")
            if self.max_spirits is not None and len(self._spirits) >= self.max_spirits:
                raise SeanceFull(f"this Séance is full ({self.max_spirits} Spirits)")
            # Claim the name on the bus first: with a distributed broker this is atomic
            # across processes, so two sessions cannot summon the same name.
            try:
                self.messages.register(name, capacity=config.limits.max_inbox)
            except NameTaken as exc:
                raise SeanceError(str(exc)) from None
            self._spirits[name] = _PLACEHOLDER
        try:
            loas = options.get("loas")
            spirit = load_spirit(
                source, name=name, broker=self.messages, config=config,
                providers=self.providers.merged(providers),
                loas=loas if loas is not None else self.loas, imports=options.get("imports", {}),
            )
        except BaseException:
            with self._lock:
                if self._spirits.get(name) is _PLACEHOLDER:
                    del self._spirits[name]
                    self.messages.unregister(name)
            raise
        if self._async_loop is not None:
            spirit.use_event_loop(self._async_loop)
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

    def module_for(self, ref: str) -> Source | None:
        """The source registered as ``ref`` (see :meth:`register_module`), or ``None``."""
        return self._modules.get(ref)

    def _spawn(self, spirit: EffectTarget, payload: bytes) -> int:
        return spawn_effect(self, spirit, payload)


_PLACEHOLDER: Any = object()  # reserves a name while its Spirit loads


