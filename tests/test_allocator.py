"""The host heap allocators, driven directly against a fake linear memory.

The fake memory fills every page it hands out with garbage (so "zeroed blocks" is really
checked), refuses any zero/move outside the host heap (so the allocator never touches the
Spirit's own bytes), and can let the "Spirit" grow pages of its own between host regions.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from vudo._memory import BumpAllocator, FreeListAllocator

PAGE = 1024
FLOOR = 4 * PAGE  # bytes the "module" had at instantiation
GARBAGE = 0xAA
SPIRIT_BYTE = 0x5C


class FakeMemory:
    """A bytearray standing in for a Spirit's linear memory."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.data = bytearray([SPIRIT_BYTE]) * FLOOR
        self.max_bytes = max_bytes
        self.host_regions: list[tuple[int, int]] = []
        self.spirit_pages: list[tuple[int, int]] = [(0, FLOOR)]
        self.grow_calls = 0

    def _extend(self, length: int, fill: int) -> int | None:
        if self.max_bytes is not None and len(self.data) + length > self.max_bytes:
            return None
        start = len(self.data)
        self.data += bytes([fill]) * length
        return start

    def grow(self, min_bytes: int) -> tuple[int, int] | None:
        self.grow_calls += 1
        length = -(-min_bytes // PAGE) * PAGE
        start = self._extend(length, GARBAGE)
        if start is None:
            return None
        self.host_regions.append((start, length))
        return start, length

    def spirit_grow(self) -> None:
        """The Spirit grows the memory itself: that page is the Spirit's, not the host's."""
        start = self._extend(PAGE, SPIRIT_BYTE)
        if start is not None:
            self.spirit_pages.append((start, PAGE))

    def in_host_heap(self, ptr: int, length: int) -> bool:
        """Whether ``[ptr, ptr+length)`` is covered by (contiguous) host regions."""
        end = ptr + max(length, 1)
        pos = ptr
        for start, size in sorted(self.host_regions):
            if start <= pos < start + size:
                pos = start + size
                if pos >= end:
                    return True
        return False

    def zero(self, ptr: int, length: int) -> None:
        assert self.in_host_heap(ptr, length), f"zero({ptr}, {length}) outside the host heap"
        self.data[ptr : ptr + length] = bytes(length)

    def move(self, dst: int, src: int, length: int) -> None:
        assert self.in_host_heap(dst, length), f"move to {dst} outside the host heap"
        assert self.in_host_heap(src, length), f"move from {src} outside the host heap"
        self.data[dst : dst + length] = self.data[src : src + length]

    def read(self, ptr: int, length: int) -> bytes:
        return bytes(self.data[ptr : ptr + length])

    def write(self, ptr: int, data: bytes) -> None:
        assert self.in_host_heap(ptr, len(data))
        self.data[ptr : ptr + len(data)] = data

    def spirit_bytes_intact(self) -> bool:
        return all(
            self.data[s : s + n] == bytes([SPIRIT_BYTE]) * n for s, n in self.spirit_pages
        )


def pattern(tag: int, size: int) -> bytes:
    """Distinct nonzero content for a block."""
    return bytes((tag * 31 + i) % 251 + 1 for i in range(size))


def freelist(mem: FakeMemory) -> FreeListAllocator:
    return FreeListAllocator(mem.grow, mem.zero, mem.move)


def bump(mem: FakeMemory) -> BumpAllocator:
    return BumpAllocator(mem.grow, mem.zero, mem.move)


ALLOCATORS = [pytest.param(freelist, id="freelist"), pytest.param(bump, id="bump")]


# --------------------------------------------------------------------------------------------
# Both allocators
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", ALLOCATORS)
def test_blocks_are_zeroed_8_aligned_and_above_the_floor(make) -> None:
    mem = FakeMemory()
    a = make(mem)
    ptrs = [a.alloc(size) for size in (1, 3, 8, 13, 100, 2000)]
    for ptr, size in zip(ptrs, (1, 3, 8, 13, 100, 2000), strict=True):
        assert ptr >= FLOOR
        assert ptr % 8 == 0
        assert mem.read(ptr, size) == bytes(size)
        assert a.size_of(ptr) >= size
    assert len(set(ptrs)) == len(ptrs)
    assert mem.spirit_bytes_intact()


@pytest.mark.parametrize("make", ALLOCATORS)
@pytest.mark.parametrize("align", [16, 64, 256, 4096])
def test_requested_alignment_is_honoured(make, align: int) -> None:
    mem = FakeMemory()
    a = make(mem)
    a.alloc(8)  # knock the next free address off any large alignment
    for size in (1, 24, 100):
        ptr = a.alloc(size, align=align)
        assert ptr != 0
        assert ptr % align == 0
        assert mem.in_host_heap(ptr, size)


@pytest.mark.parametrize("make", ALLOCATORS)
@pytest.mark.parametrize(
    ("size", "align"), [(-1, 8), (0x8000_0000, 8), (8, 0), (8, 3), (8, 24), (8, -8)]
)
def test_invalid_requests_return_null(make, size: int, align: int) -> None:
    a = make(FakeMemory())
    assert a.alloc(size, align) == 0


@pytest.mark.parametrize("make", ALLOCATORS)
def test_zero_size_alloc_returns_a_distinct_block(make) -> None:
    a = make(FakeMemory())
    first, second = a.alloc(0), a.alloc(0)
    assert first and second and first != second


@pytest.mark.parametrize("make", ALLOCATORS)
def test_exhaustion_returns_null_and_respects_the_maximum(make) -> None:
    mem = FakeMemory(max_bytes=FLOOR + 4 * PAGE)
    a = make(mem)
    ptrs = []
    while (ptr := a.alloc(500)) != 0:
        ptrs.append(ptr)
        assert len(ptrs) < 100, "allocation never failed"
    assert len(mem.data) <= FLOOR + 4 * PAGE
    assert len(ptrs) >= 4  # the memory was actually used before failing
    assert a.alloc(10 * PAGE) == 0


@pytest.mark.parametrize("make", ALLOCATORS)
def test_realloc_failure_keeps_the_old_block(make) -> None:
    mem = FakeMemory(max_bytes=FLOOR + 2 * PAGE)
    a = make(mem)
    ptr = a.alloc(100)
    mem.write(ptr, pattern(1, 100))
    assert a.realloc(ptr, 100, 10 * PAGE) == 0
    assert mem.read(ptr, 100) == pattern(1, 100)
    assert a.size_of(ptr) is not None and a.size_of(ptr) >= 100
    # Still usable afterwards.
    again = a.realloc(ptr, 100, 200)
    assert again != 0
    assert mem.read(again, 100) == pattern(1, 100)


@pytest.mark.parametrize("make", ALLOCATORS)
def test_realloc_of_null_allocates_and_of_unknown_pointer_fails(make) -> None:
    mem = FakeMemory()
    a = make(mem)
    ptr = a.realloc(0, 0, 40)
    assert ptr != 0 and mem.read(ptr, 40) == bytes(40)
    assert a.realloc(ptr + 8, 8, 16) == 0  # not the start of a block
    assert a.realloc(123456, 8, 16) == 0


@pytest.mark.parametrize("make", ALLOCATORS)
def test_realloc_moving_keeps_data_and_zeroes_the_tail(make) -> None:
    mem = FakeMemory()
    a = make(mem)
    ptr = a.alloc(64)
    blocker = a.alloc(64)  # the block right after: forces a move
    mem.write(ptr, pattern(2, 64))
    mem.write(blocker, pattern(3, 64))
    new = a.realloc(ptr, 64, 3000)
    assert new not in (0, ptr)
    assert new % 8 == 0
    assert mem.read(new, 64) == pattern(2, 64)
    assert mem.read(new + 64, 3000 - 64) == bytes(3000 - 64)
    assert mem.read(blocker, 64) == pattern(3, 64)


@pytest.mark.parametrize("make", ALLOCATORS)
def test_reset_forgets_every_block_and_reuses_the_heap(make) -> None:
    mem = FakeMemory()
    a = make(mem)
    first = a.alloc(100)
    for i in range(20):
        mem.write(a.alloc(300), pattern(i, 300))
    grown = len(mem.data)
    a.reset()
    assert a.in_use == 0
    assert a.size_of(first) is None
    again = a.alloc(100)
    assert again == first  # starts over at the first region, no growth
    assert len(mem.data) == grown
    assert mem.read(again, 100) == bytes(100)  # zeroed although it held data before the reset


# --------------------------------------------------------------------------------------------
# FreeListAllocator
# --------------------------------------------------------------------------------------------
def test_freelist_reuses_freed_memory_so_the_heap_stays_bounded() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    rng = random.Random(1234)
    live: list[int] = []
    for _ in range(5000):
        if len(live) < 10 and rng.random() < 0.6:
            ptr = a.alloc(rng.randint(1, 4096), align=rng.choice([8, 16, 64]))
            assert ptr != 0
            live.append(ptr)
        elif live:
            a.free(live.pop(rng.randrange(len(live))))
    for ptr in live:
        a.free(ptr)
    # At most 10 blocks of <= 4 KiB + alignment are live at once: without reuse 5000 operations
    # would have needed megabytes.
    assert a.heap_bytes <= 128 * 1024
    assert a.in_use == 0


def test_freelist_reuses_a_freed_block_at_the_same_address() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    ptr = a.alloc(200)
    mem.write(ptr, pattern(5, 200))
    a.free(ptr)
    again = a.alloc(200)
    assert again == ptr
    assert mem.read(again, 200) == bytes(200)  # reused blocks are zeroed too


def test_freelist_coalesces_neighbours_in_any_order() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    x, y, z = a.alloc(256), a.alloc(256), a.alloc(256)
    assert y == x + 256 and z == y + 256
    tail = a.alloc(8)  # keep the space after z in use
    heap = a.heap_bytes
    a.free(x)
    a.free(z)
    a.free(y)  # joins both neighbours
    big = a.alloc(768)
    assert big == x  # one block spanning x, y and z: no growth needed
    assert a.heap_bytes == heap
    assert a.size_of(tail) is not None


def test_freelist_coalesces_adjacent_grown_regions() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    first = a.alloc(PAGE - 64)  # region 1 (one page) with 64 free bytes at its end
    second = a.alloc(PAGE)  # needs a new region, adjacent to region 1
    # The 64 free bytes and the new region merged into one block, used from its start.
    assert second == first + PAGE - 64
    assert len(mem.host_regions) == 2


def test_freelist_double_free_and_unknown_pointers_are_ignored() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    ptr = a.alloc(64)
    a.free(ptr)
    a.free(ptr)
    a.free(0)
    a.free(999_999)
    assert a.in_use == 0
    first, second = a.alloc(64), a.alloc(64)
    assert first != second  # a double free that corrupted the list would hand out ptr twice
    assert a.in_use == 128


def test_freelist_realloc_grows_in_place_into_a_free_neighbour() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    ptr = a.alloc(64)
    neighbour = a.alloc(256)
    mem.write(ptr, pattern(7, 64))
    mem.write(neighbour, pattern(8, 256))
    a.free(neighbour)
    assert a.realloc(ptr, 64, 200) == ptr
    assert mem.read(ptr, 64) == pattern(7, 64)
    assert mem.read(ptr + 64, 136) == bytes(136)  # the neighbour's old bytes are zeroed
    assert a.size_of(ptr) >= 200


def test_freelist_realloc_shrinks_in_place_and_zeroes_the_tail() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    ptr = a.alloc(128)
    mem.write(ptr, pattern(9, 128))
    assert a.realloc(ptr, 128, 40) == ptr
    assert mem.read(ptr, 40) == pattern(9, 40)
    assert mem.read(ptr + 40, 88) == bytes(88)
    # Growing back: the bytes beyond the kept 40 read as zero, not the old content.
    assert a.realloc(ptr, 40, 128) == ptr
    assert mem.read(ptr + 40, 88) == bytes(88)


def test_freelist_realloc_keeps_only_min_old_new_bytes() -> None:
    mem = FakeMemory()
    a = freelist(mem)
    ptr = a.alloc(16)
    mem.write(ptr, b"\xff" * 16)
    # The caller says only 4 bytes are in use: bytes 4..12 are "new" and must be zero.
    assert a.realloc(ptr, 4, 12) == ptr
    assert mem.read(ptr, 12) == b"\xff" * 4 + bytes(8)


def test_freelist_in_use_tracks_live_blocks() -> None:
    a = freelist(FakeMemory())
    p = a.alloc(10)
    q = a.alloc(100)
    assert a.in_use == 16 + 104
    a.free(p)
    assert a.in_use == 104
    a.free(q)
    assert a.in_use == 0


# --------------------------------------------------------------------------------------------
# BumpAllocator
# --------------------------------------------------------------------------------------------
def test_bump_never_reuses_until_reset() -> None:
    mem = FakeMemory()
    a = bump(mem)
    ptr = a.alloc(64)
    a.free(ptr)
    assert a.size_of(ptr) == 64  # free is a no-op
    assert a.alloc(64) == ptr + 64
    a.reset()
    assert a.alloc(64) == ptr


def test_bump_moves_to_a_new_region_when_full() -> None:
    mem = FakeMemory()
    a = bump(mem)
    a.alloc(100)
    big = a.alloc(4 * PAGE)  # does not fit in the first region
    assert big != 0 and mem.in_host_heap(big, 4 * PAGE)
    assert a.heap_bytes == sum(n for _, n in mem.host_regions)


def test_bump_reset_skips_regions_too_small_for_a_request() -> None:
    mem = FakeMemory()
    a = bump(mem)
    a.alloc(100)  # region 1: 1 page
    a.alloc(8 * PAGE)  # region 2: 9 pages
    a.reset()
    ptr = a.alloc(5 * PAGE)  # only region 2 can hold it
    assert mem.in_host_heap(ptr, 5 * PAGE)
    assert len(mem.host_regions) == 2  # no growth: the old region was reused


# --------------------------------------------------------------------------------------------
# Property tests: random sequences of operations
# --------------------------------------------------------------------------------------------
class AllocatorMachine(RuleBasedStateMachine):
    """Live blocks never overlap, stay in the host heap, stay aligned and keep their data."""

    make = staticmethod(freelist)

    def __init__(self) -> None:
        super().__init__()
        self.mem = FakeMemory(max_bytes=FLOOR + 48 * PAGE)
        self.a = self.make(self.mem)
        # ptr -> (requested size, content, alignment guaranteed)
        self.live: dict[int, tuple[int, bytes, int]] = {}
        self.freed: list[int] = []
        self.tag = 0

    @initialize()
    def start(self) -> None:
        assert self.a.in_use == 0

    def _remember(self, ptr: int, size: int, align: int) -> None:
        self.tag += 1
        content = pattern(self.tag, size)
        self.mem.write(ptr, content)
        self.live[ptr] = (size, content, align)

    @rule(size=st.integers(0, 3000), align=st.sampled_from([1, 2, 4, 8, 16, 64, 512]))
    def alloc(self, size: int, align: int) -> None:
        ptr = self.a.alloc(size, align)
        if ptr == 0:
            return  # exhausted (the fake memory has a maximum)
        assert ptr not in self.live
        assert ptr % max(align, 8) == 0
        assert self.mem.read(ptr, size) == bytes(size), "block not zeroed"
        self._remember(ptr, size, max(align, 8))

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        ptr = data.draw(st.sampled_from(sorted(self.live)))
        del self.live[ptr]
        self.a.free(ptr)
        self.freed.append(ptr)

    @precondition(lambda self: bool(self.freed))
    @rule(data=st.data())
    def free_again(self, data: st.DataObject) -> None:
        ptr = data.draw(st.sampled_from(self.freed))
        if ptr not in self.live:  # a double free (the address was not reused since)
            self.a.free(ptr)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), new_size=st.integers(0, 4000))
    def realloc(self, data: st.DataObject, new_size: int) -> None:
        ptr = data.draw(st.sampled_from(sorted(self.live)))
        old_size, content, align = self.live[ptr]
        new = self.a.realloc(ptr, old_size, new_size)
        if new == 0:
            assert self.mem.read(ptr, old_size) == content, "failed realloc lost the old block"
            return
        del self.live[ptr]
        keep = min(old_size, new_size)
        assert self.mem.read(new, keep) == content[:keep], "realloc lost data"
        assert self.mem.read(new + keep, new_size - keep) == bytes(new_size - keep), (
            "realloc did not zero the new bytes"
        )
        self._remember(new, new_size, align if new == ptr else 8)

    @rule()
    def spirit_grows_its_memory(self) -> None:
        self.mem.spirit_grow()

    @precondition(lambda self: len(self.live) > 12)
    @rule()
    def reset(self) -> None:
        self.a.reset()
        self.live.clear()
        self.freed.clear()
        assert self.a.in_use == 0

    @invariant()
    def blocks_are_disjoint_aligned_in_the_heap_and_intact(self) -> None:
        spans = sorted((ptr, ptr + max(size, 1)) for ptr, (size, _, _) in self.live.items())
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, "live blocks overlap"
        for ptr, (size, content, align) in self.live.items():
            assert ptr >= FLOOR
            assert ptr % align == 0
            assert self.mem.in_host_heap(ptr, size), "block outside the host heap"
            assert self.mem.read(ptr, size) == content, "block data was clobbered"
        assert self.mem.spirit_bytes_intact(), "the Spirit's own bytes were touched"

    @invariant()
    def in_use_covers_live_blocks(self) -> None:
        assert self.a.in_use >= sum(size for size, _, _ in self.live.values())


class BumpAllocatorMachine(AllocatorMachine):
    make = staticmethod(bump)


_settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFreeListProperties = AllocatorMachine.TestCase
TestFreeListProperties.settings = _settings
TestBumpProperties = BumpAllocatorMachine.TestCase
TestBumpProperties.settings = _settings
