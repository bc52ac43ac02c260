"""The pure-Python call path: generated per-signature closures over wasmtime's unchecked C API."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import wasmtime

from . import engine, ffi, safety, valtypes
from .callstate import CallState
from .codegen import INT_LIMITS, caller_template, trampoline_template

__all__ = ["PythonBackend", "argument_errors", "signature_text"]


def signature_text(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    """``(i32, i64) -> f64`` for messages."""
    return f"({', '.join(params)}) -> {', '.join(results) if results else '()'}"


def argument_errors(
    spirit: str, name: str, params: tuple[str, ...], results: tuple[str, ...],
    state: object = None,
) -> tuple[Callable[[tuple[Any, ...]], NoReturn], Callable[[tuple[Any, ...]], NoReturn]]:
    """``(convert, arity)``: raise the ``TypeError`` for bad arguments or a wrong count
    (``state`` identifies the Spirit for reference arguments)."""
    signature = signature_text(params, results)

    def arity(args: tuple[Any, ...]) -> NoReturn:
        raise TypeError(
            f"{spirit}.{name}{signature} takes {len(params)} argument(s), got {len(args)}"
        )

    def convert(args: tuple[Any, ...]) -> NoReturn:
        for i, (t, value) in enumerate(zip(params, args, strict=True)):
            if t in valtypes.REF_TYPES:
                try:
                    valtypes.check_arg(state, t, value)
                except TypeError as exc:
                    raise type(exc)(f"{spirit}.{name}{signature}: argument {i}: {exc}") from None
                continue
            is_int = t in INT_LIMITS
            ok = isinstance(value, int) if is_int else isinstance(value, int | float)
            if not ok:
                raise TypeError(
                    f"{spirit}.{name}{signature}: argument {i} must be "
                    f"{'int' if is_int else 'float'} for {t}, got {type(value).__name__}"
                )
            if is_int and not INT_LIMITS[t][0] <= value <= INT_LIMITS[t][1]:
                lo, hi = INT_LIMITS[t]
                raise TypeError(
                    f"{spirit}.{name}{signature}: argument {i} = {value} does not fit "
                    f"{t} (accepted: {lo} .. {hi})"
                )
        raise TypeError(f"{spirit}.{name}{signature}: cannot convert arguments {args!r}")

    return convert, arity


class PythonBackend:
    """Generated Python closures calling ``wasmtime_func_call_unchecked`` through ctypes."""

    name = "python"

    def caller(
        self,
        state: CallState,
        lock: threading.RLock,
        store: wasmtime.Store,
        name: str,
        func: wasmtime.Func,
        params: tuple[str, ...],
        results: tuple[str, ...],
        keepalive: list[Any],
    ) -> Callable[..., Any]:
        """See :meth:`Backend.caller`."""
        buf = (ffi.ValRaw * max(len(params), len(results), 1))()
        trapbuf = ctypes.c_void_p()
        convert, arity = argument_errors(state.name, name, params, results, state)
        tmpl = caller_template(params, results, state.tracked)
        c = ctypes.c_void_p
        call = tmpl(
            state, name, getattr(lock, "try_acquire", lock.acquire), lock.release, state.stack,
            c(ffi.context_address(store)),
            c(ctypes.addressof(func._func)), buf, c(ctypes.addressof(buf)), trapbuf,
            c(ctypes.addressof(trapbuf)), ctypes.c_size_t(max(len(params), len(results))),
            ffi.call_unchecked, state.failed, convert, arity,
        )
        keepalive.append((func, buf, trapbuf))
        return call  # type: ignore[no-any-return]

    def host_func(
        self,
        state: CallState,
        store: wasmtime.Store,
        name: str,
        params: tuple[str, ...],
        results: tuple[str, ...],
        fn: Callable[..., Any],
        keepalive: list[Any],
    ) -> wasmtime.Func:
        """See :meth:`Backend.host_func`."""
        host_failed = state.host_failed

        def fail(exc: BaseException) -> int:
            try:
                return host_failed(name, exc)
            except BaseException:  # nothing may escape into wasmtime: still trap
                return safety.last_resort_trap()

        callback = ffi.HOST_CALLBACK(trampoline_template(params, results)(fail, fn))
        keepalive.append(callback)
        ty = wasmtime.FuncType(
            [getattr(wasmtime.ValType, t)() for t in params],
            [getattr(wasmtime.ValType, t)() for t in results],
        )
        return ffi.func_new_unchecked(store, ty, callback)

    def builtin(
        self, state: CallState, store: wasmtime.Store, name: str, params: tuple[str, ...],
        results: tuple[str, ...], keepalive: list[Any], *, default_time: bool,
        default_random: bool, bus: Any = None, python: Callable[..., Any] | None = None,
    ) -> tuple[wasmtime.Func, Callable[[int, Any], None]] | None:
        """No built-ins: every host function is a Python one."""
        return None

    def ensure_ticker(self) -> None:
        """See :meth:`Backend.ensure_ticker`."""
        engine.ensure_ticker()
