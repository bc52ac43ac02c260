"""The provider mocks of :mod:`vudo.testing`."""

from __future__ import annotations

import random as _random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from .._effects import DefaultEffectHandler
from .._host import (
    DebugHandler,
    EffectHandler,
    EffectTarget,
    HostContext,
    Logger,
    RandomProvider,
    TimeProvider,
)
from .._providers import LoggerBase
from ..abi import LogLevel, ResultCode

__all__ = [
    "AssertRecord",
    "BreakpointHit",
    "DebugMessage",
    "EffectRecord",
    "LogRecord",
    "MockDebugHandler",
    "MockEffectHandler",
    "MockLogger",
    "MockRandomProvider",
    "MockTimeProvider",
    "SubscribeRecord",
]


# ------------------------------------------------------------------------------------------
# Logger
# ------------------------------------------------------------------------------------------
class LogRecord(NamedTuple):
    """One record received by :class:`MockLogger`: its level and text."""

    level: LogLevel
    text: str


class MockLogger(LoggerBase):
    """A :class:`~vudo.Logger` that keeps everything in memory.

    - ``records``: every log record as ``(level, text)``, in order (``vudo_log``,
      ``vudo_error``, and the ``debug``/``info``/``warn``/``error`` methods).
    - ``messages``: the same records formatted ``"[LEVEL] text"`` (``"[INFO] ready"``,
      ``"[WARN] low"``), as in ``@vudo/runtime``'s ``MockLogger``.
    - ``errors``: the texts of the records at ERROR.
    - ``outputs``: text written with ``print`` (as is) and ``println`` (with ``"\\n"``
      appended), one entry per call; ``output`` is their concatenation, i.e. what a terminal
      would show.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[LogRecord] = []
        self.messages: list[str] = []
        self.errors: list[str] = []
        self.outputs: list[str] = []

    @property
    def output(self) -> str:
        """Everything printed so far, as one string."""
        with self._lock:
            return "".join(self.outputs)

    def log(self, level: LogLevel, message: str) -> None:
        """Record ``message`` at ``level`` (a value outside DEBUG..ERROR is recorded at ERROR)."""
        lvl = LogLevel.coerce(int(level))
        with self._lock:
            self.records.append(LogRecord(lvl, message))
            self.messages.append(f"[{lvl.name}] {message}")
            if lvl is LogLevel.ERROR:
                self.errors.append(message)

    def print(self, message: str) -> None:
        """Keep text written without a newline."""
        with self._lock:
            self.outputs.append(message)

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self.records.clear()
            self.messages.clear()
            self.errors.clear()
            self.outputs.clear()


# ------------------------------------------------------------------------------------------
# Time
# ------------------------------------------------------------------------------------------
class MockTimeProvider:
    """A :class:`~vudo.TimeProvider` with a simulated clock that moves only when told.

    ``now()`` is the wall clock in ms (``set_time`` sets it, and may move it backwards like a
    real wall clock); ``monotonic_now()`` is in ns and only moves forward, with ``advance`` and
    ``sleep``. ``sleep(ms)`` returns at once after advancing both clocks by ``ms`` and appending
    ``ms`` to ``sleeps``, so tests of sleeping Spirits take no real time. ``set_monotonic``
    sets the monotonic clock after the start.
    """

    def __init__(self, start_ms: int = 0, *, monotonic_start_ns: int = 0) -> None:
        if monotonic_start_ns < 0:
            raise ValueError("monotonic_start_ns must not be negative")
        self._lock = threading.Lock()
        self._now_ms = int(start_ms)
        self._mono_ns = int(monotonic_start_ns)
        #: Every ``sleep`` request, in ms, in order.
        self.sleeps: list[int] = []

    def set_time(self, ms: int) -> None:
        """Set the wall clock to ``ms`` milliseconds since the epoch (monotonic is unchanged)."""
        with self._lock:
            self._now_ms = int(ms)

    def set_monotonic(self, ns: int) -> None:
        """Set the monotonic clock to ``ns`` nanoseconds, at any time (``ValueError`` if
        negative). It may be set backwards to test a misbehaving clock; a Spirit still never
        sees ``vudo_monotonic_now`` decrease (it keeps the largest value it returned)."""
        if ns < 0:
            raise ValueError(f"the monotonic clock cannot be negative ({ns} ns)")
        with self._lock:
            self._mono_ns = int(ns)

    def advance(self, ms: int) -> None:
        """Move both clocks forward by ``ms`` milliseconds (``ValueError`` if negative)."""
        if ms < 0:
            raise ValueError(f"cannot advance time by a negative amount ({ms} ms)")
        with self._lock:
            self._now_ms += int(ms)
            self._mono_ns += int(ms) * 1_000_000

    def now(self) -> int:
        """Simulated wall clock, ms since the Unix epoch."""
        with self._lock:
            return self._now_ms

    def monotonic_now(self) -> int:
        """Simulated monotonic clock, ns."""
        with self._lock:
            return self._mono_ns

    def sleep(self, ms: int) -> None:
        """Record the request and advance the clocks by ``ms`` (a negative value counts as 0)."""
        with self._lock:
            self.sleeps.append(int(ms))
        self.advance(max(int(ms), 0))


# ------------------------------------------------------------------------------------------
# Randomness
# ------------------------------------------------------------------------------------------
class MockRandomProvider:
    """A :class:`~vudo.RandomProvider` with scripted floats and reproducible bytes.

    ``random()`` returns the scripted ``values`` first, in order (they are returned as given,
    even outside [0, 1), to test how the host copes), then values from a generator seeded with
    ``seed``. ``random_bytes(n)`` returns scripted byte strings queued with :meth:`queue_bytes`
    first, then ``n`` bytes from the seeded generator: two providers with the same seed give
    the same bytes. Requests are recorded in ``random_calls`` (count) and ``byte_requests``.
    :meth:`reset` starts the sequence again, with the same or a new seed.
    """

    def __init__(self, values: Iterable[float] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._values: deque[float] = deque(values)
        self._bytes: deque[bytes] = deque()
        self._seed = seed
        self._rng = _random.Random(seed)
        #: How many times ``random()`` was called.
        self.random_calls = 0
        #: The ``n`` of every ``random_bytes(n)`` call, in order.
        self.byte_requests: list[int] = []

    def reset(self, seed: int | None = None) -> None:
        """Start again as a new provider seeded with ``seed`` (the construction seed when
        ``None``): the same sequence again, scripted values and bytes and the counters
        forgotten."""
        with self._lock:
            if seed is not None:
                self._seed = seed
            self._rng.seed(self._seed)
            self._values.clear()
            self._bytes.clear()
            self.random_calls = 0
            self.byte_requests.clear()

    def push(self, *values: float) -> None:
        """Script more values for ``random()``, returned after those already queued."""
        with self._lock:
            self._values.extend(values)

    def queue_bytes(self, *chunks: bytes) -> None:
        """Script byte strings for ``random_bytes``, returned as is (whatever ``n`` is asked)."""
        with self._lock:
            self._bytes.extend(bytes(c) for c in chunks)

    def random(self) -> float:
        """The next scripted value, else a seeded one in [0, 1)."""
        with self._lock:
            self.random_calls += 1
            if self._values:
                return self._values.popleft()
            return self._rng.random()

    def random_bytes(self, n: int) -> bytes:
        """The next scripted chunk, else ``n`` seeded bytes (``ValueError`` if ``n < 0``)."""
        if n < 0:
            raise ValueError(f"cannot produce a negative number of bytes ({n})")
        with self._lock:
            self.byte_requests.append(n)
            if self._bytes:
                return self._bytes.popleft()
            return self._rng.randbytes(n)


# ------------------------------------------------------------------------------------------
# Effects
# ------------------------------------------------------------------------------------------
class EffectRecord(NamedTuple):
    """One ``vudo_emit_effect`` call seen by :class:`MockEffectHandler`."""

    effect_id: int
    payload: bytes


class SubscribeRecord(NamedTuple):
    """One ``vudo_subscribe`` call: the Spirit's name, the channel and the code it got."""

    spirit: str
    channel: str
    result: int


