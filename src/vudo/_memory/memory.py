"""Typed, bounds-checked access to a Spirit's linear memory, and the host heap inside it.

Every access is checked against the memory's current size and raises
:class:`~vudo.errors.MemoryAccessError` instead of reading junk. The engine is configured so that
memories never move, which lets reads and writes go through one memoryview of the whole linear
memory (one copy into a Python object, none more, and no foreign call); the size is re-read, and
the view widened, only when an access seems out of bounds (memories only grow).
"""

from __future__ import annotations

import ctypes
import struct
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import wasmtime

from .._runtime.native import native_module
from ..errors import ConfigError, HostHeapExhausted, MemoryAccessError, VudoError
from .allocator import Allocator, BumpAllocator, FreeListAllocator
from .genes import FIELD_FORMATS, GeneLayout, encode_scalar, pack_complete
from .guest_alloc import allocator_strategy
from .views import MemoryViews

__all__ = ["PAGE_SIZE", "WasmMemory"]

_nbus = native_module()
#: The free-list host heap: bookkeeping in C when the extension is built.
_FREELIST: AllocatorFactory = (
    _nbus.FreeListAllocator if _nbus is not None else FreeListAllocator
)

#: Bytes in a WebAssembly page.
PAGE_SIZE = 65536

_ZEROS = bytes(65536)  # source for clearing blocks up to a page without a foreign call
_memmove = ctypes.memmove
_memset = ctypes.memset
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")

AllocatorFactory = Callable[..., Allocator]


def _pack_int(fmt: struct.Struct, value: int, kind: str) -> bytes:
    """Pack ``value`` or raise ``ValueError`` naming the type (never truncate silently)."""
    if not isinstance(value, int):
        raise TypeError(f"{kind} value must be an int, not {type(value).__name__}")
    try:
        return fmt.pack(value)
    except struct.error:
        raise ValueError(f"{value!r} is out of range for {kind}") from None


