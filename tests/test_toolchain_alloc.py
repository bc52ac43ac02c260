"""Host and guest allocations never overlap, whatever is used first (host-abi.md, "Memory owned by
the host"): with the Spirit's exported allocator (C malloc, AssemblyScript --exportRuntime) and
with the grown-pages heap of a DOL-style Spirit.

Every block is filled with its own pattern; after every step of a scenario all live blocks are
checked byte for byte (by the host, and by the guest for its own blocks) and checked not to
overlap each other.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from vudo import load_spirit
from vudo._memory import allocator_strategy
from vudo._memory.guest_alloc import HOST_PAGES

WASM = Path(__file__).parent / "spirits" / "wasm"
MASK = 0xFFFFFFFF

# A DOL-style Spirit: a private bump heap from 1024 to 65536 that never grows memory, the same
# guest-side test exports as the C and AssemblyScript Spirits.
DOL_STYLE = r"""
(module
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "g_alloc") (param $size i32) (param $pattern i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 65536))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (memory.fill (local.get $p) (local.get $pattern) (local.get $size))
    (local.get $p))
  (func (export "g_check") (param $p i32) (param $size i32) (param $pattern i32) (result i32)
    (local $i i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
      (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                  (i32.and (local.get $pattern) (i32.const 255)))
        (then (return (i32.const 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 1))
  (func (export "g_free") (param i32))
  (func (export "recv_check") (result i32)
    (local $m i32) (local $n i32) (local $p i32) (local $i i32)
    (local.set $m (call $recv))
    (if (i32.eqz (local.get $m)) (then (return (i32.const -2))))
    (local.set $p (i32.add (local.get $m) (i32.add (i32.const 4) (i32.load (local.get $m)))))
    (local.set $n (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                  (i32.and (i32.add (i32.mul (local.get $i) (i32.const 31)) (local.get $n))
                           (i32.const 255)))
        (then (call $free_message (local.get $m)) (return (i32.const -1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $free_message (local.get $m))
    (local.get $n))
)
"""

#: name -> (source, expected strategy, largest guest block the guest heap can take)
SPIRITS = {
    "c_malloc": (WASM / "c_malloc.wasm", "guest:malloc", 300_000),
    "as_export": (WASM / "as_export.wasm", "guest:assemblyscript", 300_000),
    "dol_style": (DOL_STYLE, HOST_PAGES, 600),
}


def payload(n: int) -> bytes:
    """Test message of ``n`` bytes: byte i is ``(i * 31 + n) & 0xFF`` (what recv_check wants)."""
    return bytes((i * 31 + n) & 0xFF for i in range(n)) if n < 4096 else _big(n)


def _big(n: int) -> bytes:
    period = bytes((i * 31 + n) & 0xFF for i in range(256))  # i*31 mod 256 has period 256
    return (period * (n // 256 + 1))[:n]


class Heap:
    """Live blocks of both sides of one Spirit, each with its pattern."""

    def __init__(self, name: str) -> None:
        source, strategy, self.guest_max = SPIRITS[name]
        self.spirit = load_spirit(source, name=name)
        assert allocator_strategy(self.spirit.memory.allocator) == strategy
        self.mem = self.spirit.memory
        self.blocks: dict[int, tuple[int, int, str]] = {}  # ptr -> (size, pattern, owner)
        self.strings: dict[int, str] = {}
        self._pattern = 0

    def _next_pattern(self) -> int:
        self._pattern = self._pattern % 253 + 1  # never 0: a zeroed block must not pass
        return self._pattern

    def host(self, size: int) -> int:
        ptr = self.mem.alloc(size)
        assert ptr and ptr % 8 == 0
        assert self.mem.read_bytes(ptr, size) == bytes(size)  # zeroed
        pattern = self._next_pattern()
        self.mem.fill(ptr, pattern, size)
        self.blocks[ptr] = (size, pattern, "host")
        return ptr

    def guest(self, size: int) -> int:
        size = min(size, self.guest_max)
        pattern = self._next_pattern()
        ptr = self.spirit.call("g_alloc", size, pattern) & MASK
        if ptr == 0:  # the DOL-style bump heap is full: that is its limit, not a failure
            return 0
        self.blocks[ptr] = (size, pattern, "guest")
        return ptr

    def string(self, text: str) -> int:
        ptr = self.mem.encode_string(text)
        self.strings[ptr] = text
        return ptr

    def message(self, size: int) -> None:
        assert self.spirit.deliver("tester", payload(size))
        assert self.spirit.call("recv_check") == size

    def free(self, ptr: int) -> None:
        _, _, owner = self.blocks.pop(ptr)
        if owner == "host":
            self.mem.free(ptr)
        else:
            self.spirit.call("g_free", ptr)

    def free_string(self, ptr: int) -> None:
        del self.strings[ptr]
        self.mem.free(ptr)

    def check(self) -> None:
        spans = sorted(
            [(p, s, o) for p, (s, _, o) in self.blocks.items()]
            + [(p, 4 + len(t.encode()), "string") for p, t in self.strings.items()]
        )
        for (p1, s1, o1), (p2, _, o2) in itertools.pairwise(spans):
            assert p1 + max(s1, 1) <= p2, f"{o1} block 0x{p1:x}+{s1} overlaps {o2} 0x{p2:x}"
        for ptr, (size, pattern, owner) in self.blocks.items():
            assert self.mem.read_bytes(ptr, size) == bytes([pattern]) * size, (owner, hex(ptr))
            if owner == "guest":
                assert self.spirit.call("g_check", ptr, size, pattern) == 1
        for ptr, text in self.strings.items():
            assert self.mem.decode_string(ptr) == text


FIRST_USES = ("host", "guest", "message", "string")


@pytest.mark.parametrize("name", list(SPIRITS))
@pytest.mark.parametrize("order", list(itertools.permutations(FIRST_USES)), ids="-".join)
def test_no_overlap_in_any_order_of_first_use(name: str, order: tuple[str, ...]) -> None:
    heap = Heap(name)
    for use in order:
        if use == "host":
            heap.host(1000)
        elif use == "guest":
            heap.guest(500)
        elif use == "message":
            heap.message(70_000)
        else:
            heap.string("première chaîne")
        heap.check()
    # Then both sides keep allocating around each other.
    for size in (1, 7, 8, 4096, 65536, 100_000):
        heap.host(size)
        heap.guest(size)
        heap.check()
    if name == "as_export":
        heap.spirit.call("g_collect")  # pinned host blocks survive a full collection
    heap.check()


@pytest.mark.parametrize("name", list(SPIRITS))
def test_churn_thousands_of_rounds(name: str) -> None:
    rng = random.Random(f"churn-{name}")
    heap = Heap(name)
    sizes = [1, 2, 3, 8, 15, 64, 200, 1000, 4096, 10_000]
    for round_ in range(2500):
        op = rng.random()
        if op < 0.25:
            heap.host(rng.choice(sizes))
        elif op < 0.45:
            heap.guest(rng.choice(sizes))
        elif op < 0.55:
            heap.string("x" * rng.choice(sizes[:6]))
        elif op < 0.75:
            big = round_ % 100 == 0
            heap.message(rng.choice((150_000, 300_000)) if big else rng.choice(sizes))
        elif heap.blocks and op < 0.95:
            heap.free(rng.choice(list(heap.blocks)))
        elif heap.strings:
            heap.free_string(rng.choice(list(heap.strings)))
        if name == "as_export" and round_ % 500 == 499:
            heap.spirit.call("g_collect")
        if round_ % 50 == 0:
            heap.check()
        if len(heap.blocks) > 60:  # keep memory bounded: release the oldest half
            for ptr in list(heap.blocks)[:30]:
                heap.free(ptr)
    heap.check()
    assert heap.spirit.call("recv_check") == -2  # every message was taken, none lost


@pytest.mark.parametrize("name", ["c_nomalloc", "as_stub"])
def test_the_warned_hazard_is_real(name: str) -> None:
    """Why the warning exists: without an exported allocator, these real allocators start
    their heap over a host block placed first."""
    spirit = load_spirit(WASM / f"{name}.wasm")
    assert allocator_strategy(spirit.memory.allocator) == HOST_PAGES
    ptr = spirit.memory.alloc(1000)
    spirit.memory.fill(ptr, 0xAB, 1000)
    for _ in range(20):
        spirit.call("g_alloc", 5000, 0x11)
    assert spirit.memory.read_bytes(ptr, 1000) != b"\xab" * 1000


@pytest.mark.parametrize("name", ["c_malloc", "as_export"])
def test_host_allocations_from_another_thread_while_the_guest_receives(name: str) -> None:
    """Python-side allocations (through the guest allocator, under the Spirit's lock) from one
    thread, messages received by the guest (vudo_recv allocating re-entrantly) on another."""
    import threading

    heap = Heap(name)
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def host_side() -> None:
        start.wait()
        try:
            for i in range(400):
                ptr = heap.mem.alloc(24 + i % 200)
                heap.mem.free(ptr)
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    worker = threading.Thread(target=host_side)
    worker.start()
    start.wait()
    for i in range(400):
        heap.message(1 + i * 37 % 3000)
    worker.join()
    assert failures == []
    assert heap.mem.allocator.in_use == 0
    heap.host(100)
    heap.guest(100)
    heap.check()
