"""Host heap allocators: where the host puts data inside a Spirit's memory.

The host heap lives only in pages the host obtained with ``memory.grow`` beyond what the module
had at instantiation (see host-abi.md, "Memory owned by the host"), so it never overlaps the
Spirit's data, stack or private heap. Allocators keep their bookkeeping in Python, never in the
Spirit's memory, so a misbehaving Spirit cannot corrupt them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Allocator", "BumpAllocator", "FreeListAllocator", "GrowFn", "ZeroFn"]

#: ``grow(min_bytes) -> (start, length)`` of a fresh region of at least ``min_bytes``, or ``None``
#: when memory is exhausted. A region never starts at 0 (the null pointer, alloc's failure value).
GrowFn = Callable[[int], "tuple[int, int] | None"]
#: ``zero(ptr, length)`` clears bytes in the Spirit's memory.
ZeroFn = Callable[[int, int], None]
#: ``move(dst, src, length)`` copies bytes inside the Spirit's memory.
MoveFn = Callable[[int, int, int], None]

_MAX_ALLOC = 0x7FFF_FFFF
# Freed blocks up to this size wait in per-size quick lists (at most this many per size).
_QUICK_MAX_SIZE = 4096
_QUICK_MAX_BLOCKS = 64


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


@runtime_checkable
class Allocator(Protocol):
    """A host heap allocator (all sizes in bytes, pointers are offsets in the Spirit's memory)."""

    def alloc(self, size: int, align: int = 8, *, zero: bool = True) -> int:
        """A block of ``size`` bytes aligned to ``align`` (zeroed unless ``zero=False``);
        0 when memory is exhausted."""
        ...

    def free(self, ptr: int) -> None:
        """Release a block; unknown pointers are ignored (never corrupts)."""

    def realloc(self, ptr: int, old_size: int, new_size: int) -> int:
        """Resize: keeps ``min(old, new)`` bytes, zeroes the rest; 0 on failure (old kept)."""
        ...

    def reset(self) -> None:
        """Forget every allocation (the pages stay with the host heap)."""

    def size_of(self, ptr: int) -> int | None:
        """The size of the live block at ``ptr``, or ``None``."""
        ...

    @property
    def in_use(self) -> int:
        """Bytes currently allocated."""
        ...


class FreeListAllocator:
    """The default allocator: first-fit free list with coalescing, 8-byte alignment, zeroed blocks.

    Freed blocks are reused, so a Spirit that allocates and frees in a loop keeps a bounded
    memory. ``grow`` is called when no free block fits; it returns a new region at the end of
    memory (adjacent regions coalesce).
    """

    #: The host-allocator strategy (host-abi.md): pages the host grows.
    strategy = "host-pages"

    def __init__(self, grow: GrowFn, zero: ZeroFn, move: MoveFn) -> None:
        self._grow = grow
        self._zero = zero
        self._move = move
        self._free_starts: list[int] = []  # sorted starts of free blocks
        self._free_sizes: dict[int, int] = {}  # start -> size
        self._live: dict[int, tuple[int, int]] = {}  # ptr -> (block start, block size)
        self._regions: list[tuple[int, int]] = []  # every region obtained from grow
        # Recently freed small blocks by size, reused as they are (no search, no coalescing):
        # a Spirit receiving and freeing messages of similar sizes never touches the free list.
        self._quick: dict[int, list[int]] = {}
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Bytes currently allocated (block sizes, including alignment padding)."""
        return self._in_use

    @property
    def heap_bytes(self) -> int:
        """Bytes of Spirit memory owned by the host heap."""
        return sum(size for _, size in self._regions)

    def size_of(self, ptr: int) -> int | None:
        """The usable size of the live block at ``ptr``."""
        entry = self._live.get(ptr)
        return None if entry is None else entry[1] - (ptr - entry[0])

    # free-list primitives -----------------------------------------------------------------
    def _insert_free(self, start: int, size: int) -> None:
        i = bisect.bisect_left(self._free_starts, start)
        # Coalesce with the following block.
        if i < len(self._free_starts) and self._free_starts[i] == start + size:
            nxt = self._free_starts.pop(i)
            size += self._free_sizes.pop(nxt)
        # Coalesce with the preceding block.
        if i > 0:
            prev = self._free_starts[i - 1]
            if prev + self._free_sizes[prev] == start:
                self._free_sizes[prev] += size
                return
        self._free_starts.insert(i, start)
        self._free_sizes[start] = size

    def _take(self, size: int, align: int) -> int:
        for idx, start in enumerate(self._free_starts):
            bsize = self._free_sizes[start]
            ptr = _round_up(start, align)
            end = ptr + size
            if end <= start + bsize:
                del self._free_starts[idx]
                del self._free_sizes[start]
                if ptr > start:
                    self._insert_free(start, ptr - start)
                if end < start + bsize:
                    self._insert_free(end, start + bsize - end)
                self._live[ptr] = (ptr, size)
                self._in_use += size
                return ptr
        return 0

    # public API ---------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 8, *, zero: bool = True) -> int:
        """A zeroed block; grows the host heap when needed; 0 when memory is exhausted.

        ``zero=False`` skips clearing, for callers that overwrite the whole block at once.
        """
        if size < 0 or size > _MAX_ALLOC or align < 1 or align & (align - 1):
            return 0
        size = (size + 7) & ~7 if size else 8  # _round_up(max(size, 1), 8), inlined: hot path
        quick = self._quick.get(size) if align <= 8 else None
        if quick:
            ptr = quick.pop()
            self._live[ptr] = (ptr, size)
            self._in_use += size
        else:
            ptr = self._take(size, align)
            if ptr == 0 and self._quick:
                self._flush_quick()
                ptr = self._take(size, align)
            if ptr == 0:
                region = self._grow(size + align)
                if region is None:
                    return 0
                self._regions.append(region)
                self._insert_free(*region)
                ptr = self._take(size, align)
                if ptr == 0:
                    return 0
        if zero:
            self._zero(ptr, size)
        return ptr

    def _flush_quick(self) -> None:
        """Give the quick lists back to the free list, where they coalesce."""
        for size, blocks in self._quick.items():
            for start in blocks:
                self._insert_free(start, size)
        self._quick.clear()

    def free(self, ptr: int) -> None:
        """Return a block for reuse; unknown or double-freed pointers are ignored."""
        entry = self._live.pop(ptr, None)
        if entry is None:
            return
        start, size = entry
        self._in_use -= size
        if start == ptr and size <= _QUICK_MAX_SIZE:
            blocks = self._quick.setdefault(size, [])
            if len(blocks) < _QUICK_MAX_BLOCKS:
                blocks.append(start)
                return
        self._insert_free(start, size)

    def realloc(self, ptr: int, old_size: int, new_size: int) -> int:
        """Resize in place when possible, else move; on failure return 0 and keep the block."""
        if ptr == 0:
            return self.alloc(new_size)
        entry = self._live.get(ptr)
        if entry is None or new_size < 0 or new_size > _MAX_ALLOC:
            return 0
        start, size = entry
        keep = min(max(old_size, 0), new_size, size)
        want = _round_up(max(new_size, 1), 8)
        if want <= size:
            if keep < size:
                self._zero(ptr + keep, size - keep)
            return ptr
        # Grow in place into an adjacent free block (which may wait in a quick list).
        nxt = start + size
        if nxt not in self._free_sizes and self._quick:
            self._flush_quick()
        nsize = self._free_sizes.get(nxt)
        if nsize is not None and size + nsize >= want:
            i = bisect.bisect_left(self._free_starts, nxt)
            del self._free_starts[i]
            del self._free_sizes[nxt]
            if size + nsize > want:
                self._insert_free(start + want, size + nsize - want)
            self._live[ptr] = (start, want)
            self._in_use += want - size
            self._zero(ptr + keep, want - keep)
            return ptr
        new_ptr = self.alloc(new_size)
        if new_ptr == 0:
            return 0
        if keep:
            self._move(new_ptr, ptr, keep)
        self.free(ptr)
        return new_ptr

    def reset(self) -> None:
        """Free every block at once."""
        self._quick.clear()
        self._live.clear()
        self._free_starts.clear()
        self._free_sizes.clear()
        self._in_use = 0
        for region in self._regions:
            self._insert_free(*region)


class BumpAllocator:
    """The seed's allocator: a pointer that only moves forward; ``free`` is a no-op.

    Fastest for short-lived Spirits; ``reset()`` reclaims everything at once.
    """

    #: The host-allocator strategy (host-abi.md): pages the host grows.
    strategy = "host-pages"

    def __init__(self, grow: GrowFn, zero: ZeroFn, move: MoveFn) -> None:
        self._grow = grow
        self._zero = zero
        self._move = move
        self._regions: list[tuple[int, int]] = []
        self._region = 0
        self._next = 0
        self._end = 0
        self._live: dict[int, int] = {}
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Bytes handed out since the last reset."""
        return self._in_use

    @property
    def heap_bytes(self) -> int:
        """Bytes of Spirit memory owned by the host heap."""
        return sum(size for _, size in self._regions)

    def size_of(self, ptr: int) -> int | None:
        """The size of the block at ``ptr`` (blocks stay live until ``reset``)."""
        return self._live.get(ptr)

    def alloc(self, size: int, align: int = 8, *, zero: bool = True) -> int:
        """Bump the pointer; move to (or grow) the next region when this one is full."""
        if size < 0 or size > _MAX_ALLOC or align < 1 or align & (align - 1):
            return 0
        size = _round_up(max(size, 1), 8)
        while True:
            ptr = _round_up(self._next, align)
            if self._end and ptr + size <= self._end:
                break
            self._region += 1
            if self._region <= len(self._regions):
                start, length = self._regions[self._region - 1]
            else:
                region = self._grow(size + align)
                if region is None:
                    self._region -= 1
                    return 0
                self._regions.append(region)
                start, length = region
            self._next, self._end = start, start + length
        self._next = ptr + size
        self._live[ptr] = size
        self._in_use += size
        if zero:
            self._zero(ptr, size)
        return ptr

    def free(self, ptr: int) -> None:
        """No-op: a bump allocator reclaims only on :meth:`reset`."""

    def realloc(self, ptr: int, old_size: int, new_size: int) -> int:
        """Allocate anew and copy ``min(old, new)`` bytes; 0 on failure (old kept)."""
        if ptr == 0:
            return self.alloc(new_size)
        size = self._live.get(ptr)
        if size is None:
            return 0
        new_ptr = self.alloc(new_size)
        if new_ptr and (keep := min(max(old_size, 0), new_size, size)):
            self._move(new_ptr, ptr, keep)
        return new_ptr

    def reset(self) -> None:
        """Reclaim everything: the next allocation starts at the first region again."""
        self._region = 0
        self._next = self._end = 0
        self._live.clear()
        self._in_use = 0
