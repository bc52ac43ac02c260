"""Spirits from other toolchains: the points where loading a :class:`Spirit` wires in the
guest's allocator, WASI, the strategy-3 warning and a reactor's ``_initialize``
(host-abi.md, "Memory owned by the host" and "Spirits from other toolchains").

- :func:`install_host_allocator` once the memory wrapper exists, before host functions are
  bound (they bind ``memory.allocator``'s methods);
- :func:`setup_wasi` once the store exists, before linking (WASI imports come from it);
- :func:`finish_load` at the end of loading;
- :func:`run_command` runs a WASI command as a whole program.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import wasmtime

from .._config import Permissions, SpiritConfig
from .._host import Logger
from .._host.wasi_context import WasiContext, configure_wasi, imports_wasi
from .._memory import Allocator, WasmMemory
from .._memory.guest_alloc import (
    Lock,
    MoveFn,
    ZeroFn,
    choose_guest_allocator,
    export_signatures,
    memory_warning,
    recognised_allocator,
)
from .._runtime.wasmcode import module_grows_memory
from ..errors import LoadError, VudoError, WasiExit

__all__ = [
    "finish_load",
    "install_host_allocator",
    "run_command",
    "setup_wasi",
    "spirit_memory_warning",
]

_log = logging.getLogger("vudo.spirit")


class Spirit(Protocol):
    """What these hooks use of a :class:`~vudo.Spirit` (its public surface only)."""

    name: str
    module: wasmtime.Module
    source: str
    logger: Logger

    @property
    def config(self) -> SpiritConfig: ...
    @property
    def permissions(self) -> Permissions | None: ...
    @property
    def has_memory(self) -> bool: ...
    @property
    def functions(self) -> list[str]: ...
    @property
    def context(self) -> _HasWasi: ...
    def function(self, name: str) -> Callable[..., Any]: ...
    def has_function(self, name: str) -> bool: ...
    def call(self, name: str, *args: Any) -> Any: ...
    def close(self) -> None: ...


class _HasWasi(Protocol):
    @property
    def wasi(self) -> WasiContext | None: ...


class _Exports(Mapping[str, Callable[..., Any]]):
    """The Spirit's export call paths, looked up when called (they exist only after linking)."""

    def __init__(self, spirit: Spirit) -> None:
        self._spirit = spirit

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self._spirit.function(name)
        except (VudoError, AttributeError):
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._spirit.functions)

    def __len__(self) -> int:
        return len(self._spirit.functions)


def install_host_allocator(spirit: Spirit, memory: WasmMemory, lock: Lock) -> str:
    """Make the Spirit's exported allocator, if any, its host allocator; return the strategy.

    Every host operation through it holds ``lock`` (the Spirit's, re-entrant).
    """
    signatures = export_signatures(spirit.module)
    if recognised_allocator(signatures) is not None:
        name, exports = spirit.name, _Exports(spirit)

        def build(_grow: object, zero: ZeroFn, move: MoveFn) -> Allocator:
            guest = choose_guest_allocator(name, signatures, exports, zero, move, lock=lock)
            assert guest is not None
            return guest

        memory.install_allocator(build)
    return memory.allocator_strategy


def setup_wasi(spirit: Spirit, store: wasmtime.Store) -> WasiContext | None:
    """A deny-by-default WASI context on ``store`` for a Spirit that imports WASI, from its
    permissions and ``config.wasi``; ``None`` for the others."""
    if not imports_wasi(spirit.module):
        return None
    return configure_wasi(
        store, name=spirit.name, stdout=spirit.logger.print, stderr=spirit.logger.error,
        permissions=spirit.permissions, options=spirit.config.wasi,
    )


def spirit_memory_warning(spirit: Spirit) -> str | None:
    """host-abi.md's strategy-3 warning for a loaded Spirit (``None``: it does not apply, or
    the Spirit's bytes were never seen)."""
    if not spirit.has_memory:
        return None
    return memory_warning(
        spirit.name, module_grows_memory(spirit.module), export_signatures(spirit.module)
    )


def finish_load(spirit: Spirit) -> None:
    """The end of loading: warn about an unsafe memory, then run a reactor's ``_initialize``
    once under the Spirit's limits (a failure is a :class:`~vudo.LoadError`)."""
    warning = spirit_memory_warning(spirit)
    if warning is not None:
        _log.warning("%s", warning)
    if spirit.has_function("_initialize"):
        try:
            spirit.call("_initialize")
        except VudoError as exc:
            spirit.close()
            raise LoadError(
                spirit.source, f"Spirit {spirit.name!r}: _initialize failed: {exc}"
            ) from exc


def run_command(spirit: Spirit, *, check: bool = True) -> int:
    """Run a WASI command's ``_start`` as a whole program; return its exit status.

    Returning from ``main`` or ``proc_exit(0)`` is status 0. ``proc_exit(n)`` with n != 0
    raises :class:`~vudo.errors.WasiExit` (``exit_code == n``) when ``check`` is true, and is
    returned otherwise. The host process never exits.
    """
    if not spirit.has_function("_start"):
        raise VudoError(f"Spirit {spirit.name!r} is not a WASI command: it exports no _start")
    try:
        spirit.call("_start")
        code = 0
    except WasiExit as exc:
        code = exc.exit_code
        if code and check:
            raise WasiExit(spirit.name, "_start", code) from None
    finally:
        wasi = spirit.context.wasi
        if wasi is not None:
            wasi.flush()
    return code
