"""Spirits from other toolchains: the glue between :class:`~vudo.spirit.Spirit` and
:mod:`vudo._guest_alloc`, :mod:`vudo._wasm_scan` and :mod:`vudo._wasi`.

Each function here is one hook the Spirit calls at a fixed point of loading:

- :func:`toolchain_import` while linking, for imports no Loa provides (AssemblyScript's
  ``env.abort``/``env.seed``, WASI);
- :func:`install_host_allocator` once the memory exists, before host functions are bound;
- :func:`finish_load` at the end of loading: the strategy-3 warning and a reactor's
  ``_initialize``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import wasmtime

from ._guest_alloc import HOST_PAGES, GuestAllocator, Signature, choose_guest_allocator
from ._wasi import WASI_FUNCTIONS, WASI_MODULE, wasi_host_functions
from ._wasm_scan import module_grows_memory
from .errors import LoadError, MemoryAccessError, SpiritPanic, SpiritTrap, VudoError
from .loa import HostFunction, LoaContext

__all__ = [
    "ENGINE_WASI",
    "allocator_strategy",
    "as_abort",
    "export_signatures",
    "finish_load",
    "install_host_allocator",
    "memory_warning",
    "toolchain_import",
]

_log = logging.getLogger("vudo.spirit")
_MASK = 0xFFFFFFFF
#: Longest AssemblyScript string :func:`as_abort` decodes (bytes), so a garbage length cannot
#: make the host copy the whole memory.
_MAX_AS_STRING = 64 * 1024
#: Marker returned by :func:`toolchain_import` for a WASI function wasmtime implements.
ENGINE_WASI = "engine-wasi"


def _read_as_string(spirit: Any, ptr: int) -> str:
    """An AssemblyScript ``String`` (UTF-16LE; its byte length is the u32 at ``ptr - 4``)."""
    if ptr == 0:
        return "<null>"
    mem = spirit.memory_or_null
    length: int = mem.read_u32(ptr - 4)
    data: bytes = mem.read_bytes(ptr, min(length, _MAX_AS_STRING) & ~1)
    return data.decode("utf-16-le", "replace")


def as_abort(ctx: LoaContext) -> Callable[[int, int, int, int], None]:
    """AssemblyScript's ``env.abort(msg, file, line, col)``: a panic, like ``vudo_panic``,
    with the message and its location. Inside the host's call to the guest allocator it is
    that allocator's failure instead (the host reports it; the Spirit stays alive)."""
    spirit = ctx.spirit

    def host(msg: int, file: int, line: int, col: int) -> None:
        cause: MemoryAccessError | None = None
        try:
            text = _read_as_string(spirit, msg & _MASK)
            where = _read_as_string(spirit, file & _MASK)
        except MemoryAccessError as exc:
            cause = MemoryAccessError(
                exc.ptr, exc.length, exc.memory_size, spirit=spirit.name, function="abort"
            )
            text, where = f"<unreadable abort message: {cause}>", "<unknown>"
        message = f"{text} (at {where}:{line & _MASK}:{col & _MASK})"
        allocator = getattr(spirit.memory_or_null, "allocator", None)
        if isinstance(allocator, GuestAllocator) and allocator.busy:
            raise SpiritTrap(spirit.name, spirit.current_function, f"abort: {message}")
        spirit.debug_handler.panic(spirit, message)
        raise SpiritPanic(spirit.name, spirit.current_function, message) from cause

    return host


def _as_seed(ctx: LoaContext) -> Callable[[], float]:
    """AssemblyScript's ``env.seed()`` for ``Math.random``: from the Spirit's random provider."""
    rand = ctx.random

    def host() -> float:
        return float(int.from_bytes(rand.random_bytes(6), "little") | 1)

    return host


_ENV = {
    "abort": HostFunction("abort", as_abort, ("i32", "i32", "i32", "i32"), ()),
    "seed": HostFunction("seed", _as_seed, (), ("f64",)),
}
_WASI_OWN = wasi_host_functions()


def toolchain_import(module: str, name: str) -> HostFunction | str | None:
    """How to satisfy an import that no Loa provides: a vudo host function, :data:`ENGINE_WASI`
    (take it from the WASI linker), or ``None`` (unresolved)."""
    if module == "env":
        return _ENV.get(name)
    if module == WASI_MODULE:
        own = _WASI_OWN.get(name)
        if own is not None:
            return own
        return ENGINE_WASI if name in WASI_FUNCTIONS else None
    return None


def export_signatures(module: wasmtime.Module) -> dict[str, Signature]:
    """The wasm ``(params, results)`` of every exported function of ``module``."""
    out: dict[str, Signature] = {}
    for exp in module.exports:
        ty = exp.type
        if isinstance(ty, wasmtime.FuncType):
            out[exp.name] = (tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results))
    return out


class _Exports(Mapping[str, Callable[..., Any]]):
    """The Spirit's export call paths, looked up when called (they exist only after linking)."""

    def __init__(self, spirit: Any) -> None:
        self._spirit = spirit

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self._spirit.function(name)  # type: ignore[no-any-return]
        except (VudoError, AttributeError):
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._spirit.functions)

    def __len__(self) -> int:
        return len(self._spirit.functions)


def install_host_allocator(spirit: Any, memory: Any) -> str:
    """Make the Spirit's exported allocator, if any, its host allocator; return the strategy.

    Call once the memory wrapper exists and before host functions are bound (they bind
    ``memory.allocator``'s methods).
    """
    guest = choose_guest_allocator(
        spirit.name, export_signatures(spirit.module), _Exports(spirit), memory._zero,
        memory._move, lock=spirit._lock,
    )
    if guest is not None:
        memory.allocator = guest
    return allocator_strategy(memory.allocator)


def allocator_strategy(allocator: Any) -> str:
    """The strategy name of a host allocator: ``"guest:malloc"``..., or ``"host-pages"``."""
    return str(getattr(allocator, "strategy", HOST_PAGES))


def memory_warning(
    name: str, grows: bool | None, signatures: Mapping[str, Signature]
) -> str | None:
    """host-abi.md strategy 3: the warning, with the fix, for a Spirit that grows its memory
    itself and exports no allocator; ``None`` when it does not apply (or cannot be told)."""
    from ._guest_alloc import recognised_allocator

    if not grows or recognised_allocator(signatures) is not None:
        return None
    return (
        f"Spirit {name!r} grows its memory itself (its code contains memory.grow) and exports "
        "no allocator the host can use, so host data (strings, messages, vudo_alloc blocks) "
        "goes in pages the host grows; an allocator that claims all memory up to the current "
        "size when it starts (AssemblyScript's TLSF and stub runtimes, wasi-libc before 2023) "
        "will overwrite it. Fix: export the allocator: C/C++ with clang and wasi-libc: "
        "-Wl,--export=malloc,--export=free; AssemblyScript: --exportRuntime; or export "
        "vudo_host_alloc/vudo_host_free, or cabi_realloc (wit-bindgen)."
    )


def spirit_memory_warning(spirit: Any) -> str | None:
    """:func:`memory_warning` for a loaded Spirit (``None`` if its bytes were never seen)."""
    if not spirit.has_memory:
        return None
    return memory_warning(
        spirit.name, module_grows_memory(spirit.module), export_signatures(spirit.module)
    )


def finish_load(spirit: Any) -> None:
    """The end of loading: warn about an unsafe memory, then run a reactor's ``_initialize``
    once under the Spirit's limits (a failure is a :class:`~vudo.errors.LoadError`)."""
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
