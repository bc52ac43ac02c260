"""Host allocators that allocate through an allocator the Spirit exports (host-abi.md, "Memory
owned by the host", strategy 1).

A Spirit built by a toolchain with its own heap (C's ``malloc``, AssemblyScript's runtime, the
component model's ``cabi_realloc``...) owns all of its memory: host blocks are safe only when
that heap hands them out. Each class here implements the :class:`Allocator` protocol
(:mod:`vudo._memory.allocator`) by calling the guest's exports, given as a mapping from export
name to a callable (the Spirit's call paths, which take its lock and apply its limits; they
may be entered from inside a host function). Given the Spirit's (re-entrant) lock, each host
operation holds it throughout, so an operation made of several guest calls (AssemblyScript's
``__new`` then ``__pin``: a collection between them would free the new block) is atomic
against the Spirit's other threads.

Bookkeeping stays in Python: the host frees only what it allocated (an unknown pointer is
ignored, never handed to the guest's ``free``), blocks are zeroed and 8-byte aligned whatever the
guest returns, a 0 result means out of memory, and a trap inside the guest allocator becomes a
:class:`GuestAllocatorError` naming the Spirit and the allocator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import wasmtime

from ..errors import GuestAllocatorError, LimitExceeded, SpiritTerminated, VudoError

__all__ = [
    "HOST_PAGES",
    "AssemblyScriptAllocator",
    "CabiReallocAllocator",
    "GuestAllocator",
    "GuestAllocatorError",
    "MallocAllocator",
    "VudoHostAllocator",
    "allocator_strategy",
    "choose_guest_allocator",
    "export_signatures",
    "memory_warning",
    "recognised_allocator",
]

#: The strategy name of the grown-pages host heap (strategy 2).
HOST_PAGES = "host-pages"

Signature = tuple[tuple[str, ...], tuple[str, ...]]
ZeroFn = Callable[[int, int], None]
#: The Spirit's re-entrant call lock (``threading.RLock`` or the native core's).
Lock = contextlib.AbstractContextManager[Any]
MoveFn = Callable[[int, int, int], None]

_MASK = 0xFFFFFFFF
_MAX_ALLOC = 0x7FFF_FFFF
_I32 = "i32"
#: AssemblyScript's fixed class id of ``ArrayBuffer`` (0 Object, 1 ArrayBuffer, 2 String).
_AS_ARRAYBUFFER_ID = 1


def _round8(size: int) -> int:
    return (max(size, 1) + 7) & ~7


class GuestAllocator:
    """Base of the guest-backed allocators; subclasses provide ``_raw_alloc``/``_raw_free``."""

    #: The strategy name reported by ``Spirit.memory.allocator`` and ``vudo inspect``.
    strategy = "guest"

    def __init__(
        self, spirit: str, exports: Mapping[str, Callable[..., Any]], zero: ZeroFn, move: MoveFn,
        *, lock: Lock | None = None,
    ) -> None:
        self._spirit = spirit
        self._lock: contextlib.AbstractContextManager[Any] = (
            lock if lock is not None else contextlib.nullcontext()
        )
        self._exports = exports  # looked up at first use: the Spirit fills it after linking
        self._fns: dict[str, Callable[..., Any]] = {}
        self._zero = zero
        self._move = move
        self._live: dict[int, tuple[int, int]] = {}  # ptr -> (raw pointer from the guest, size)
        self._in_use = 0
        #: How deep the host is inside a call to the guest allocator (host functions that the
        #: guest calls meanwhile, e.g. AssemblyScript's ``abort``, look at it).
        self.busy = 0

    @property
    def in_use(self) -> int:
        """Bytes the host currently holds (sizes rounded up to 8)."""
        return self._in_use

    def size_of(self, ptr: int) -> int | None:
        """The usable size of the host block at ``ptr``, or ``None``."""
        entry = self._live.get(ptr)
        return None if entry is None else entry[1]

    def _lookup(self, export: str) -> Callable[..., Any]:
        try:
            fn = self._fns[export] = self._exports[export]
        except KeyError:
            raise GuestAllocatorError(
                self._spirit, self.strategy, export, "the export is not callable yet"
            ) from None
        return fn

    def _call(self, export: str, *args: int) -> Any:
        fn = self._fns.get(export) or self._lookup(export)
        self.busy += 1
        try:
            return fn(*args)
        except (LimitExceeded, SpiritTerminated):
            raise  # the Spirit's limits apply to its allocator as to any call
        except VudoError as exc:
            call = f"{export}({', '.join(map(str, args))})"
            raise GuestAllocatorError(self._spirit, self.strategy, call, str(exc)) from exc
        finally:
            self.busy -= 1

    # what subclasses provide ----------------------------------------------------------------
    def _raw_alloc(self, size: int, align: int) -> int:
        raise NotImplementedError

    def _raw_free(self, raw: int, size: int, align: int) -> None:
        raise NotImplementedError

    # Allocator protocol ---------------------------------------------------------------------
    def alloc(self, size: int, align: int = 8, *, zero: bool = True) -> int:
        """A block from the guest's heap, zeroed, aligned to ``max(align, 8)``; 0 when the
        guest has no memory left."""
        if size < 0 or size > _MAX_ALLOC or align < 1 or align & (align - 1):
            return 0
        with self._lock:
            return self._alloc(size, align, zero)

    def _alloc(self, size: int, align: int, zero: bool) -> int:
        if align < 8:
            align = 8
        rounded = (size + 7) & ~7 if size else 8
        raw = self._raw_alloc(rounded, align) & _MASK
        if raw == 0:
            return 0
        ptr = raw
        if raw % align:
            # The guest aligned less than asked: take a larger block and align inside it.
            self._raw_free(raw, rounded, align)
            padded = rounded + align
            raw = self._raw_alloc(padded, align) & _MASK
            if raw == 0:
                return 0
            ptr = (raw + align - 1) & ~(align - 1)
            rounded = padded - (ptr - raw)
        if ptr in self._live:  # the guest handed out a block the host still holds
            raise GuestAllocatorError(
                self._spirit, self.strategy, f"allocating {size} bytes",
                f"returned 0x{ptr:x}, a block the host has not released",
            )
        self._live[ptr] = (raw, rounded)
        self._in_use += rounded
        if zero:
            self._zero(ptr, rounded)
        return ptr

    def free(self, ptr: int) -> None:
        """Give a host block back to the guest; pointers the host did not allocate are ignored."""
        with self._lock:
            entry = self._live.pop(ptr, None)
            if entry is None:
                return
            raw, size = entry
            self._in_use -= size
            self._raw_free(raw, size, 8)

    def realloc(self, ptr: int, old_size: int, new_size: int) -> int:
        """Allocate anew, copy ``min(old, new)`` bytes, free the old block; 0 keeps the old."""
        if ptr == 0:
            return self.alloc(new_size)
        with self._lock:
            return self._realloc(ptr, old_size, new_size)

    def _realloc(self, ptr: int, old_size: int, new_size: int) -> int:
        entry = self._live.get(ptr)
        if entry is None or new_size < 0 or new_size > _MAX_ALLOC:
            return 0
        keep = min(max(old_size, 0), new_size, entry[1])
        if _round8(new_size) <= entry[1]:
            if keep < entry[1]:
                self._zero(ptr + keep, entry[1] - keep)
            return ptr
        new_ptr = self.alloc(new_size, zero=False)
        if new_ptr == 0:
            return 0
        if keep:
            self._move(new_ptr, ptr, keep)
        size = self._live[new_ptr][1]
        self._zero(new_ptr + keep, size - keep)
        self.free(ptr)
        return new_ptr

    def reset(self) -> None:
        """Give every host block back to the guest."""
        with self._lock:
            for ptr in list(self._live):
                self.free(ptr)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.strategy} of {self._spirit!r}: {self._in_use} B>"


class VudoHostAllocator(GuestAllocator):
    """``vudo_host_alloc(size, align)`` / ``vudo_host_free(ptr, size, align)``."""

    strategy = "guest:vudo_host_alloc"

    def _raw_alloc(self, size: int, align: int) -> int:
        return int(self._call("vudo_host_alloc", size, align))

    def _raw_free(self, raw: int, size: int, align: int) -> None:
        self._call("vudo_host_free", raw, size, align)


class MallocAllocator(GuestAllocator):
    """C's ``malloc(size)`` / ``free(ptr)`` (``-Wl,--export=malloc,--export=free``)."""

    strategy = "guest:malloc"

    def _raw_alloc(self, size: int, align: int) -> int:
        return int(self._call("malloc", size))

    def _raw_free(self, raw: int, size: int, align: int) -> None:
        self._call("free", raw)


