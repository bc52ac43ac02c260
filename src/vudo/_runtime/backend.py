"""The call-path interface: how a Spirit's exports are called and its imports are served.

Two implementations fit it: the generated pure-Python one (:mod:`._pypath`, always available)
and a native one (an optional C extension). Nothing above this module knows which one runs;
:func:`get_backend` picks it once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import wasmtime

from .callstate import CallState
from .native import NativeBus

__all__ = ["Backend", "HostCallable", "get_backend"]

HostCallable = Callable[..., Any]



class Backend(Protocol):
    """A call-path implementation."""

    #: ``"python"`` or ``"native"``.
    name: str

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
        """The call path of export ``name``: takes Python values, returns its results."""
        ...

    def host_func(
        self,
        state: CallState,
        store: wasmtime.Store,
        name: str,
        params: tuple[str, ...],
        results: tuple[str, ...],
        fn: HostCallable,
        keepalive: list[Any],
    ) -> wasmtime.Func:
        """A host function ``fn`` as a ``Func`` of ``store``; its exceptions trap the Spirit
        and reach the caller through ``state``."""
        ...

    def builtin(
        self, state: CallState, store: wasmtime.Store, name: str, params: tuple[str, ...],
        results: tuple[str, ...], keepalive: list[Any], *, default_time: bool,
        default_random: bool, bus: NativeBus | None = None,
        python: HostCallable | None = None,
    ) -> tuple[wasmtime.Func, Callable[[int, Any], None]] | None:
        """A core host function implemented by the backend itself, or ``None``.

        Returns ``(func, bind)``; ``bind(memory_address, logger)`` is called once the instance
        exists. Only asked for the core Loa's own functions, without tracing. The messaging and
        host-heap functions are asked with ``bus`` (only when the Spirit's broker and heap are
        the C ones) and ``python``, the Python host function, which the backend calls for the
        rare cases (faults, caps, a full heap) so they behave exactly as in Python.
        """
        ...

    def ensure_ticker(self) -> None:
        """Start the process-wide epoch ticker (idempotent)."""
        ...


_backends: dict[str, Backend] = {}


def get_backend() -> Backend:
    """The call-path implementation for a Spirit loaded now: the native core when it is built
    and active (not ``VUDO_NATIVE=0``, not inside :func:`.cnative.fallback`), else Python."""
    from . import cnative

    kind = "native" if cnative.active() else "python"
    backend = _backends.get(kind)
    if backend is None:
        if kind == "native":
            from ._cpath import NativeBackend

            backend = NativeBackend()
        else:
            from ._pypath import PythonBackend

            backend = PythonBackend()
        _backends[kind] = backend
    return backend
