"""The native call path: the C extension ``vudo._cnative`` (:mod:`.cnative`) behind the
Backend interface.

Any signature the C paths do not handle (reference types, v128) falls back to the Python one.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, cast

import wasmtime

from . import cnative as _native_core
from . import ffi
from ._pypath import PythonBackend, argument_errors
from .callstate import CallState
from .native import NativeBus

__all__ = ["NativeBackend"]


class NativeBackend:
    """Calls and host calls through the C extension (see docs/native-core.md)."""

    name = "native"

    def __init__(self) -> None:
        self._python = PythonBackend()

    def caller(
        self, state: CallState, lock: threading.RLock, store: wasmtime.Store, name: str,
        func: wasmtime.Func, params: tuple[str, ...], results: tuple[str, ...],
        keepalive: list[Any],
    ) -> Callable[..., Any]:
        """See :meth:`Backend.caller`."""
        make = _native_core.caller_template(params, results, state.tracked, guard="guard")
        if make is None:
            return self._python.caller(state, lock, store, name, func, params, results, keepalive)
        buf = (ffi.ValRaw * max(len(params), len(results), 1))()
        trapbuf = ctypes.c_void_p()
        convert, arity = argument_errors(state.name, name, params, results, state)
        c = ctypes.c_void_p
        call = make(
            state, name, lock.acquire, lock.release, state.stack, c(ffi.context_address(store)),
            c(ctypes.addressof(func._func)), buf, c(ctypes.addressof(buf)), trapbuf,
            c(ctypes.addressof(trapbuf)), ctypes.c_size_t(max(len(params), len(results))),
            None, state.failed, convert, arity,
        )
        keepalive.append((func, buf, trapbuf))
        return cast(Callable[..., Any], call)

    def host_func(
        self, state: CallState, store: wasmtime.Store, name: str, params: tuple[str, ...],
        results: tuple[str, ...], fn: Callable[..., Any], keepalive: list[Any],
    ) -> wasmtime.Func:
        """See :meth:`Backend.host_func`."""
        make = _native_core.trampoline_template(params, results)
        if make is None:
            return self._python.host_func(state, store, name, params, results, fn, keepalive)
        host_failed = state.host_failed

        def fail(exc: BaseException) -> int:
            return host_failed(name, exc)

        cb, _bind = make(fail, fn)
        keepalive.append(cb)
        ty = wasmtime.FuncType(
            [getattr(wasmtime.ValType, t)() for t in params],
            [getattr(wasmtime.ValType, t)() for t in results],
        )
        return _native_core.func_new(store, ty, cb)

    def builtin(
        self, state: CallState, store: wasmtime.Store, name: str, params: tuple[str, ...],
        results: tuple[str, ...], keepalive: list[Any], *, default_time: bool,
        default_random: bool, bus: NativeBus | None = None,
        python: Callable[..., Any] | None = None,
    ) -> tuple[wasmtime.Func, Callable[[int, Any], None]] | None:
        """See :meth:`Backend.builtin`: core host functions implemented in C."""
        host_failed = state.host_failed

        def fail(exc: BaseException) -> int:
            return host_failed(name, exc)

        if name in _native_core.BUS_FUNCTIONS:
            if bus is None or python is None:
                return None
            if bus.handle is None:
                bus.handle = _native_core.bus_host(
                    bus.bus, bus.heap, bus.grow, bus.spirit,
                    max_message_size=bus.max_message_size, max_alloc=bus.max_alloc,
                )
            exhausted = bus.exhausted(name) if name in ("vudo_alloc", "vudo_realloc") else None
            made_bus = _native_core.bus_builtin_func(
                store, name, params, results, fail, spirit=state.name, host=bus.handle,
                python=python, exhausted=exhausted,
            )
            if made_bus is None:
                return None
            keepalive.append(made_bus[1])
            return made_bus[0], made_bus[2]
        made = _native_core.builtin_func(
            store, name, params, results, fail, spirit=state.name,
            default_time=default_time, default_random=default_random,
            max_text=state.limits.max_string_length,
        )
        if made is None:
            return None
        func, host, bind = made
        keepalive.append(host)
        return func, bind

    def ensure_ticker(self) -> None:
        """See :meth:`Backend.ensure_ticker`: the native ticker thread."""
        if not _native_core.start_ticker():
            self._python.ensure_ticker()
