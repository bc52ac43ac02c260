"""Every exception vudo raises; all share the base class :class:`VudoError`.

Errors name the Spirit, the function (export or host function) and the cause, and carry the
engine's own message where one exists.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "FuelExhausted",
    "HostFunctionError",
    "LimitExceeded",
    "LinkError",
    "LoadError",
    "MemoryAccessError",
    "MemoryLimitExceeded",
    "SeanceError",
    "SpiritAssertionError",
    "SpiritPanic",
    "SpiritTerminated",
    "SpiritTimeout",
    "SpiritTrap",
    "UnknownExportError",
    "UnresolvedImport",
    "VudoError",
]

from dataclasses import dataclass


class VudoError(Exception):
    """Base class of every error raised by vudo."""


class LoadError(VudoError):
    """A Spirit could not be loaded: missing file, not WebAssembly, or an invalid module."""

    def __init__(self, source: str, cause: str) -> None:
        self.source = source
        self.cause = cause
        super().__init__(f"cannot load Spirit from {source}: {cause}")


@dataclass(frozen=True, slots=True)
class UnresolvedImport:
    """One import the host cannot satisfy, with what it declared and what the host offers."""

    module: str
    name: str
    declared: str
    offered: str | None

    def __str__(self) -> str:
        offer = (
            f"host offers {self.offered}" if self.offered else "host provides nothing by that name"
        )
        return f"{self.module}.{self.name}: declared {self.declared}, {offer}"


class LinkError(LoadError):
    """The Spirit imports things the host cannot satisfy; ``unresolved`` lists every one."""

    def __init__(self, source: str, unresolved: list[UnresolvedImport]) -> None:
        self.unresolved = unresolved
        lines = "\n  ".join(str(u) for u in unresolved)
        super().__init__(source, f"{len(unresolved)} unresolved import(s):\n  {lines}")


class ForeignReferenceError(VudoError, TypeError):
    """A wasm reference was passed to a Spirit other than the one it belongs to."""


class InvalidLimitsError(VudoError, ValueError):
    """A :class:`~vudo.limits.Limits` value is not a usable limit (nan, a string, 1.5 fuel...)."""


class StackExhausted(VudoError, RecursionError):
    """A Spirit call was refused: the Python stack is too close to the recursion limit."""


class UnknownExportError(VudoError, AttributeError):
    """A function that the Spirit does not export was called."""

    def __init__(self, spirit: str, name: str, available: list[str]) -> None:
        listing = ", ".join(available) if available else "(none)"
        super().__init__(f"Spirit {spirit!r} has no exported function {name!r}; exports: {listing}")
        # After super(): AttributeError.__init__ resets ``name``.
        self.spirit = spirit
        self.name = name
        self.available = available


class MemoryAccessError(VudoError, IndexError):
    """An access of ``length`` bytes at ``ptr`` falls outside a memory of ``memory_size`` bytes."""

    def __init__(
        self,
        ptr: int,
        length: int,
        memory_size: int,
        *,
        spirit: str | None = None,
        function: str | None = None,
    ) -> None:
        self.ptr = ptr
        self.length = length
        self.memory_size = memory_size
        self.spirit = spirit
        self.function = function
        where = ""
        if function:
            where += f" in {function}"
        if spirit:
            where += f" of Spirit {spirit!r}"
        super().__init__(
            f"out-of-bounds memory access{where}: ptr={ptr} len={length} memory size={memory_size}"
        )


class SpiritTrap(VudoError):
    """The Spirit trapped (``unreachable``, division by zero, ...) during ``function``."""

    def __init__(
        self,
        spirit: str,
        function: str,
        message: str,
        *,
        trap_code: str | None = None,
        backtrace: list[str] | None = None,
    ) -> None:
        self.spirit = spirit
        self.function = function
        self.message = message
        self.trap_code = trap_code
        self.backtrace = backtrace or []
        super().__init__(f"Spirit {spirit!r} trapped in {function}: {message}")


class HostFunctionError(SpiritTrap):
    """A host function raised; the Spirit trapped and the original exception is ``__cause__``."""


class SpiritAssertionError(VudoError, AssertionError):
    """``vudo_assert`` failed: the current call fails with the Spirit's message."""

    def __init__(self, spirit: str, function: str, message: str) -> None:
        self.spirit = spirit
        self.function = function
        self.message = message
        super().__init__(f"assertion failed in Spirit {spirit!r} ({function}): {message}")


class SpiritPanic(VudoError):
    """The Spirit panicked (``vudo_panic``) or was terminated; it is now unusable."""

    def __init__(self, spirit: str, function: str, message: str) -> None:
        self.spirit = spirit
        self.function = function
        self.message = message
        super().__init__(f"Spirit {spirit!r} panicked in {function}: {message}")


class SpiritTerminated(VudoError):
    """A call on a Spirit that was terminated earlier; ``cause`` says why it ended."""

    def __init__(self, spirit: str, function: str, cause: str) -> None:
        self.spirit = spirit
        self.function = function
        self.cause = cause
        super().__init__(f"Spirit {spirit!r} is terminated ({cause}); cannot call {function}")


class LimitExceeded(VudoError):
    """A resource limit was exceeded during a call."""

    def __init__(self, spirit: str, function: str, limit: str, value: object) -> None:
        self.spirit = spirit
        self.function = function
        self.limit = limit
        self.value = value
        super().__init__(f"Spirit {spirit!r} exceeded its {limit} limit ({value}) in {function}")


class SpiritTimeout(LimitExceeded):
    """The call ran longer than the Spirit's ``timeout``."""


class FuelExhausted(LimitExceeded):
    """The call used up the Spirit's ``fuel`` budget."""


class MemoryLimitExceeded(LimitExceeded):
    """The Spirit tried to grow its memory beyond ``max_memory``."""


class SeanceError(VudoError, LookupError):
    """A session-level misuse: duplicate or unknown Spirit name, session already dismissed."""


class BrokerUnavailable(VudoError):
    """The message broker's server cannot be reached (or lacks a feature it needs)."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"message broker at {url} is unavailable: {cause}")
