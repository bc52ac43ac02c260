"""Every exception vudo raises; all share the base class :class:`VudoError`.

Errors name the Spirit, the function (export or host function) and the cause, and carry the
engine's own message where one exists.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "CallCancelled",
    "ConfigError",
    "DeadlockError",
    "FuelExhausted",
    "GuestAllocatorError",
    "HostFunctionError",
    "HostHeapExhausted",
    "LimitExceeded",
    "LinkError",
    "LoadError",
    "MemoryAccessError",
    "MemoryLimitExceeded",
    "NameTaken",
    "SeanceError",
    "SpiritAssertionError",
    "SpiritError",
    "SpiritPanic",
    "SpiritTerminated",
    "SpiritTimeout",
    "SpiritTrap",
    "UnknownExportError",
    "UnresolvedImport",
    "VudoError",
    "WasiExit",
    "WasiPermissionError",
]

from dataclasses import dataclass


class VudoError(Exception):
    """Base class of every error raised by vudo."""


class ConfigError(VudoError, ValueError):
    """An invalid configuration value (a limit, a permission, an option), refused when built."""


class NameTaken(VudoError, ValueError):
    """A name is already in use: a Spirit's inbox, a Loa, or a distributed name claim."""


class SpiritError(VudoError):
    """An error raised by or about one Spirit; ``spirit`` and ``function`` name where.

    ``function`` is the export being called, or a host function's name, or ``None`` when the
    error happened outside any call. The message is derived from the fields, so the call path can
    name the export afterwards (``exc.function = ...``) without losing any other field.
    """

    spirit: str | None
    function: str | None

    def _describe(self) -> str:
        return super().__str__()

    def __str__(self) -> str:
        return self._describe()


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


class InvalidLimitsError(ConfigError):
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


class MemoryAccessError(SpiritError, IndexError):
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
        super().__init__(ptr, length, memory_size)

    def _describe(self) -> str:
        where = f" in {self.function}" if self.function else ""
        if self.spirit:
            where += f" of Spirit {self.spirit!r}"
        return (f"out-of-bounds memory access{where}: ptr={self.ptr} len={self.length} "
                f"memory size={self.memory_size}")


class SpiritTrap(SpiritError):
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
        super().__init__(message)

    def _describe(self) -> str:
        return f"Spirit {self.spirit!r} trapped in {self.function}: {self.message}"


class HostFunctionError(SpiritTrap):
    """A host function raised; the Spirit trapped and the original exception is ``__cause__``."""


class SpiritAssertionError(SpiritError, AssertionError):
    """``vudo_assert`` failed: the current call fails with the Spirit's message."""

    def __init__(self, spirit: str, function: str, message: str) -> None:
        self.spirit = spirit
        self.function = function
        self.message = message
        super().__init__(message)

    def _describe(self) -> str:
        return f"assertion failed in Spirit {self.spirit!r} ({self.function}): {self.message}"


class SpiritPanic(SpiritError):
    """The Spirit panicked (``vudo_panic``) or was terminated; it is now unusable."""

    def __init__(self, spirit: str, function: str, message: str) -> None:
        self.spirit = spirit
        self.function = function
        self.message = message
        super().__init__(message)

    def _describe(self) -> str:
        return f"Spirit {self.spirit!r} panicked in {self.function}: {self.message}"


class CallCancelled(SpiritError):
    """The running call was cancelled (``Spirit.cancel_call()``, a cancelled awaiting task);
    the Spirit stays usable."""

    def __init__(self, spirit: str, function: str) -> None:
        self.spirit = spirit
        self.function = function
        super().__init__(spirit, function)

    def _describe(self) -> str:
        return f"call {self.function} of Spirit {self.spirit!r} was cancelled"