class MockEffectHandler(DefaultEffectHandler):
    """A :class:`~vudo.EffectHandler` that behaves like the default one and records.

    It subclasses :class:`~vudo.DefaultEffectHandler`, so NOOP is accepted, TERMINATE
    terminates the Spirit, ids handled with :meth:`register` run their handler, other ids
    return NotFound, and only channels declared with :meth:`register_channel` can be subscribed
    to. On top of that:

    - ``effects`` records every effect as ``(effect_id, payload)``, accepted or not;
    - ``subscriptions`` records every subscription request as ``(spirit, channel, result)``;
    - :meth:`set_result` (or ``results={effect_id: code}`` at construction) scripts the result
      code of an effect id (e.g. NotPermitted or Error) without performing it, taking
      precedence over registered handlers and the standard ids.

    Naming: ``@vudo/runtime``'s mock has ``emit(channel, payload)`` to notify subscribers, but
    ``emit`` is already the :class:`~vudo.EffectHandler` protocol method called by
    ``vudo_emit_effect`` (``emit(spirit, effect_id, payload)``). ``emit`` keeps the protocol
    meaning; sending a notification to a channel's subscribers is :meth:`notify`
    ``(channel, payload)`` (inherited), delivered with the sender ``channel:<name>``.
    """

    def __init__(self, results: Mapping[int, ResultCode | int] | None = None) -> None:
        super().__init__()
        self._rec_lock = threading.Lock()
        self._results: dict[int, int] = {int(k): int(v) for k, v in (results or {}).items()}
        self.effects: list[EffectRecord] = []
        self.subscriptions: list[SubscribeRecord] = []

    def set_result(self, effect_id: int, code: ResultCode | int) -> None:
        """Answer every later ``effect_id`` with ``code`` without performing it."""
        with self._rec_lock:
            self._results[int(effect_id)] = int(code)

    def emit(self, spirit: EffectTarget, effect_id: int, payload: bytes) -> int:
        """Record the effect, then answer as scripted or as the default handler does."""
        with self._rec_lock:
            self.effects.append(EffectRecord(int(effect_id), bytes(payload)))
            scripted = self._results.get(int(effect_id))
        if scripted is not None:
            return scripted
        return super().emit(spirit, effect_id, payload)

    def subscribe(self, spirit: EffectTarget, channel: str) -> int:
        """Subscribe as the default handler does, and record the request and its result."""
        code = int(super().subscribe(spirit, channel))
        with self._rec_lock:
            self.subscriptions.append(SubscribeRecord(spirit.name, channel, code))
        return code

    def clear(self) -> None:
        """Forget the recorded effects and subscription requests (not the subscriptions)."""
        with self._rec_lock:
            self.effects.clear()
            self.subscriptions.clear()


