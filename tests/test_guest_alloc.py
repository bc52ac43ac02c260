"""The guest-backed host allocators: choice by exports, alignment, zeroing, ownership, failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vudo import Limits, load_spirit
from vudo._memory.guest_alloc import (
    CabiReallocAllocator,
    GuestAllocatorError,
    MallocAllocator,
    choose_guest_allocator,
    recognised_allocator,
)
from vudo.errors import SpiritTrap

WASM = Path(__file__).parent / "spirits" / "wasm"
I32 = ("i32",)


class FakeGuest:
    """A guest heap over a bytearray: a bump allocator that hands out 4-aligned blocks."""

    def __init__(self, fail_after: int | None = None, skew: int = 0) -> None:
        self.mem = bytearray(1 << 16)
        self.next = 1024 + skew  # skew 4: every block only 4-aligned
        self.freed: list[int] = []
        self.fail_after = fail_after
        self.trap = False

    def malloc(self, size: int) -> int:
        if self.trap:
            raise SpiritTrap("fake", "malloc", "unreachable executed")
        if self.fail_after is not None:
            if self.fail_after == 0:
                return 0
            self.fail_after -= 1
        ptr = self.next
        self.mem[ptr:ptr + size] = b"\xee" * size  # dirty: the host must zero
        self.next = ((ptr + size + 7) & ~7) + self.next % 8
        return ptr

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)

    def zero(self, ptr: int, n: int) -> None:
        self.mem[ptr:ptr + n] = bytes(n)

    def move(self, dst: int, src: int, n: int) -> None:
        self.mem[dst:dst + n] = self.mem[src:src + n]


def malloc_over(guest: FakeGuest) -> MallocAllocator:
    exports: dict[str, Callable[..., Any]] = {"malloc": guest.malloc, "free": guest.free}
    return MallocAllocator("fake", exports, guest.zero, guest.move)


def test_blocks_are_aligned_and_zeroed_whatever_the_guest_returns() -> None:
    guest = FakeGuest(skew=4)
    heap = malloc_over(guest)
    for size in (1, 3, 8, 13, 100):
        ptr = heap.alloc(size)
        assert ptr % 8 == 0
        assert guest.mem[ptr:ptr + size] == bytes(size)
    ptr = heap.alloc(24, align=64)
    assert ptr % 64 == 0 and (heap.size_of(ptr) or 0) >= 24
    heap.free(ptr)
    assert guest.freed[-1] % 8 == 4  # the guest got back the pointer it returned


def test_the_host_frees_only_what_it_allocated() -> None:
    guest = FakeGuest()
    heap = malloc_over(guest)
    ptr = heap.alloc(16)
    heap.free(12345)  # never handed to the guest's free
    heap.free(ptr)
    heap.free(ptr)  # a double free is ignored too
    assert guest.freed == [ptr]
    assert heap.in_use == 0


def test_realloc_keeps_the_prefix_and_zeroes_the_rest() -> None:
    guest = FakeGuest()
    heap = malloc_over(guest)
    ptr = heap.alloc(8)
    guest.mem[ptr:ptr + 8] = b"abcdefgh"
    new = heap.realloc(ptr, 8, 64)
    assert new != ptr and guest.mem[new:new + 64] == b"abcdefgh" + bytes(56)
    assert guest.freed == [ptr]
    assert heap.realloc(999, 8, 16) == 0  # not a host block


def test_zero_is_out_of_memory_and_keeps_the_old_block() -> None:
    guest = FakeGuest(fail_after=1)
    heap = malloc_over(guest)
    ptr = heap.alloc(8)
    assert heap.alloc(8) == 0
    assert heap.realloc(ptr, 8, 100) == 0 and heap.size_of(ptr) == 8


def test_a_trap_in_the_guest_allocator_names_the_spirit_and_the_allocator() -> None:
    guest = FakeGuest()
    heap = malloc_over(guest)
    guest.trap = True
    with pytest.raises(GuestAllocatorError, match=r"'fake'.*guest:malloc.*unreachable") as info:
        heap.alloc(8)
    assert isinstance(info.value, MemoryError)
    assert isinstance(info.value.__cause__, SpiritTrap)
    assert heap.busy == 0


def test_a_guest_returning_a_live_block_is_refused() -> None:
    guest = FakeGuest()
    heap = malloc_over(guest)
    ptr = heap.alloc(8)
    guest.next = ptr
    with pytest.raises(GuestAllocatorError, match="has not released"):
        heap.alloc(8)


def test_cabi_realloc_without_free_leaks_a_counted_amount() -> None:
    guest = FakeGuest()
    calls: list[tuple[int, ...]] = []

    def cabi(old: int, old_size: int, align: int, size: int) -> int:
        calls.append((old, old_size, align, size))
        return guest.malloc(size)

    heap = CabiReallocAllocator("fake", {"cabi_realloc": cabi}, guest.zero, guest.move,
                                has_free=False)
    ptr = heap.alloc(10)
    assert calls == [(0, 0, 8, 16)]
    heap.free(ptr)
    assert heap.leaked == 16 and guest.freed == []


def test_choice_follows_host_abi_order_and_signatures() -> None:
    malloc = {"malloc": (I32, I32), "free": (I32, ())}
    host = {"vudo_host_alloc": (("i32", "i32"), I32), "vudo_host_free": (("i32",) * 3, ())}
    asc = {"__new": (("i32", "i32"), I32), "__pin": (I32, I32), "__unpin": (I32, ())}
    cabi = {"cabi_realloc": (("i32",) * 4, I32)}
    assert recognised_allocator({**malloc, **host, **asc, **cabi}) == "guest:vudo_host_alloc"
    assert recognised_allocator({**malloc, **asc, **cabi}) == "guest:malloc"
    assert recognised_allocator({**asc, **cabi}) == "guest:assemblyscript"
    assert recognised_allocator(cabi) == "guest:cabi_realloc"
    assert recognised_allocator({"malloc": (I32, I32)}) is None  # no free: not an allocator
    assert recognised_allocator({"malloc": (("i64",), I32), "free": (I32, ())}) is None
    chosen = choose_guest_allocator("x", {**cabi, "free": (I32, ())}, {}, print, print)
    assert isinstance(chosen, CabiReallocAllocator)


# ---- the real guests ----------------------------------------------------------------------
def test_assemblyscript_out_of_memory_is_an_allocator_error_not_a_panic() -> None:
    spirit = load_spirit(WASM / "as_export.wasm", limits=Limits(max_memory=1 << 20))
    with pytest.raises(GuestAllocatorError, match=r"'as_export'.*guest:assemblyscript"):
        spirit.memory.alloc(4 << 20)
    assert not spirit.terminated
    ptr = spirit.memory.alloc(100)  # the Spirit and its heap still work
    assert ptr and spirit.memory.read_bytes(ptr, 100) == bytes(100)


def test_a_message_stays_queued_when_the_guest_allocator_fails() -> None:
    spirit = load_spirit(WASM / "as_export.wasm", limits=Limits(max_memory=1 << 20))
    assert spirit.deliver("big", bytes(3 << 20))
    with pytest.raises(GuestAllocatorError):
        spirit.call("recv_check")
    assert spirit.broker.pending("as_export") == 1 and not spirit.terminated
    spirit.broker.recv("as_export")  # drop the big one; a small one goes through
    assert spirit.deliver("small", bytes((i * 31 + 5) & 0xFF for i in range(5)))
    assert spirit.call("recv_check") == 5


def test_c_malloc_out_of_memory_returns_zero_and_keeps_the_message() -> None:
    spirit = load_spirit(WASM / "c_malloc.wasm", limits=Limits(max_memory=1 << 20))
    assert spirit.memory.alloc(4 << 20) == 0
    held = []
    while ptr := spirit.memory.alloc(32 << 10):  # fill the heap the guest's malloc can grow
        held.append(ptr)
    assert spirit.deliver("big", bytes(100 << 10))  # could fit, once memory is freed
    assert spirit.call("recv_check") == -2  # vudo_recv returned 0: heap full...
    assert spirit.broker.pending("c_malloc") == 1  # ...and the message is still there
    for ptr in held:
        spirit.memory.free(ptr)
    assert spirit.call("recv_check") != -2 and spirit.broker.pending("c_malloc") == 0


def test_a_message_that_can_never_fit_is_dead_lettered_not_left_blocking() -> None:
    spirit = load_spirit(WASM / "c_malloc.wasm", limits=Limits(max_memory=1 << 20))
    assert spirit.deliver("big", bytes(3 << 20))  # more than max_memory: can never be received
    assert spirit.deliver("small", b"next")
    assert spirit.call("recv_check") != -2  # the vudo:dead-letter notice, in its place
    assert spirit.broker.pending("c_malloc") == 1  # "small" is next, not blocked


def test_assemblyscript_new_and_pin_happen_under_one_hold_of_the_lock() -> None:
    """A collection between __new and __pin (another thread's guest call) would free the new
    block: the Spirit's lock is held across both."""
    import threading

    from vudo._memory.guest_alloc import AssemblyScriptAllocator

    lock = threading.RLock()
    events: list[str] = []
    guest = FakeGuest()

    class Recording:
        def __enter__(self) -> None:
            lock.acquire()
            events.append("enter")

        def __exit__(self, *exc: object) -> None:
            events.append("exit")
            lock.release()

    exports: dict[str, Callable[..., Any]] = {
        "__new": lambda size, _id: events.append("new") or guest.malloc(size),
        "__pin": lambda ptr: events.append("pin") or ptr,
        "__unpin": lambda ptr: events.append("unpin"),
    }
    heap = AssemblyScriptAllocator("fake", exports, guest.zero, guest.move,
                                   lock=Recording())  # type: ignore[arg-type]
    heap.free(heap.alloc(16))
    assert events == ["enter", "new", "pin", "exit", "enter", "unpin", "exit"]