class DeadlockError(SpiritError):
    """A call was refused because waiting for a Spirit would deadlock: that Spirit is busy on a
    thread that waits, directly or through other threads, for a Spirit this thread's call holds.

    ``spirit``/``function`` name the call this thread is in (whose host function made the
    refused call), ``waiting_for`` the Spirit it wanted, ``cycle`` the Spirits of the cycle.
    """

    def __init__(self, spirit: str, function: str, waiting_for: str, cycle: str) -> None:
        self.spirit = spirit
        self.function = function
        self.waiting_for = waiting_for
        self.cycle = cycle
        super().__init__(spirit, function, waiting_for, cycle)

    def _describe(self) -> str:
        return (f"call into Spirit {self.waiting_for!r} from {self.function} of Spirit "
                f"{self.spirit!r} would deadlock: its thread waits for a Spirit this call "
                f"holds (cycle {self.cycle})")


class SpiritTerminated(SpiritError):
    """A call on a Spirit that was terminated earlier; ``cause`` says why it ended."""

    def __init__(self, spirit: str, function: str, cause: str) -> None:
        self.spirit = spirit
        self.function = function
        self.cause = cause
        super().__init__(cause)

    def _describe(self) -> str:
        return f"Spirit {self.spirit!r} is terminated ({self.cause}); cannot call {self.function}"


class LimitExceeded(SpiritError):
    """A resource limit was exceeded during a call."""

    def __init__(self, spirit: str, function: str, limit: str, value: object) -> None:
        self.spirit = spirit
        self.function = function
        self.limit = limit
        self.value = value
        super().__init__(limit, value)

    def _describe(self) -> str:
        return (f"Spirit {self.spirit!r} exceeded its {self.limit} limit ({self.value}) "
                f"in {self.function}")


class SpiritTimeout(LimitExceeded):
    """The call ran longer than the Spirit's ``timeout``."""


class FuelExhausted(LimitExceeded):
    """The call used up the Spirit's ``fuel`` budget."""


class MemoryLimitExceeded(LimitExceeded):
    """The Spirit tried to grow its memory beyond ``max_memory``."""


class HostHeapExhausted(SpiritError, MemoryError):
    """The Spirit's host allocator could not supply a block the host needed."""

    def __init__(self, spirit: str | None, function: str | None, message: str) -> None:
        self.spirit = spirit
        self.function = function
        self.message = message
        super().__init__(message)

    def _describe(self) -> str:
        where = f" of Spirit {self.spirit!r}" if self.spirit else ""
        return f"host heap{where} exhausted: {self.message}"


class SeanceError(VudoError, LookupError):
    """A session-level misuse: duplicate or unknown Spirit name, session already dismissed."""


class BrokerUnavailable(VudoError):
    """The message broker's server cannot be reached (or lacks a feature it needs)."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"message broker at {url} is unavailable: {cause}")


class GuestAllocatorError(VudoError, MemoryError):
    """The Spirit's own allocator failed while serving the host (it trapped or aborted).

    A ``MemoryError`` too, so every host path that cleans up after an exhausted heap (partly
    written genes, message delivery) cleans up after this as well.
    """

    def __init__(self, spirit: str, strategy: str, operation: str, cause: str) -> None:
        self.spirit = spirit
        self.strategy = strategy
        self.operation = operation
        self.cause = cause
        super().__init__(
            f"Spirit {spirit!r}: {operation} through its allocator ({strategy}) failed: {cause}"
        )


class WasiExit(VudoError):
    """A WASI program called ``proc_exit(n)``: the call ended with exit status ``exit_code``.

    :func:`vudo.run_command` treats ``exit_code == 0`` as a normal end.
    """

    def __init__(self, spirit: str, function: str, exit_code: int) -> None:
        self.spirit = spirit
        self.function = function
        self.exit_code = exit_code
        super().__init__(f"Spirit {spirit!r} exited with status {exit_code} (in {function})")


class WasiPermissionError(VudoError, PermissionError):
    """A WASI grant that vudo refuses (e.g. a directory outside ``fs_root``)."""