# ------------------------------------------------------------------------------------------
# Debugging
# ------------------------------------------------------------------------------------------
class BreakpointHit(NamedTuple):
    """One ``vudo_breakpoint``: the Spirit's name and its call stack, outermost first."""

    spirit: str
    backtrace: list[str]


class DebugMessage(NamedTuple):
    """A failed assertion or a panic: the Spirit's name and its message."""

    spirit: str
    message: str


class AssertRecord(NamedTuple):
    """One ``vudo_assert``: the Spirit's name, whether it held, and its message."""

    spirit: str
    ok: bool
    message: str


class MockDebugHandler:
    """A :class:`~vudo.DebugHandler` that records instead of debugging.

    ``breakpoints`` holds ``(spirit, backtrace)`` per ``vudo_breakpoint`` (the backtrace ends
    with ``"vudo_breakpoint"``; Spirits loaded with ``debug=True`` or limits also list the
    exports being executed, outermost first);
    ``assertions`` holds ``(spirit, ok, message)`` per ``vudo_assert``, passing ones too
    (``passed``/``failed`` count them);
    ``assertion_failures`` and ``panics`` hold ``(spirit, message)``. ``on_breakpoint``, if
    given, is called with the live Spirit at each breakpoint, e.g. to inspect its memory.
    """

    def __init__(self, on_breakpoint: Callable[[HostContext], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_breakpoint = on_breakpoint
        self.breakpoints: list[BreakpointHit] = []
        self.assertions: list[AssertRecord] = []
        self.assertion_failures: list[DebugMessage] = []
        self.panics: list[DebugMessage] = []

    @property
    def passed(self) -> int:
        """How many assertions held."""
        with self._lock:
            return sum(1 for record in self.assertions if record.ok)

    @property
    def failed(self) -> int:
        """How many assertions failed."""
        with self._lock:
            return sum(1 for record in self.assertions if not record.ok)

    def breakpoint(self, spirit: HostContext, backtrace: list[str]) -> None:
        """Record the breakpoint, then run ``on_breakpoint`` if one was given."""
        with self._lock:
            self.breakpoints.append(BreakpointHit(spirit.name, list(backtrace)))
        if self._on_breakpoint is not None:
            self._on_breakpoint(spirit)

    def on_assert(self, spirit: HostContext, ok: bool, message: str) -> None:
        """Record the assertion, passing or not."""
        with self._lock:
            self.assertions.append(AssertRecord(spirit.name, bool(ok), message))

    def assert_failed(self, spirit: HostContext, message: str) -> None:
        """Record the failed assertion."""
        with self._lock:
            self.assertion_failures.append(DebugMessage(spirit.name, message))

    def panic(self, spirit: HostContext, message: str) -> None:
        """Record the panic."""
        with self._lock:
            self.panics.append(DebugMessage(spirit.name, message))

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self.breakpoints.clear()
            self.assertions.clear()
            self.assertion_failures.clear()
            self.panics.clear()


if TYPE_CHECKING:  # static proof that the doubles satisfy the provider Protocols
    _logger: Logger = MockLogger()
    _time: TimeProvider = MockTimeProvider()
    _random_provider: RandomProvider = MockRandomProvider()
    _effects: EffectHandler = MockEffectHandler()
    _debug: DebugHandler = MockDebugHandler()
