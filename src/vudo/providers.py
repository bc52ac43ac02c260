"""Providers: the injectable capabilities host functions delegate to.

Each provider is a small :class:`typing.Protocol` with a default implementation. Pass your own per
Spirit (``load_spirit(..., logger=...)``) or per session (``Seance(logger=...)``); the test doubles
live in :mod:`vudo.testing`.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO, runtime_checkable

from ._effects._base import DefaultEffectHandler, EffectFn, EffectHandler
from .abi import LogLevel

if TYPE_CHECKING:
    from .spirit import Spirit

__all__ = [
    "DebugHandler",
    "DefaultDebugHandler",
    "DefaultEffectHandler",
    "EffectFn",
    "EffectHandler",
    "Logger",
    "LoggerBase",
    "RandomProvider",
    "StdLogger",
    "SystemRandomProvider",
    "SystemTimeProvider",
    "TimeProvider",
]

_PY_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


@runtime_checkable
class Logger(Protocol):
    """Where a Spirit's text and logs go (``vudo_print``, ``vudo_println``, ``vudo_log``...)."""

    def log(self, level: LogLevel, message: str) -> None:
        """Record ``message`` at ``level``."""

    def debug(self, message: str) -> None:
        """Record at DEBUG."""

    def info(self, message: str) -> None:
        """Record at INFO."""

    def warn(self, message: str) -> None:
        """Record at WARN."""

    def error(self, message: str) -> None:
        """Record at ERROR."""

    def print(self, message: str) -> None:
        """Write text without a newline."""

    def println(self, message: str) -> None:
        """Write text followed by a newline."""


class LoggerBase:
    """Derives the convenience methods of :class:`Logger` from two primitives.

    Subclasses implement ``log(level, message)`` and ``print(message)``; ``debug``/``info``/
    ``warn``/``error`` log at their level and ``println`` prints with a newline.
    """

    def log(self, level: LogLevel, message: str) -> None:
        """Record ``message`` at ``level`` (subclasses implement this)."""
        raise NotImplementedError

    def print(self, message: str) -> None:
        """Write text without a newline (subclasses implement this)."""
        raise NotImplementedError

    def debug(self, message: str) -> None:
        """Record at DEBUG."""
        self.log(LogLevel.DEBUG, message)

    def info(self, message: str) -> None:
        """Record at INFO."""
        self.log(LogLevel.INFO, message)

    def warn(self, message: str) -> None:
        """Record at WARN."""
        self.log(LogLevel.WARN, message)

    def error(self, message: str) -> None:
        """Record at ERROR."""
        self.log(LogLevel.ERROR, message)

    def println(self, message: str) -> None:
        """Write text followed by a newline."""
        self.print(message + "\n")


class StdLogger(LoggerBase):
    """Default logger: text to a stream (stdout), records through :mod:`logging`.

    Records go to the logger ``vudo.spirit.<name>`` so users configure them the usual way.
    """

    def __init__(self, name: str = "spirit", stream: TextIO | None = None) -> None:
        self.logger = logging.getLogger(f"vudo.spirit.{name}")
        self._stream = stream

    def _out(self) -> TextIO:
        # Resolved per write so redirected/captured stdout is honoured.
        return self._stream if self._stream is not None else sys.stdout

    def log(self, level: LogLevel, message: str) -> None:
        """Record ``message`` at ``level`` through :mod:`logging`."""
        self.logger.log(_PY_LEVELS.get(level, logging.ERROR), message)

    def print(self, message: str) -> None:
        """Write text without a newline and flush, so interleaving with logs stays readable."""
        out = self._out()
        out.write(message)
        out.flush()



@runtime_checkable
class TimeProvider(Protocol):
    """Clocks and sleeping for ``vudo_now``, ``vudo_monotonic_now`` and ``vudo_sleep``."""

    def now(self) -> int:
        """Wall clock in milliseconds since the Unix epoch."""
        ...

    def monotonic_now(self) -> int:
        """Monotonic nanoseconds; never decreases."""
        ...

    def sleep(self, ms: int) -> None:
        """Pause the calling Spirit for ``ms`` milliseconds (``ms >= 0``)."""


class SystemTimeProvider:
    """Default clocks: :func:`time.time_ns`, :func:`time.monotonic_ns`, :func:`time.sleep`."""

    def now(self) -> int:
        """Wall clock in milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000

    def monotonic_now(self) -> int:
        """Monotonic nanoseconds."""
        return time.monotonic_ns()

    def sleep(self, ms: int) -> None:
        """Sleep on the calling thread only (the GIL is released meanwhile)."""
        if ms > 0:
            time.sleep(ms / 1000)


@runtime_checkable
class RandomProvider(Protocol):
    """Randomness for ``vudo_random`` and ``vudo_random_bytes``."""

    def random(self) -> float:
        """A float uniform in [0, 1)."""
        ...

    def random_bytes(self, n: int) -> bytes:
        """Exactly ``n`` random bytes."""
        ...


class SystemRandomProvider:
    """Default randomness: cryptographically secure (:mod:`secrets` / ``os.urandom``)."""

    def random(self) -> float:
        """53 random bits scaled into [0, 1)."""
        return secrets.randbits(53) / 9007199254740992.0

    def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from the OS CSPRNG."""
        return os.urandom(n)


@runtime_checkable
class DebugHandler(Protocol):
    """What ``vudo_breakpoint``, a failed ``vudo_assert`` and ``vudo_panic`` report to."""

    def breakpoint(self, spirit: Spirit, backtrace: list[str]) -> None:
        """The Spirit hit ``vudo_breakpoint``; ``backtrace`` is the wasm call stack."""

    def assert_failed(self, spirit: Spirit, message: str) -> None:
        """``vudo_assert`` failed with ``message`` (the call fails afterwards)."""

    def panic(self, spirit: Spirit, message: str) -> None:
        """The Spirit panicked with ``message`` (it is terminated afterwards)."""


class DefaultDebugHandler:
    """Default debugging: log breakpoints at DEBUG; with ``debug=True`` enter :func:`breakpoint`.

    With the debugger, ``spirit`` in the frame above is the Spirit, so its memory and exports can
    be inspected from pdb.
    """

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self._log = logging.getLogger("vudo.debug")

    def breakpoint(self, spirit: Spirit, backtrace: list[str]) -> None:
        """Log the backtrace at DEBUG, and call Python's breakpoint hook when debugging."""
        self._log.debug(
            "breakpoint in Spirit %r\n  %s", spirit.name, "\n  ".join(backtrace) or "(no frames)"
        )
        if self.debug:
            breakpoint()

    def assert_failed(self, spirit: Spirit, message: str) -> None:
        """Log the failed assertion at WARNING."""
        self._log.warning("assertion failed in Spirit %r: %s", spirit.name, message)

    def panic(self, spirit: Spirit, message: str) -> None:
        """Log the panic at ERROR."""
        self._log.error("Spirit %r panicked: %s", spirit.name, message)
