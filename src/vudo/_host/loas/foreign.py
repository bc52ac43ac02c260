"""Imports of Spirits from other toolchains that no Loa provides: AssemblyScript's
``env.abort``/``env.seed`` and WASI preview 1 (host-abi.md, "Spirits from other toolchains").

:func:`toolchain_import` tells the linker how to satisfy one: a vudo host function (these, and
the WASI functions of :mod:`vudo._host.loas.wasi`), :data:`ENGINE_WASI` (wasmtime's own WASI
function, taken from the Spirit's WASI linker), or ``None`` (unresolved).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ..._memory import GuestAllocator, WasmMemory
from ...errors import MemoryAccessError, SpiritPanic, SpiritTrap
from ..context import HostContext
from ..loa import HostFunction
from ..wasi_context import WASI_FUNCTIONS, WASI_MODULE
from .wasi import wasi_host_functions

__all__ = ["ENGINE_WASI", "as_abort", "as_seed", "toolchain_import"]

_MASK = 0xFFFFFFFF
#: Longest AssemblyScript string :func:`as_abort` decodes (bytes), so a garbage length cannot
#: make the host copy the whole memory.
_MAX_AS_STRING = 64 * 1024
#: What :func:`toolchain_import` returns for a WASI function wasmtime implements.
ENGINE_WASI: Literal["engine-wasi"] = "engine-wasi"


def _read_as_string(mem: WasmMemory, ptr: int) -> str:
    """An AssemblyScript ``String`` (UTF-16LE; its byte length is the u32 at ``ptr - 4``)."""
    if ptr == 0:
        return "<null>"
    length = mem.read_u32(ptr - 4)
    return mem.read_bytes(ptr, min(length, _MAX_AS_STRING) & ~1).decode("utf-16-le", "replace")


def as_abort(ctx: HostContext) -> Callable[[int, int, int, int], None]:
    """AssemblyScript's ``env.abort(msg, file, line, col)``: a panic, like ``vudo_panic``,
    with the message and its location. Inside the host's call to the guest allocator it is
    that allocator's failure instead (the host reports it; the Spirit stays alive)."""
    mem, debugger = ctx.memory, ctx.debugger

    def host(msg: int, file: int, line: int, col: int) -> None:
        cause: MemoryAccessError | None = None
        try:
            text = _read_as_string(mem, msg & _MASK)
            where = _read_as_string(mem, file & _MASK)
        except MemoryAccessError as exc:
            cause = MemoryAccessError(
                exc.ptr, exc.length, exc.memory_size, spirit=ctx.name, function="abort"
            )
            text, where = f"<unreadable abort message: {cause}>", "<unknown>"
        message = f"{text} (at {where}:{line & _MASK}:{col & _MASK})"
        allocator = mem.allocator
        if isinstance(allocator, GuestAllocator) and allocator.busy:
            raise SpiritTrap(ctx.name, ctx.current_function, f"abort: {message}")
        debugger.panic(ctx, message)
        raise SpiritPanic(ctx.name, ctx.current_function, message) from cause

    return host


def as_seed(ctx: HostContext) -> Callable[[], float]:
    """AssemblyScript's ``env.seed()`` for ``Math.random``: from the Spirit's random provider."""
    rand = ctx.random

    def host() -> float:
        return float(int.from_bytes(rand.random_bytes(6), "little") | 1)

    return host


_ENV = {
    "abort": HostFunction("abort", as_abort, ("i32", "i32", "i32", "i32"), ()),
    "seed": HostFunction("seed", as_seed, (), ("f64",)),
}
_WASI_OWN = wasi_host_functions()


def toolchain_import(module: str, name: str) -> HostFunction | Literal["engine-wasi"] | None:
    """How to satisfy an import that no Loa provides: a vudo host function, :data:`ENGINE_WASI`
    (take it from the Spirit's WASI linker), or ``None`` (unresolved)."""
    if module == "env":
        return _ENV.get(name)
    if module == WASI_MODULE:
        own = _WASI_OWN.get(name)
        if own is not None:
            return own
        return ENGINE_WASI if name in WASI_FUNCTIONS else None
    return None
