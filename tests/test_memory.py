"""WasmMemory: bounds-checked typed access, strings, growth and the host heap in a real Spirit.

Where it matters, values written by the host are read back by WebAssembly code (and vice versa),
so the tests prove agreement with the wasm side, not just a Python round trip.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

import vudo
from vudo import VudoError, WasmMemory
from vudo._memory import PAGE_SIZE
from vudo.errors import MemoryAccessError

PROBE_WAT = """
(module
  (memory (export "memory") 1 4)
  (func (export "load_u8") (param i32) (result i32) local.get 0 i32.load8_u)
  (func (export "load_i32") (param i32) (result i32) local.get 0 i32.load)
  (func (export "load_i64") (param i32) (result i64) local.get 0 i64.load)
  (func (export "load_f32") (param i32) (result f32) local.get 0 f32.load)
  (func (export "load_f64") (param i32) (result f64) local.get 0 f64.load)
  (func (export "store_i32") (param i32 i32) local.get 0 local.get 1 i32.store)
  (func (export "store_i64") (param i32 i64) local.get 0 local.get 1 i64.store)
  (func (export "store_f64") (param i32 f64) local.get 0 local.get 1 f64.store)
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
  (func (export "pages") (result i32) memory.size)
)
"""

LoadWat = Callable[..., vudo.Spirit]


@pytest.fixture
def probe(load_wat: LoadWat) -> vudo.Spirit:
    return load_wat(PROBE_WAT)


@pytest.fixture
def mem(probe: vudo.Spirit) -> WasmMemory:
    return probe.memory


# --------------------------------------------------------------------------------------------
# bytes and bounds
# --------------------------------------------------------------------------------------------
def test_bytes_round_trip_and_are_seen_by_wasm(probe: vudo.Spirit, mem: WasmMemory) -> None:
    assert mem.write_bytes(100, b"\x01\x02\xff") == 3
    assert mem.read_bytes(100, 3) == b"\x01\x02\xff"
    assert probe.call("load_u8", 102) == 0xFF
    assert mem.write_bytes(200, bytearray(b"abc")) == 3
    assert mem.write_bytes(300, memoryview(b"xyzw")[1:3]) == 2
    assert mem.read_bytes(200, 3) == b"abc"
    assert mem.read_bytes(300, 2) == b"yz"
    assert mem.write_bytes(400, b"") == 0
    assert mem.read_bytes(400, 0) == b""


def test_fill_sets_bytes(mem: WasmMemory) -> None:
    mem.fill(10, 0x1FF, 4)  # only the low byte counts
    assert mem.read_bytes(9, 6) == b"\x00\xff\xff\xff\xff\x00"


def test_size_pages_and_maximum(mem: WasmMemory) -> None:
    assert mem.size == PAGE_SIZE
    assert mem.pages == 1
    assert mem.max_pages == 4
    assert mem.heap_floor == PAGE_SIZE


def test_last_bytes_are_accessible(mem: WasmMemory) -> None:
    end = mem.size
    mem.write_bytes(end - 4, b"tail")
    assert mem.read_bytes(end - 4, 4) == b"tail"
    assert mem.read_bytes(end, 0) == b""


OOB_ACCESSES: list[tuple[str, Callable[[WasmMemory, int], Any], int]] = [
    # (name, access at ptr, bytes it touches); ptr is chosen so the access ends 1 byte past the end
    ("read_bytes", lambda m, p: m.read_bytes(p, 8), 8),
    ("write_bytes", lambda m, p: m.write_bytes(p, b"12345678"), 8),
    ("fill", lambda m, p: m.fill(p, 1, 8), 8),
    ("read_string", lambda m, p: m.read_string(p, 8), 8),
    ("write_string", lambda m, p: m.write_string(p, "12345678"), 8),
    ("read_i32", lambda m, p: m.read_i32(p), 4),
    ("read_u32", lambda m, p: m.read_u32(p), 4),
    ("read_i64", lambda m, p: m.read_i64(p), 8),
    ("read_f32", lambda m, p: m.read_f32(p), 4),
    ("read_f64", lambda m, p: m.read_f64(p), 8),
    ("write_i32", lambda m, p: m.write_i32(p, -1), 4),
    ("write_u32", lambda m, p: m.write_u32(p, 7), 4),
    ("write_i64", lambda m, p: m.write_i64(p, -1), 8),
    ("write_f32", lambda m, p: m.write_f32(p, 1.5), 4),
    ("write_f64", lambda m, p: m.write_f64(p, 1.5), 8),
    ("decode_string", lambda m, p: m.decode_string(p), 4),
    ("check", lambda m, p: m.check(p, 8), 8),
]


@pytest.mark.parametrize(
    ("access", "width"), [pytest.param(a, w, id=n) for n, a, w in OOB_ACCESSES]
)
def test_every_access_is_bounds_checked(mem: WasmMemory, access, width: int) -> None:
    end = mem.size
    mem.write_bytes(end - 16, b"\xee" * 16)
    ptr = end - width + 1
    with pytest.raises(MemoryAccessError) as info:
        access(mem, ptr)
    err = info.value
    assert (err.ptr, err.length, err.memory_size) == (ptr, width, end)
    assert isinstance(err, VudoError) and isinstance(err, IndexError)
    assert f"ptr={ptr}" in str(err) and f"len={width}" in str(err) and str(end) in str(err)
    assert mem.read_bytes(end - 16, 16) == b"\xee" * 16  # nothing was partially written


@pytest.mark.parametrize(
    ("ptr", "length"), [(-1, 4), (0, -1), (PAGE_SIZE, 1), (2**32, 4), (10, 2**40)]
)
def test_bad_pointers_and_lengths_raise(mem: WasmMemory, ptr: int, length: int) -> None:
    with pytest.raises(MemoryAccessError):
        mem.read_bytes(ptr, length)
    with pytest.raises(MemoryAccessError):
        mem.check(ptr, length)


def test_decode_string_with_a_length_past_the_end_raises(mem: WasmMemory) -> None:
    mem.write_u32(1000, PAGE_SIZE)  # claims more bytes than the memory holds
    with pytest.raises(MemoryAccessError) as info:
        mem.decode_string(1000)
    assert info.value.ptr == 1004 and info.value.length == PAGE_SIZE


def test_memory_grown_by_the_spirit_is_accessible_from_the_host(
    probe: vudo.Spirit, mem: WasmMemory
) -> None:
    assert mem.size == PAGE_SIZE  # caches the size
    assert probe.call("grow", 1) == 1
    mem.write_bytes(PAGE_SIZE + 10, b"new page")
    assert mem.read_bytes(PAGE_SIZE + 10, 8) == b"new page"
    assert mem.size == 2 * PAGE_SIZE


# --------------------------------------------------------------------------------------------
# numbers: little-endian, agreeing with wasm loads and stores
# --------------------------------------------------------------------------------------------
def test_integers_are_little_endian_and_agree_with_wasm(
    probe: vudo.Spirit, mem: WasmMemory
) -> None:
    mem.write_i32(16, 0x01020304)
    assert mem.read_bytes(16, 4) == b"\x04\x03\x02\x01"
    assert probe.call("load_i32", 16) == 0x01020304
    mem.write_i64(32, -(2**40) - 5)
    assert mem.read_bytes(32, 8) == struct.pack("<q", -(2**40) - 5)
    assert probe.call("load_i64", 32) == -(2**40) - 5
    probe.call("store_i32", 48, -2)
    assert mem.read_i32(48) == -2
    assert mem.read_u32(48) == 0xFFFF_FFFE
    probe.call("store_i64", 56, 2**63 - 1)
    assert mem.read_i64(56) == 2**63 - 1


def test_write_i32_accepts_signed_and_unsigned_ranges(mem: WasmMemory) -> None:
    mem.write_i32(0, 0xFFFF_FFFF)
    assert mem.read_i32(0) == -1
    mem.write_i32(0, -(2**31))
    assert mem.read_u32(0) == 2**31
    mem.write_u32(4, 2**32 - 1)
    assert mem.read_u32(4) == 2**32 - 1


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("write_i32", 2**32),
        ("write_i32", -(2**31) - 1),
        ("write_u32", -1),
        ("write_u32", 2**32),
        ("write_i64", 2**63),
        ("write_i64", -(2**63) - 1),
    ],
)
def test_out_of_range_integers_are_refused_not_truncated(
    mem: WasmMemory, method: str, value: int
) -> None:
    mem.write_bytes(0, b"\x5a" * 8)
    with pytest.raises(ValueError, match="out of range"):
        getattr(mem, method)(0, value)
    assert mem.read_bytes(0, 8) == b"\x5a" * 8


@pytest.mark.parametrize("method", ["write_i32", "write_u32", "write_i64"])
def test_non_integers_are_refused(mem: WasmMemory, method: str) -> None:
    with pytest.raises(TypeError):
        getattr(mem, method)(0, 1.5)


def test_floats_agree_with_wasm(probe: vudo.Spirit, mem: WasmMemory) -> None:
    mem.write_f64(64, -1234.5678)
    assert probe.call("load_f64", 64) == -1234.5678
    assert mem.read_bytes(64, 8) == struct.pack("<d", -1234.5678)
    mem.write_f32(80, 0.1)
    assert mem.read_f32(80) == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert probe.call("load_f32", 80) == mem.read_f32(80)
    probe.call("store_f64", 96, 2.5e300)
    assert mem.read_f64(96) == 2.5e300


# --------------------------------------------------------------------------------------------
# strings
# --------------------------------------------------------------------------------------------
def test_write_string_returns_utf8_byte_count(mem: WasmMemory) -> None:
    text = "héllo ✓ 🌍"
    n = mem.write_string(500, text)
    assert n == len(text.encode("utf-8")) == 15
    assert mem.read_string(500, n) == text
    assert mem.read_bytes(500 + n, 1) == b"\0"  # no terminator written


def test_invalid_utf8_decodes_with_replacement_characters(mem: WasmMemory) -> None:
    mem.write_bytes(600, b"ok\xff\xfe!\xe2\x82")
    assert mem.read_string(600, 7) == "ok\ufffd\ufffd!\ufffd"
    mem.write_u32(700, 3)
    mem.write_bytes(704, b"a\x80b")
    assert mem.decode_string(700) == "a\ufffdb"


@pytest.mark.parametrize("text", ["", "x", "hello, world", "ünïcødé ✓ 🌍", "a" * 5000])
def test_encode_string_is_length_prefixed_in_the_host_heap(mem: WasmMemory, text: str) -> None:
    ptr = mem.encode_string(text)
    data = text.encode("utf-8")
    assert ptr >= mem.heap_floor
    assert ptr % 4 == 0
    assert mem.read_u32(ptr) == len(data)
    assert mem.read_bytes(ptr + 4, len(data)) == data
    assert mem.decode_string(ptr) == text


def test_decode_string_of_null_is_empty(mem: WasmMemory) -> None:
    assert mem.decode_string(0) == ""


# --------------------------------------------------------------------------------------------
# growth
# --------------------------------------------------------------------------------------------
def test_grow_returns_previous_pages_and_respects_the_maximum(
    probe: vudo.Spirit, mem: WasmMemory
) -> None:
    assert mem.grow(2) == 1
    assert mem.pages == 3
    assert probe.call("pages") == 3
    assert mem.grow(0) == 3
    assert mem.grow(2) == -1  # 5 > maximum 4
    assert mem.pages == 3
    assert mem.grow(1) == 3
    assert mem.grow(1) == -1
    with pytest.raises(ValueError):
        mem.grow(-1)


def test_grow_respects_the_spirits_max_memory(load_wat: LoadWat) -> None:
    spirit = load_wat(
        '(module (memory (export "memory") 1))',
        limits=vudo.Limits(max_memory=2 * PAGE_SIZE),
    )
    mem = spirit.memory
    assert mem.grow(2) == -1
    assert mem.alloc(PAGE_SIZE + 1) == 0
    ptr = mem.alloc(1000)
    assert ptr >= PAGE_SIZE
    assert mem.size == 2 * PAGE_SIZE


# --------------------------------------------------------------------------------------------
# the host heap inside a real Spirit
# --------------------------------------------------------------------------------------------
def test_alloc_free_realloc_reset_through_the_memory(mem: WasmMemory) -> None:
    a = mem.alloc(100)
    b = mem.alloc(33, align=64)
    assert a >= mem.heap_floor and b >= mem.heap_floor
    assert a % 8 == 0 and b % 64 == 0
    assert mem.read_bytes(a, 100) == bytes(100)
    mem.write_bytes(a, b"\x77" * 100)
    grown = mem.realloc(a, 100, 5000)
    assert grown != 0
    assert mem.read_bytes(grown, 100) == b"\x77" * 100
    assert mem.read_bytes(grown + 100, 4900) == bytes(4900)
    mem.write_bytes(grown, b"\x66" * 5000)
    mem.free(grown, 5000)
    again = mem.alloc(5000)
    assert mem.read_bytes(again, 5000) == bytes(5000)  # reused memory is zeroed
    mem.reset()
    assert mem.allocator.in_use == 0


def test_freed_host_memory_is_reused(mem: WasmMemory) -> None:
    for i in range(2000):
        ptr = mem.alloc(100 + i % 3000)
        assert ptr != 0
        mem.free(ptr)
    assert mem.pages <= 2


def test_bump_allocator_option(load_wat: LoadWat) -> None:
    spirit = load_wat('(module (memory (export "memory") 1))', allocator="bump")
    mem = spirit.memory
    assert isinstance(mem.allocator, vudo._memory.BumpAllocator)
    first = mem.alloc(64)
    mem.free(first)
    second = mem.alloc(64)
    assert second == first + 64  # a bump allocator does not reuse until reset
    mem.reset()
    assert mem.alloc(64) == first


def test_default_allocator_is_the_free_list(mem: WasmMemory) -> None:
    # The C heap when the extension is built (VUDO_NATIVE=0: the Python one); same Protocol.
    assert isinstance(mem.allocator, vudo._memory.memory._FREELIST)
    assert isinstance(mem.allocator, vudo._memory.Allocator)


def test_unknown_allocator_is_rejected(wat: Callable[[str], bytes]) -> None:
    with pytest.raises(ValueError, match="allocator"):
        vudo.load_spirit(wat('(module (memory (export "memory") 1))'), allocator="buddy")


SMALL_MAX_WAT = '(module (memory (export "memory") 1 2))'


@pytest.mark.parametrize("allocator", ["freelist", "bump"])
def test_host_heap_exhaustion_returns_null(load_wat: LoadWat, allocator: str) -> None:
    mem = load_wat(SMALL_MAX_WAT, allocator=allocator).memory
    first = mem.alloc(60_000)
    assert first >= PAGE_SIZE
    assert mem.alloc(60_000) == 0
    assert mem.pages == 2  # the declared maximum, never more
    assert mem.realloc(first, 60_000, 200_000) == 0
    with pytest.raises(MemoryError):
        mem.encode_string("x" * 70_000)
    assert mem.alloc(1000) != 0  # the rest of the page is still usable


def test_freed_memory_is_available_again_after_exhaustion(load_wat: LoadWat) -> None:
    mem = load_wat(SMALL_MAX_WAT).memory
    first = mem.alloc(60_000)
    assert mem.alloc(60_000) == 0
    mem.free(first)
    assert mem.alloc(60_000) == first


@pytest.mark.parametrize("allocator", ["freelist", "bump"])
def test_memory_starting_empty_never_hands_out_the_null_pointer(
    load_wat: LoadWat, allocator: str
) -> None:
    mem = load_wat('(module (memory (export "memory") 0 2))', allocator=allocator).memory
    assert mem.heap_floor == 0
    ptrs = [mem.alloc(8) for _ in range(3)]
    assert 0 not in ptrs
    assert len(set(ptrs)) == 3
    big = mem.alloc(PAGE_SIZE - 64)  # still fits in the 2-page maximum
    assert big != 0
    assert mem.decode_string(mem.encode_string("first")) == "first"


def test_host_regions_and_spirit_grown_pages_do_not_overlap(
    probe: vudo.Spirit, mem: WasmMemory
) -> None:
    host_a = mem.alloc(1000)
    mem.write_bytes(host_a, b"\x11" * 1000)
    spirit_page = probe.call("grow", 1) * PAGE_SIZE  # the Spirit takes a page for itself
    assert spirit_page >= host_a + 1000
    for offset in range(0, PAGE_SIZE, 4096):
        probe.call("store_i32", spirit_page + offset, -1)
    host_b = mem.alloc(PAGE_SIZE)  # cannot fit in the first host region: a new one
    assert host_b >= spirit_page + PAGE_SIZE or host_b + PAGE_SIZE <= spirit_page
    mem.write_bytes(host_b, b"\x22" * PAGE_SIZE)
    assert mem.read_bytes(host_a, 1000) == b"\x11" * 1000
    assert all(probe.call("load_i32", spirit_page + o) == -1 for o in range(0, PAGE_SIZE, 4096))


# A DOL-style module: a private bump heap (mutable global from 1024 to 65536) and data at 1024.
DOL_STYLE_WAT = """
(module
  (memory (export "memory") 1 16)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 1024) "DOL data segment")
  (func $alloc (param $n i32) (result i32)
    (local $p i32)
    global.get $heap
    local.set $p
    (if (i32.gt_u (i32.add (local.get $p) (local.get $n)) (i32.const 65536))
      (then unreachable))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    local.get $p)
  ;; allocate n bytes from the private heap and fill them with byte b; return the pointer
  (func (export "fill_new") (param $n i32) (param $b i32) (result i32)
    (local $p i32)
    (local.set $p (call $alloc (local.get $n)))
    (memory.fill (local.get $p) (local.get $b) (local.get $n))
    local.get $p)
  ;; 1 if the n bytes at p all equal b
  (func (export "verify") (param $p i32) (param $n i32) (param $b i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i))) (local.get $b))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    i32.const 1)
  (func (export "heap_ptr") (result i32) global.get $heap)
)
"""


@pytest.mark.parametrize("allocator", ["freelist", "bump"])
def test_host_heap_never_overlaps_a_dol_private_heap(load_wat: LoadWat, allocator: str) -> None:
    spirit = load_wat(DOL_STYLE_WAT, allocator=allocator)
    mem = spirit.memory
    # The host writes first: strings and raw blocks.
    host_blocks = []
    for i in range(20):
        size = 100 + 37 * i
        ptr = mem.alloc(size)
        data = bytes((i * 13 + k) % 256 for k in range(size))
        mem.write_bytes(ptr, data)
        host_blocks.append((ptr, data))
    text_ptr = mem.encode_string("host-owned string ✓")
    assert mem.read_bytes(1024, 16) == b"DOL data segment"  # the host did not write low
    # Then the Spirit uses its own heap, all the way to its end.
    own = []
    for i in range(63):
        p = spirit.call("fill_new", 1024, 0x30 + i % 10)
        own.append((p, 0x30 + i % 10))
    assert spirit.call("heap_ptr") == 1024 + 63 * 1024 == 65536
    # Both survive, byte for byte.
    for ptr, data in host_blocks:
        assert ptr >= PAGE_SIZE
        assert mem.read_bytes(ptr, len(data)) == data
    assert mem.decode_string(text_ptr) == "host-owned string ✓"
    for p, b in own:
        assert spirit.call("verify", p, 1024, b) == 1
        assert mem.read_bytes(p, 1024) == bytes([b]) * 1024
    # The Spirit's heap is full: its next allocation traps, and the host heap still works.
    with pytest.raises(vudo.errors.SpiritTrap):
        spirit.call("fill_new", 1, 0)
    late = mem.alloc(64)
    assert late >= PAGE_SIZE
    assert all(spirit.call("verify", p, 1024, b) == 1 for p, b in own)


def test_memory_exported_under_another_name_is_found(load_wat: LoadWat) -> None:
    spirit = load_wat('(module (memory (export "mem") 1))')
    spirit.memory.write_i32(8, 42)
    assert spirit.memory.read_i32(8) == 42