class AssemblyScriptAllocator(GuestAllocator):
    """AssemblyScript's runtime (``--exportRuntime``): one pinned ``ArrayBuffer`` per block.

    ``__pin`` keeps the block alive across the garbage collector until ``__unpin``; the
    collector reclaims it later. TLSF aborts instead of returning 0 when it is out of memory:
    that abort reaches the host as :class:`GuestAllocatorError`, not as a panic.
    """

    strategy = "guest:assemblyscript"

    def _raw_alloc(self, size: int, align: int) -> int:
        ptr = int(self._call("__new", size, _AS_ARRAYBUFFER_ID)) & _MASK
        if ptr:
            self._call("__pin", ptr)
        return ptr

    def _raw_free(self, raw: int, size: int, align: int) -> None:
        self._call("__unpin", raw)


class CabiReallocAllocator(GuestAllocator):
    """The canonical ABI's ``cabi_realloc(0, 0, align, size)``; released blocks go back through
    ``free`` when the Spirit exports one, and are otherwise left to the guest (a bounded leak,
    counted in ``leaked``)."""

    strategy = "guest:cabi_realloc"

    def __init__(
        self, spirit: str, exports: Mapping[str, Callable[..., Any]], zero: ZeroFn, move: MoveFn,
        *, has_free: bool, lock: Lock | None = None,
    ) -> None:
        super().__init__(spirit, exports, zero, move, lock=lock)
        self._has_free = has_free
        #: Bytes released by the host that the guest could not take back (no ``free`` export).
        self.leaked = 0

    def _raw_alloc(self, size: int, align: int) -> int:
        return int(self._call("cabi_realloc", 0, 0, align, size))

    def _raw_free(self, raw: int, size: int, align: int) -> None:
        if self._has_free:
            self._call("free", raw)
        else:
            self.leaked += size


