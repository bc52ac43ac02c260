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
from dataclasses import dataclass
from typing import TextIO

from .._host.context import (
    DebugHandler,
    EffectHandler,
    EffectTarget,
    Logger,
    RandomProvider,
    TimeProvider,
)
from ..abi import LogLevel

__all__ = [
    "DebugHandler",
    "DefaultDebugHandler",
    "EffectHandler",
    "Logger",
    "LoggerBase",
    "Providers",
    "RandomProvider",
    "StdLogger",
    "SystemRandomProvider",
    "SystemTimeProvider",
    "TimeProvider",
]

_SPIRITS_LOGGER = logging.getLogger("vudo.spirit")
_PY_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


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
        self._name = f"vudo.spirit.{name}"
        # Not registered with logging's manager (which keeps every logger forever): a logger
        # of that name that the user configured is used instead, looked up per record.
        self._own = logging.Logger(self._name)
        self._own.parent = _SPIRITS_LOGGER
        self._stream = stream

    @property
    def logger(self) -> logging.Logger:
        """The :mod:`logging` logger records go to (``vudo.spirit.<name>``)."""
        configured = logging.Logger.manager.loggerDict.get(self._name)
        return configured if isinstance(configured, logging.Logger) else self._own

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


class SystemRandomProvider:
    """Default randomness: cryptographically secure (:mod:`secrets` / ``os.urandom``)."""

    def random(self) -> float:
        """53 random bits scaled into [0, 1)."""
        return secrets.randbits(53) / 9007199254740992.0

    def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from the OS CSPRNG."""
        return os.urandom(n)


#: A registered effect: ``fn(spirit, payload) -> ResultCode | int``.


class DefaultDebugHandler:
    """Default debugging: log breakpoints at DEBUG; with ``debug=True`` enter :func:`breakpoint`.

    With the debugger, ``spirit`` in the frame above is the Spirit's host context, so its
    memory can be inspected from pdb.
    """

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self._log = logging.getLogger("vudo.debug")

    def breakpoint(self, spirit: EffectTarget, backtrace: list[str]) -> None:
        """Log the backtrace at DEBUG, and call Python's breakpoint hook when debugging."""
        self._log.debug(
            "breakpoint in Spirit %r\n  %s", spirit.name, "\n  ".join(backtrace) or "(no frames)"
        )
        if self.debug:
            breakpoint()

    def on_assert(self, spirit: EffectTarget, ok: bool, message: str) -> None:
        """Log every assertion at DEBUG on ``vudo.debug``, passing or not."""
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("assertion %s in Spirit %r: %s", "passed" if ok else "failed",
                            spirit.name, message)

    def assert_failed(self, spirit: EffectTarget, message: str) -> None:
        """Log the failed assertion at WARNING."""
        self._log.warning("assertion failed in Spirit %r: %s", spirit.name, message)

    def panic(self, spirit: EffectTarget, message: str) -> None:
        """Log the panic at ERROR."""
        self._log.error("Spirit %r panicked: %s", spirit.name, message)


@dataclass(frozen=True, slots=True)
class Providers:
    """The injectable capabilities of a Spirit; ``None`` fields get the defaults.

    Defaults: :class:`StdLogger` (named after the Spirit), :class:`SystemTimeProvider`,
    :class:`SystemRandomProvider`, a :class:`~vudo.StandardEffectHandler` of the Spirit's own
    (granting only its :class:`~vudo.Permissions`) and :class:`DefaultDebugHandler`.
    :meth:`merged` lets a Spirit's providers override a session's one by one.
    """

    logger: Logger | None = None
    time: TimeProvider | None = None
    random: RandomProvider | None = None
    effects: EffectHandler | None = None
    debug: DebugHandler | None = None

    def merged(self, override: Providers | None) -> Providers:
        """These providers with every provider ``override`` sets replaced."""
        if override is None:
            return self
        return Providers(
            logger=self.logger if override.logger is None else override.logger,
            time=self.time if override.time is None else override.time,
            random=self.random if override.random is None else override.random,
            effects=self.effects if override.effects is None else override.effects,
            debug=self.debug if override.debug is None else override.debug,
        )
