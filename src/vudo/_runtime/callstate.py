"""The state one Spirit's call path, host trampolines and epoch callback share, and the turning
of a failed call into one typed exception.

A :class:`CallState` knows nothing of the Spirit class: it holds the name, the limits, the
current call stack, the pending host-function exception, the interruption reason, the deadline,
and hooks for termination and the memory size. Both call-path implementations (the generated
Python one and the native one) drive it the same way.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import wasmtime

from .._config import Limits
from ..errors import (
    CallCancelled,
    FuelExhausted,
    HostFunctionError,
    LimitExceeded,
    MemoryAccessError,
    MemoryLimitExceeded,
    SpiritError,
    SpiritPanic,
    SpiritTerminated,
    SpiritTimeout,
    SpiritTrap,
    StackExhausted,
    VudoError,
)
from . import ffi, safety, signals

__all__ = ["CallState", "trap_cause"]

_PAGE_SIZE = 65536


def trap_cause(message: str) -> str:
    """The cause of a wasmtime trap message, without the backtrace it embeds."""
    _, sep, cause = message.partition("Caused by:")
    text = cause if sep else message
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _recursion_rooted(exc: BaseException) -> bool:
    """Whether ``exc`` is the recursion limit (ctypes reports it as an ``ArgumentError``)."""
    if isinstance(exc, RecursionError):
        return True
    return isinstance(exc, ctypes.ArgumentError) and "RecursionError" in _safe_str(exc)


def _safe_str(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except BaseException:
        return f"<{type(exc).__name__} with an unprintable message>"


class CallState:
    """What the call path of one Spirit keeps between and during calls (see module doc)."""

    def __init__(
        self,
        name: str,
        limits: Limits,
        *,
        tracked: bool,
        on_terminate: Callable[[str], None],
        memory_size: Callable[[], int],
    ) -> None:
        self.name = name
        self.limits = limits
        #: Whether call paths keep :attr:`stack` (Spirits with limits or ``debug``).
        self.tracked = tracked
        #: Export names currently executing, outermost first (tracked paths only).
        self.stack: list[str] = []
        #: The per-call pre-check, or ``None`` when there is nothing to check.
        self.guard: Callable[[str], None] | None = None
        self.pending: BaseException | None = None
        self.interrupt: str | None = None
        self.deadline: float | None = None
        self.cancelled = False
        #: Set by :meth:`abort_call`: the running call stops, the Spirit stays usable.
        self.aborting = False
        self.terminated = False
        self.termination_cause: str | None = None
        self._on_terminate = on_terminate
        self._memory_size = memory_size
        self._fuel = limits.fuel is not None
        self._timed = limits.timeout is not None
        self.update_guard()

    # --------------------------------------------------------------------------- guard
    def update_guard(self) -> None:
        """Install the per-call pre-check: only Spirits with limits or a fault pay for one."""
        if self.terminated:
            self.guard = self._refuse
        elif self._fuel or self._timed:
            self.guard = self._arm
        else:
            self.guard = None

    def _refuse(self, function: str) -> NoReturn:
        raise SpiritTerminated(self.name, function, self.termination_cause or "terminated")

    def _arm(self, function: str) -> None:
        safety.ensure_headroom(self.name, function)  # the callbacks of this call must run
        if self.stack:
            return  # a nested (re-entrant) call runs on the outer call's budget
        self.arm_store()

    #: The Spirit's lock (set by ``spiritlock.new_spirit_lock``): the generated call path takes
    #: it through a non-blocking acquire first, and through ``lock.acquire()`` when contended.
    lock: Any = None
    #: Set by the Spirit: arms the store's fuel; ``None`` until the store exists.
    set_fuel: Callable[[int], None] | None = None
    #: Set by the Spirit: moves the store's epoch deadline (a deferred signal handler may call
    #: back into the Spirit from the epoch callback, and must not hit the same deadline).
    set_epoch_deadline: Callable[[int], None] | None = None

    def arm_store(self) -> None:
        """Give the next outermost call (or a start function) its fuel and deadline."""
        lim = self.limits
        if lim.fuel is not None and self.set_fuel is not None:
            self.set_fuel(lim.fuel)
        if lim.timeout is not None:
            self.deadline = time.monotonic() + lim.timeout

    @property
    def current_function(self) -> str:
        """The export executing (innermost), or ``"<host>"``."""
        return self.stack[-1] if self.stack else "<host>"

    # --------------------------------------------------------------------------- lifetime
    def terminate(self, cause: str) -> bool:
        """Mark the Spirit terminated; ``False`` if it already was."""
        if self.terminated:
            return False
        self.terminated = True
        self.termination_cause = cause
        self.update_guard()
        self._on_terminate(cause)
        return True

    def cancel(self) -> None:
        """Stop a running call at the next epoch tick (from any thread)."""
        self.cancelled = True  # a Spirit paused in vudo_sleep sees it within its 2 ms slice

    def abort_call(self) -> None:
        """Stop the running call at the next epoch tick (or its sleep within 2 ms), without
        ending the Spirit; the call raises ``CallCancelled``. Clear with :meth:`call_aborted`."""
        self.aborting = True

    def call_aborted(self) -> None:
        """The aborted call has returned: later calls run normally."""
        self.aborting = False

    def check_waiting(self) -> None:
        """Raise what ends this Spirit's running call, if anything does, while the call waits
        for another Spirit's lock (the epoch callback cannot fire outside wasm)."""
        if self.cancelled:
            raise SpiritTerminated(self.name, self.current_function,
                                   self.termination_cause or "dismissed")
        if self.aborting:
            raise CallCancelled(self.name, self.current_function)
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            raise SpiritTimeout(self.name, self.current_function, "timeout",
                                f"{self.limits.timeout}s")

    # --------------------------------------------------------------------------- sleep
    def sleep(self, ms: int, provider_sleep: Callable[[int], None] | None) -> None:
        """Pause the calling Spirit for ``ms`` (negative: 0), within its deadline.

        ``provider_sleep`` is a custom time provider's sleep (a fake clock); ``None`` waits on
        the real clock, woken early by :meth:`cancel`.
        """
        ms = ms if ms > 0 else 0
        cut = False
        deadline = self.deadline
        if deadline is not None:
            left = max(int((deadline - time.monotonic()) * 1000), 0)
            if ms > left:
                ms, cut = left, True
        if provider_sleep is None:
            signals.interruptible_wait(self, ms / 1000)  # also ends on a deferred signal
        else:
            provider_sleep(ms)
        if self.cancelled:
            raise SpiritTerminated(self.name, "vudo_sleep", self.termination_cause or "")
        if self.aborting:
            raise CallCancelled(self.name, self.current_function)
        if cut:
            raise SpiritTimeout(self.name, self.current_function, "timeout",
                                f"{self.limits.timeout}s")

    # --------------------------------------------------------------------------- epoch
    def on_epoch(self, _ctx: Any, _env: Any, delta: Any, kind: Any) -> int:
        """Epoch tick while this Spirit runs: carry on, or interrupt (timeout, dismissal)."""
        try:
            if signals.has_pending():  # a handler deferred from inside a call runs here
                if self.set_epoch_deadline is not None:
                    self.set_epoch_deadline(1)
                signals.run_deferred()
            if self.cancelled:
                self.interrupt = "cancelled"
            elif self.aborting:
                self.interrupt = "aborted"
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.interrupt = "timeout"
            else:
                delta[0] = 1
                kind[0] = 0
                return 0
        except KeyboardInterrupt:  # Ctrl-C while wasm spins: stop the call, re-raise after
            self.interrupt = "keyboard"
        except BaseException as exc:  # never into wasmtime: a handler's SystemExit stops the call
            self.pending = exc
            self.interrupt = "signal"
        return ffi.error_new(f"interrupted: {self.interrupt}")

    # --------------------------------------------------------------------------- failures
    def host_failed(self, hname: str, exc: BaseException) -> int:
        """A host function raised: remember why, and return the trap that stops the Spirit."""
        wrapped: BaseException
        try:
            if isinstance(exc, MemoryAccessError) and exc.function is None:
                exc.function = hname
                exc.spirit = exc.spirit or self.name
            elif _recursion_rooted(exc) and not isinstance(exc, VudoError):
                # The host function ran out of Python stack (a call started near the
                # recursion limit, or its own runaway recursion): say so, by type.
                wrapped = StackExhausted(
                    f"host function {hname} of Spirit {self.name!r} reached the Python "
                    f"recursion limit ({sys.getrecursionlimit()})")
                wrapped.__cause__ = exc
                exc = wrapped
            elif not isinstance(exc, VudoError | KeyboardInterrupt | SystemExit):
                wrapped = HostFunctionError(
                    self.name, self.current_function,
                    f"host function {hname} raised {type(exc).__name__}: {_safe_str(exc)}",
                )
                wrapped.__cause__ = exc
                exc = wrapped
            if self.pending is None or not isinstance(exc, KeyboardInterrupt | SystemExit):
                self.pending = exc
            return ffi.trap_new(f"host function {hname} failed: {_safe_str(exc)}")
        except BaseException as again:  # e.g. a signal landing here: still trap
            if self.pending is None:
                self.pending = again
            return ffi.trap_new(f"host function {hname} failed")

    def failed(self, function: str, err: int | None, trapbuf: ctypes.c_void_p) -> NoReturn:
        """Turn a failed call into the right exception (always raises)."""
        pending, self.pending = self.pending, None
        interrupt, self.interrupt = self.interrupt, None
        if not self.stack:
            self.deadline = None
        message, code, frames = "", None, []
        try:
            if trapbuf.value:
                address, trapbuf.value = trapbuf.value, None
                trap = ffi.take_trap(address)
                message = trap_cause(trap.message)
                code = trap.trap_code
                frames = [
                    f"{f.func_name or f'func[{f.func_index}]'} @ 0x{f.module_offset:x}"
                    for f in trap.frames
                ]
            if err:
                message = ffi.error_message(err)
        except (RecursionError, ctypes.ArgumentError) as exc:
            # At the recursion limit ctypes cannot even decode the trap: what the call
            # recorded (a host function's exception) is still the cause.
            if not _recursion_rooted(exc):
                raise
            if pending is None:
                raise StackExhausted(
                    f"call {function!r} on Spirit {self.name!r} failed at the Python "
                    f"recursion limit ({sys.getrecursionlimit()}), too deep to decode why"
                ) from exc
        raise self.classify(function, pending, interrupt, message, code, frames)

    def classify(
        self, function: str, pending: BaseException | None, interrupt: str | None,
        message: str, code: wasmtime.TrapCode | None, frames: list[str],
    ) -> BaseException:
        """The exception a failed call raises, from what was recorded while it ran."""
        exc: BaseException
        if pending is not None:
            exc = pending
            if isinstance(exc, SpiritError) and exc.function == "<host>":
                exc.function = function  # lean call paths keep no stack: name the export now
            if isinstance(exc, SpiritPanic | SpiritTerminated):
                cause = f"panic: {exc.message}" if isinstance(exc, SpiritPanic) else exc.cause
                self.terminate(cause)
            if isinstance(exc, VudoError):
                exc.add_note(f"while calling {function!r} on Spirit {self.name!r}")
            return exc
        if interrupt == "keyboard":
            return KeyboardInterrupt(f"interrupted Spirit {self.name!r} in {function}")
        if interrupt == "timeout":
            exc = SpiritTimeout(self.name, function, "timeout", f"{self.limits.timeout}s")
        elif interrupt == "aborted":
            exc = CallCancelled(self.name, function)
        elif interrupt == "cancelled":
            exc = SpiritTerminated(self.name, function, self.termination_cause or "dismissed")
        elif code == wasmtime.TrapCode.OUT_OF_FUEL:
            exc = FuelExhausted(self.name, function, "fuel", self.limits.fuel)
        elif self._at_memory_limit():
            exc = MemoryLimitExceeded(self.name, function, "max_memory", self.limits.max_memory)
            exc.__cause__ = SpiritTrap(self.name, function, message, backtrace=frames)
        else:
            exc = SpiritTrap(
                self.name, function, message,
                trap_code=code.name if code is not None else None, backtrace=frames,
            )
        if isinstance(exc, LimitExceeded) and self.limits.terminate_on_limit:
            self.terminate(str(exc))
        return exc

    def _at_memory_limit(self) -> bool:
        cap = self.limits.max_memory
        return cap is not None and self._memory_size() + _PAGE_SIZE > cap


# A signal landing in these runs while wasm is on the stack: it is deferred (see .signals).
signals.register(CallState.on_epoch)
signals.register(CallState.sleep)