_I = (_I32,)
#: strategy -> the exports it needs with their signatures, in host-abi.md's order.
_RECOGNISED: tuple[tuple[str, dict[str, Signature]], ...] = (
    (VudoHostAllocator.strategy,
     {"vudo_host_alloc": ((_I32, _I32), _I), "vudo_host_free": ((_I32, _I32, _I32), ())}),
    (MallocAllocator.strategy, {"malloc": (_I, _I), "free": (_I, ())}),
    (AssemblyScriptAllocator.strategy,
     {"__new": ((_I32, _I32), _I), "__pin": (_I, _I), "__unpin": (_I, ())}),
    (CabiReallocAllocator.strategy, {"cabi_realloc": ((_I32, _I32, _I32, _I32), _I)}),
)


def recognised_allocator(signatures: Mapping[str, Signature]) -> str | None:
    """The strategy of the first allocator the exports (name -> (params, results)) offer."""
    for strategy, needed in _RECOGNISED:
        if all(signatures.get(name) == sig for name, sig in needed.items()):
            return strategy
    return None


def choose_guest_allocator(
    spirit: str,
    signatures: Mapping[str, Signature],
    exports: Mapping[str, Callable[..., Any]],
    zero: ZeroFn,
    move: MoveFn,
    *,
    lock: Lock | None = None,
) -> GuestAllocator | None:
    """The guest-backed host allocator for a Spirit, or ``None`` (use the grown-pages heap).

    ``signatures`` are the exported functions' wasm signatures; ``exports`` maps export names
    to the callables that run them under the Spirit's lock and limits (it may be filled later:
    nothing is called here); ``lock`` is the Spirit's re-entrant lock, held by every host
    operation.
    """
    strategy = recognised_allocator(signatures)
    if strategy is None:
        return None
    if strategy == CabiReallocAllocator.strategy:
        has_free = signatures.get("free") == (_I, ())
        return CabiReallocAllocator(spirit, exports, zero, move, has_free=has_free, lock=lock)
    kind = {
        VudoHostAllocator.strategy: VudoHostAllocator,
        MallocAllocator.strategy: MallocAllocator,
        AssemblyScriptAllocator.strategy: AssemblyScriptAllocator,
    }[strategy]
    return kind(spirit, exports, zero, move, lock=lock)


def export_signatures(module: wasmtime.Module) -> dict[str, Signature]:
    """The wasm ``(params, results)`` of every exported function of ``module``."""
    out: dict[str, Signature] = {}
    for exp in module.exports:
        ty = exp.type
        if isinstance(ty, wasmtime.FuncType):
            out[exp.name] = (tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results))
    return out


def allocator_strategy(allocator: object) -> str:
    """The strategy name of a host allocator: ``"guest:malloc"``..., or ``"host-pages"``."""
    return str(getattr(allocator, "strategy", HOST_PAGES))


def memory_warning(
    name: str, grows: bool | None, signatures: Mapping[str, Signature]
) -> str | None:
    """host-abi.md strategy 3: the warning, with the fix, for a Spirit that grows its memory
    itself and exports no allocator; ``None`` when it does not apply (or cannot be told)."""
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