class WasmMemory(MemoryViews):
    r"""A Spirit's exported (or imported) linear memory with typed accessors and a host heap.

    :meth:`view` and ``view_i32``/``view_f64``/... give zero-copy ``memoryview``\ s of it
    (:mod:`vudo._memory.views` says how long they stay valid).

    ``allocator`` is ``"freelist"`` (default: reuses freed blocks) or ``"bump"``. The host heap
    starts above the memory the module had at instantiation (``heap_floor``), so host data never
    overlaps the Spirit's own data, stack or private heap.
    """

    def __init__(
        self,
        store: wasmtime.Store | None = None,
        memory: wasmtime.Memory | None = None,
        *,
        allocator: str = "freelist",
        name: str | None = None,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._store: Any = store
        self._memory: wasmtime.Memory | None = None
        self._name = name
        self._base = 0
        self._size = 0
        self._view = memoryview(b"")
        self._views: dict[int, weakref.ref[memoryview]] = {}  # handed out by view()
        #: Bytes the module had at instantiation; the host heap lives above this.
        self.heap_floor = 0
        self._max_pages: int | None = 0
        # Growing the memory and the heap's bookkeeping touch the store: under the Spirit's
        # lock, so another thread's access waits for a running call.
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        kinds: dict[str, AllocatorFactory] = {
            "freelist": _FREELIST,
            "bump": BumpAllocator,
        }
        if allocator not in kinds:
            raise ConfigError(f"unknown allocator {allocator!r}; expected 'freelist' or 'bump'")
        self.allocator: Allocator = kinds[allocator](self._grow_for_heap, self._zero, self._move)
        if memory is not None:
            assert store is not None
            self.attach(store, memory)

    def install_allocator(self, factory: AllocatorFactory) -> Allocator:
        """Make ``factory(grow, zero, move)`` the host allocator (before any host block is
        allocated): e.g. one that allocates through the Spirit's own exports."""
        self.allocator = factory(self._grow_for_heap, self._zero, self._move)
        return self.allocator

    @property
    def allocator_strategy(self) -> str:
        """How host blocks are placed (host-abi.md): ``"host-pages"`` (pages the host grows)
        or ``"guest:<allocator>"`` (through an allocator the Spirit exports)."""
        return allocator_strategy(self.allocator)

    def attach(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        """Bind to the Spirit's linear memory once it exists (after instantiation).

        Until then (and for a Spirit without memory) every access is out of bounds and the
        memory cannot grow, so host functions can be bound before the instance exists.
        """
        self._store = store
        self._memory = memory
        self._base = ctypes.addressof(memory.data_ptr(store).contents)
        self._refresh()
        self.heap_floor = self._size
        self._max_pages = memory.type(store).limits.max

    def detach(self) -> None:
        """Forget the linear memory (its store is being freed): every access is then out of
        bounds. Views taken earlier are released (see :meth:`view`)."""
        self._release_views()
        self._memory = None
        self._store = None
        self._base = 0
        self._size = 0
        self._view = memoryview(b"")

    @property
    def attached(self) -> bool:
        """Whether a linear memory is bound (``False`` for a Spirit that has none)."""
        return self._memory is not None

    # size and growth -----------------------------------------------------------------------
    def _refresh(self) -> int:
        """Re-read the size; on growth, widen the view (the base never moves: memories are
        configured not to, so views over the old range stay valid)."""
        if self._memory is None:
            return 0
        size = self._memory.data_len(self._store)
        if size != self._size:
            data = (ctypes.c_ubyte * size).from_address(self._base)
            data.store = self._store  # type: ignore[attr-defined]  # views keep the store alive
            self._view = memoryview(data).cast("B")
            self._size = size
        return size

    @property
    def size(self) -> int:
        """Current size in bytes."""
        return self._refresh()

    @property
    def pages(self) -> int:
        """Current size in pages."""
        return self.size // PAGE_SIZE

    @property
    def max_pages(self) -> int | None:
        """The memory's declared maximum in pages (``None``: only the engine limits it)."""
        return self._max_pages

    @property
    def wasmtime_memory(self) -> wasmtime.Memory:
        """The underlying :class:`wasmtime.Memory`."""
        if self._memory is None:
            raise VudoError(f"Spirit {self._name!r} has no memory")
        return self._memory

    def grow(self, pages: int) -> int:
        """Grow by ``pages``; return the previous size in pages, or -1 if refused.

        Growth beyond the memory's maximum or the Spirit's ``max_memory`` is refused.
        """
        if pages < 0:
            raise ValueError("cannot grow memory by a negative number of pages")
        if self._memory is None:
            return -1
        with self._lock:
            try:
                old = int(self._memory.grow(self._store, pages))
            except wasmtime.WasmtimeError:
                return -1
            self._refresh()
        return old

    def _grow_for_heap(self, min_bytes: int) -> tuple[int, int] | None:
        # Offset 0 is the null pointer (alloc's failure value): a memory that starts empty
        # (``(memory 0)``) must not hand out a block there, so its first region skips 8 bytes.
        reserve = 8 if self.size == 0 else 0
        pages = (min_bytes + reserve + PAGE_SIZE - 1) // PAGE_SIZE
        old = self.grow(pages)
        if old < 0:
            return None
        start = old * PAGE_SIZE
        if start == 0:
            return 8, pages * PAGE_SIZE - 8
        return start, pages * PAGE_SIZE

    # bounds --------------------------------------------------------------------------------
    def _check(self, ptr: int, length: int) -> int:
        """Return the host address of ``[ptr, ptr+length)`` or raise ``MemoryAccessError``."""
        if ptr < 0 or length < 0 or ptr + length > self._size:
            size = self.size  # maybe the Spirit grew its memory since we last looked
            if ptr < 0 or length < 0 or ptr + length > size:
                raise MemoryAccessError(ptr, length, size, spirit=self._name)
        return self._base + ptr

    def check(self, ptr: int, length: int) -> None:
        """Raise :class:`~vudo.errors.MemoryAccessError` unless ``[ptr, ptr+length)`` is inside."""
        self._check(ptr, length)

    def _zero(self, ptr: int, length: int) -> None:
        addr = self._check(ptr, length)
        if length <= len(_ZEROS):
            self._view[ptr:ptr + length] = _ZEROS[:length]
        else:
            _memset(addr, 0, length)

    def _move(self, dst: int, src: int, length: int) -> None:
        _memmove(self._check(dst, length), self._check(src, length), length)

    # bytes ---------------------------------------------------------------------------------
    def read_bytes(self, ptr: int, length: int) -> bytes:
        """Copy ``length`` bytes starting at ``ptr`` (one copy, from a view of the memory)."""
        if ptr < 0 or length < 0 or ptr + length > self._size:
            self._check(ptr, length)
        return self._view[ptr:ptr + length].tobytes()

    def write_bytes(self, ptr: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``ptr`` with one copy; return the number of bytes written."""
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if ptr < 0 or ptr + n > self._size:
            self._check(ptr, n)
        if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
            data = data.cast("B") if data.c_contiguous else data.tobytes()
        self._view[ptr:ptr + n] = data
        return n

    def fill(self, ptr: int, value: int, length: int) -> None:
        """Set ``length`` bytes at ``ptr`` to ``value``."""
        _memset(self._check(ptr, length), value & 0xFF, length)

    # strings -------------------------------------------------------------------------------
    def read_string(self, ptr: int, length: int) -> str:
        """Decode ``length`` bytes of UTF-8 at ``ptr``; invalid sequences become U+FFFD."""
        if ptr < 0 or length < 0 or ptr + length > self._size:
            self._check(ptr, length)
        return str(self._view[ptr:ptr + length], "utf-8", "replace")

    def write_string(self, ptr: int, text: str) -> int:
        """Write ``text`` as UTF-8 (no prefix, no terminator) at ``ptr``; return bytes written."""
        return self.write_bytes(ptr, text.encode("utf-8"))

    def encode_string(self, text: str) -> int:
        """Allocate a length-prefixed string ``[len u32][UTF-8]`` in the host heap; return it.

        Raises :class:`~vudo.HostHeapExhausted` (a ``MemoryError``) when the heap is exhausted.
        """
        data = text.encode("utf-8")
        ptr = self.alloc(4 + len(data), align=8)
        if ptr == 0:
            raise HostHeapExhausted(
                self._name, None, f"allocating a string of {len(data)} bytes"
            )
        self.write_bytes(ptr, _U32.pack(len(data)) + data)
        return ptr

    def decode_string(self, ptr: int) -> str:
        """Read a length-prefixed string at ``ptr`` (``0`` reads as ``""``)."""
        if ptr == 0:
            return ""
        length = self.read_u32(ptr)
        return self.read_string(ptr + 4, length)

    # numbers -------------------------------------------------------------------------------
    def read_i32(self, ptr: int) -> int:
        """Little-endian signed 32-bit integer."""
        return int(_I32.unpack(self.read_bytes(ptr, 4))[0])

    def read_u32(self, ptr: int) -> int:
        """Little-endian unsigned 32-bit integer."""
        return int(_U32.unpack(self.read_bytes(ptr, 4))[0])

    def read_i64(self, ptr: int) -> int:
        """Little-endian signed 64-bit integer."""
        return int(_I64.unpack(self.read_bytes(ptr, 8))[0])

    def read_f32(self, ptr: int) -> float:
        """Little-endian 32-bit float."""
        return float(_F32.unpack(self.read_bytes(ptr, 4))[0])

    def read_f64(self, ptr: int) -> float:
        """Little-endian 64-bit float."""
        return float(_F64.unpack(self.read_bytes(ptr, 8))[0])

    def write_i32(self, ptr: int, value: int) -> None:
        """Write a 32-bit integer (signed or unsigned range accepted)."""
        fmt = _I32 if isinstance(value, int) and value < 0 else _U32
        self.write_bytes(ptr, _pack_int(fmt, value, "i32"))

    def write_u32(self, ptr: int, value: int) -> None:
        """Write an unsigned 32-bit integer."""
        self.write_bytes(ptr, _pack_int(_U32, value, "u32"))

    def write_i64(self, ptr: int, value: int) -> None:
        """Write a signed 64-bit integer."""
        self.write_bytes(ptr, _pack_int(_I64, value, "i64"))

    def write_f32(self, ptr: int, value: float) -> None:
        """Write a 32-bit float."""
        self.write_bytes(ptr, _F32.pack(value))

    def write_f64(self, ptr: int, value: float) -> None:
        """Write a 64-bit float."""
        self.write_bytes(ptr, _F64.pack(value))

    # host heap -----------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 8, *, zero: bool = True) -> int:
        """A zeroed host-heap block of ``size`` bytes; 0 when memory is exhausted.

        ``zero=False`` skips clearing, for callers that overwrite the whole block at once.
        ``align`` must be a power of two (:class:`~vudo.errors.ConfigError`, a ``ValueError``,
        otherwise).
        """
        if isinstance(align, bool) or not isinstance(align, int) or align <= 0 \
                or align & (align - 1):
            raise ConfigError(f"memory.alloc of Spirit {self._name!r}: alignment must be a "
                              f"power of two (got {align!r})")
        with self._lock:
            return self.allocator.alloc(size, align, zero=zero)

    def free(self, ptr: int, size: int | None = None) -> None:
        """Release a host-heap block (``size`` is accepted for ABI symmetry and ignored)."""
        with self._lock:
            self.allocator.free(ptr)

    def realloc(self, ptr: int, old_size: int, new_size: int) -> int:
        """Resize a host-heap block; 0 on failure with the old block still valid."""
        with self._lock:
            return self.allocator.realloc(ptr, old_size, new_size)

    def reset(self) -> None:
        """Release every host-heap block at once."""
        with self._lock:
            self.allocator.reset()

    # genes ---------------------------------------------------------------------------------
    def read_gene(self, ptr: int, layout: GeneLayout) -> dict[str, Any]:
        """Read the gene at ``ptr`` into a dict of field name to Python value."""
        raw = self.read_bytes(ptr, layout.size)
        reader = layout._reader
        values = (
            reader.unpack(raw) if reader is not None  # one struct for the whole gene
            else [struct.unpack_from(FIELD_FORMATS[f.type][1], raw, f.offset)[0]
                  for f in layout.fields]
        )
        out: dict[str, Any] = {}
        for f, value in zip(layout.fields, values, strict=True):
            if f.type == "bool":
                value = value != 0
            elif f.type == "string":
                value = self.decode_string(value)
            out[f.name] = value
        return out

    def write_gene(self, ptr: int, values: Mapping[str, Any], layout: GeneLayout) -> None:
        """Write ``values`` (validated first: nothing is written if one is invalid).

        Fields missing from ``values`` are left unchanged; a ``str`` for a string field is
        allocated as a length-prefixed string in the host heap.
        """
        fast = pack_complete(layout, values)
        if fast is not None:  # every field given, plain and valid: one write per run
            self._check(ptr, layout.size)
            for offset, chunk in fast:
                self._view[ptr + offset:ptr + offset + len(chunk)] = chunk
            return
        unknown = set(values) - {f.name for f in layout.fields}
        if unknown:
            raise KeyError(f"gene {layout.name} has no field(s) {', '.join(sorted(unknown))}")
        self._check(ptr, layout.size)
        packed: list[tuple[int, bytes | str]] = []
        for f in layout.fields:
            if f.name not in values:
                continue
            value = values[f.name]
            if f.type == "string":
                if not isinstance(value, str):
                    raise TypeError(
                        f"gene {layout.name}.{f.name} (string): expected str, "
                        f"got {type(value).__name__}"
                    )
                packed.append((f.offset, value))
            else:
                packed.append((f.offset, encode_scalar(layout, f, value)))
        # Allocate every string before writing anything, so running out of host heap halfway
        # leaves the gene untouched and frees the strings already allocated.
        strings: list[int] = []
        chunks: list[tuple[int, bytes]] = []
        try:
            for offset, data in packed:
                if isinstance(data, str):
                    strings.append(self.encode_string(data))
                    data = _U32.pack(strings[-1])
                chunks.append((offset, data))
        except MemoryError:
            for string_ptr in strings:
                self.free(string_ptr)
            raise
        for offset, data in chunks:
            self.write_bytes(ptr + offset, data)
