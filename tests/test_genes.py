"""Genes: default layouts, explicit layouts, and reading/writing them in a Spirit's memory.

The layouts are cross-checked against WebAssembly code that builds and reads the same structs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

import vudo
from vudo import GeneLayout, gene_layout
from vudo._memory import GeneField
from vudo.errors import MemoryAccessError

LoadWat = Callable[..., vudo.Spirit]

# Point { x: i64, y: i64 } built by wasm code, and a Person gene whose string field wasm reads.
GENE_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "new_Point") (param $x i64) (param $y i64) (result i32)
    (i64.store (i32.const 2048) (local.get $x))
    (i64.store offset=8 (i32.const 2048) (local.get $y))
    i32.const 2048)
  ;; Mixed { a: i32 @0, b: i64 @8, c: bool @16, d: f32 @20, e: string @24 } (size 32)
  (func (export "mixed_b") (param $p i32) (result i64) (i64.load offset=8 (local.get $p)))
  (func (export "mixed_c") (param $p i32) (result i32) (i32.load offset=16 (local.get $p)))
  (func (export "mixed_d") (param $p i32) (result f32) (f32.load offset=20 (local.get $p)))
  ;; length of the length-prefixed string the field at offset 24 points to
  (func (export "mixed_e_len") (param $p i32) (result i32)
    (i32.load (i32.load offset=24 (local.get $p))))
  ;; first byte of that string
  (func (export "mixed_e_byte0") (param $p i32) (result i32)
    (i32.load8_u offset=4 (i32.load offset=24 (local.get $p))))
)
"""

MIXED_FIELDS: list[tuple[str, vudo.genes.GeneType]] = [
    ("a", "i32"),
    ("b", "i64"),
    ("c", "bool"),
    ("d", "f32"),
    ("e", "string"),
]


@pytest.fixture
def spirit(load_wat: LoadWat) -> vudo.Spirit:
    return load_wat(GENE_WAT)


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------
def test_point_layout_matches_the_abi_example() -> None:
    point = gene_layout("Point", [("x", "i64"), ("y", "i64")])
    assert point.name == "Point"
    assert point.size == 16
    assert point.alignment == 8
    assert [(f.name, f.type, f.offset) for f in point.fields] == [("x", "i64", 0), ("y", "i64", 8)]


def test_fields_get_natural_alignment_and_size_is_rounded() -> None:
    mixed = gene_layout("Mixed", MIXED_FIELDS)
    assert [f.offset for f in mixed.fields] == [0, 8, 16, 20, 24]
    assert mixed.size == 32
    assert mixed.alignment == 8
    small = gene_layout("Small", [("flag", "bool"), ("n", "i32"), ("x", "f32")])
    assert (small.size, small.alignment) == (12, 4)
    tail = gene_layout("Tail", [("x", "f64"), ("n", "i32")])
    assert tail.size == 16  # padded to a multiple of 8 so arrays of Tail stay aligned


def test_gene_layout_accepts_a_mapping() -> None:
    assert gene_layout("M", {"a": "i32", "b": "f64"}) == gene_layout(
        "M", [("a", "i32"), ("b", "f64")]
    )


def test_field_lookup() -> None:
    mixed = gene_layout("Mixed", MIXED_FIELDS)
    assert mixed.field("d") == GeneField("d", "f32", 20)
    assert mixed.field("d").size == 4
    with pytest.raises(KeyError, match="Mixed"):
        mixed.field("zzz")


def test_unknown_field_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="u8"):
        gene_layout("Bad", [("x", "u8")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="u8"):
        GeneField("x", "u8", 0)  # type: ignore[arg-type]


def test_invalid_explicit_layouts_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative offset"):
        GeneField("x", "i32", -4)
    with pytest.raises(ValueError, match="does not fit"):
        GeneLayout("G", [GeneField("x", "i64", 4)], 8)
    with pytest.raises(ValueError, match="duplicate"):
        GeneLayout("G", [GeneField("x", "i32", 0), GeneField("x", "i32", 4)], 8)
    with pytest.raises(ValueError, match="power of two"):
        GeneLayout("G", [GeneField("x", "i32", 0)], 8, alignment=3)
    with pytest.raises(ValueError):
        gene_layout("G", [("x", "i32"), ("x", "i64")])


def test_explicit_layout_with_custom_offsets(spirit: vudo.Spirit) -> None:
    layout = GeneLayout("Packed", [GeneField("lo", "i32", 0), GeneField("hi", "i32", 12)], 16, 4)
    mem = spirit.memory
    mem.write_gene(512, {"lo": 1, "hi": -2}, layout)
    assert mem.read_i32(512) == 1
    assert mem.read_i32(524) == -2
    assert mem.read_bytes(516, 8) == bytes(8)
    assert mem.read_gene(512, layout) == {"lo": 1, "hi": -2}


# --------------------------------------------------------------------------------------------
# reading and writing genes in memory
# --------------------------------------------------------------------------------------------
def test_gene_built_by_wasm_reads_back(spirit: vudo.Spirit) -> None:
    point = gene_layout("Point", [("x", "i64"), ("y", "i64")])
    ptr = spirit.call("new_Point", -7, 2**40)
    assert spirit.memory.read_gene(ptr, point) == {"x": -7, "y": 2**40}


def test_gene_written_by_the_host_is_what_wasm_reads(spirit: vudo.Spirit) -> None:
    mixed = gene_layout("Mixed", MIXED_FIELDS)
    mem = spirit.memory
    ptr = mem.alloc(mixed.size, align=mixed.alignment)
    mem.write_gene(ptr, {"a": -1, "b": -(2**62), "c": True, "d": 1.5, "e": "zebra ✓"}, mixed)
    assert mem.read_i32(ptr) == -1
    assert spirit.call("mixed_b", ptr) == -(2**62)
    assert spirit.call("mixed_c", ptr) == 1
    assert spirit.call("mixed_d", ptr) == 1.5
    assert spirit.call("mixed_e_len", ptr) == len("zebra ✓".encode())
    assert spirit.call("mixed_e_byte0", ptr) == ord("z")
    string_ptr = mem.read_u32(ptr + 24)
    assert string_ptr >= mem.heap_floor  # the string lives in the host heap
    expected = {"a": -1, "b": -(2**62), "c": True, "d": 1.5, "e": "zebra ✓"}
    assert mem.read_gene(ptr, mixed) == expected


def test_round_trip_of_every_type(spirit: vudo.Spirit) -> None:
    layout = gene_layout(
        "All",
        [("i", "i32"), ("l", "i64"), ("f", "f32"), ("d", "f64"), ("b", "bool"), ("s", "string")],
    )
    mem = spirit.memory
    values = {"i": 2**31 - 1, "l": -(2**63), "f": 0.1, "d": 0.1, "b": False, "s": ""}
    mem.write_gene(4096, values, layout)
    got = mem.read_gene(4096, layout)
    assert got["f"] == struct.unpack("<f", struct.pack("<f", 0.1))[0]  # f32 precision
    assert {**got, "f": 0.1} == values
    assert isinstance(got["b"], bool)


def test_bool_is_an_i32_and_any_nonzero_reads_true(spirit: vudo.Spirit) -> None:
    layout = gene_layout("Flag", [("on", "bool")])
    mem = spirit.memory
    mem.write_gene(100, {"on": True}, layout)
    assert mem.read_i32(100) == 1
    mem.write_i32(100, 7)
    assert mem.read_gene(100, layout) == {"on": True}
    mem.write_i32(100, 0)
    assert mem.read_gene(100, layout) == {"on": False}


def test_null_string_field_reads_empty(spirit: vudo.Spirit) -> None:
    layout = gene_layout("Named", [("name", "string"), ("n", "i32")])
    assert spirit.memory.read_gene(300, layout) == {"name": "", "n": 0}


def test_missing_fields_are_left_unchanged(spirit: vudo.Spirit) -> None:
    point = gene_layout("Point", [("x", "i64"), ("y", "i64")])
    mem = spirit.memory
    mem.write_gene(800, {"x": 1, "y": 2}, point)
    mem.write_gene(800, {"y": 5}, point)
    assert mem.read_gene(800, point) == {"x": 1, "y": 5}


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"a": "1"}, TypeError, r"Mixed\.a \(i32\).*str"),
        ({"a": 1.0}, TypeError, r"Mixed\.a"),
        ({"a": True}, TypeError, r"Mixed\.a"),
        ({"a": 2**31}, ValueError, r"Mixed\.a.*out of range"),
        ({"b": -(2**63) - 1}, ValueError, r"Mixed\.b.*out of range"),
        ({"c": "yes"}, TypeError, r"Mixed\.c \(bool\)"),
        ({"c": 1.0}, TypeError, r"Mixed\.c"),
        ({"d": "1.5"}, TypeError, r"Mixed\.d \(f32\)"),
        ({"d": 1e300}, ValueError, r"Mixed\.d.*f32"),
        ({"e": 42}, TypeError, r"Mixed\.e \(string\).*int"),
        ({"e": b"bytes"}, TypeError, r"Mixed\.e"),
        ({"nope": 1}, KeyError, "nope"),
    ],
)
def test_invalid_values_raise_clear_errors_and_write_nothing(
    spirit: vudo.Spirit, values: dict[str, object], error: type[Exception], match: str
) -> None:
    mixed = gene_layout("Mixed", MIXED_FIELDS)
    mem = spirit.memory
    mem.fill(1000, 0xAB, mixed.size)
    in_use = mem.allocator.in_use
    # A valid string field first: it must not be allocated when another field is invalid.
    with pytest.raises(error, match=match):
        mem.write_gene(1000, {"e": "valid", "a": 5, **values}, mixed)
    assert mem.read_bytes(1000, mixed.size) == b"\xab" * mixed.size
    assert mem.allocator.in_use == in_use


def test_gene_access_out_of_bounds(spirit: vudo.Spirit) -> None:
    point = gene_layout("Point", [("x", "i64"), ("y", "i64")])
    mem = spirit.memory
    end = mem.size
    with pytest.raises(MemoryAccessError):
        mem.read_gene(end - 8, point)
    with pytest.raises(MemoryAccessError):
        mem.write_gene(end - 8, {"x": 1}, point)
    assert mem.read_bytes(end - 8, 8) == bytes(8)


def test_string_field_with_a_dangling_pointer_raises(spirit: vudo.Spirit) -> None:
    layout = gene_layout("Named", [("name", "string")])
    spirit.memory.write_u32(300, 0xFFFF_FFF0)
    with pytest.raises(MemoryAccessError):
        spirit.memory.read_gene(300, layout)


def test_host_heap_exhausted_by_a_string_field_leaves_the_gene_untouched(
    load_wat: LoadWat,
) -> None:
    mem = load_wat('(module (memory (export "memory") 1 2))').memory
    layout = gene_layout("Two", [("first", "string"), ("second", "string")])
    mem.fill(64, 0xCD, layout.size)
    in_use = mem.allocator.in_use
    with pytest.raises(MemoryError):
        mem.write_gene(64, {"first": "fits", "second": "x" * 100_000}, layout)
    assert mem.read_bytes(64, layout.size) == b"\xcd" * layout.size
    assert mem.allocator.in_use == in_use  # the first string was released again


# ------------------------------------------------------------------------------------------
# The packed path for complete writes: same bytes and same errors as field by field
# ------------------------------------------------------------------------------------------
PLAIN = gene_layout("Plain", [("a", "i32"), ("b", "i64"), ("ok", "bool"), ("w", "f64"),
                              ("f", "f32")])  # a@0, pad 4..8, b@8, ok@16, pad 20..24, w@24, f@32


def test_complete_write_leaves_padding_and_gaps_untouched(spirit: vudo.Spirit) -> None:
    mem = spirit.memory
    ptr = 4096
    mem.fill(ptr, 0xAA, PLAIN.size)
    mem.write_gene(ptr, {"a": -1, "b": 2**40, "ok": True, "w": 0.5, "f": 1.5}, PLAIN)
    raw = mem.read_bytes(ptr, PLAIN.size)
    assert raw[4:8] == b"\xaa" * 4 and raw[20:24] == b"\xaa" * 4 and raw[36:40] == b"\xaa" * 4
    assert mem.read_gene(ptr, PLAIN) == {"a": -1, "b": 2**40, "ok": True, "w": 0.5, "f": 1.5}


@pytest.mark.parametrize("value", [
    True, 7, -(2**31), 2**31 - 1, 2**31, -(2**31) - 1, 2**63, 1.5, float("inf"), 3.4e39,
    "x", None, vudo.abi.ResultCode.NOT_FOUND,
])
@pytest.mark.parametrize("field", ["a", "b", "ok", "w", "f"])
def test_complete_write_validates_exactly_like_a_partial_one(
    spirit: vudo.Spirit, field: str, value: object
) -> None:
    mem = spirit.memory
    base = {"a": 1, "b": 2, "ok": False, "w": 3.0, "f": 4.0}
    complete = {**base, field: value}

    def outcome(write: Callable[[int], None], ptr: int) -> object:
        mem.fill(ptr, 0x55, PLAIN.size)
        try:
            write(ptr)
        except Exception as exc:
            return type(exc), mem.read_bytes(ptr, PLAIN.size)
        return mem.read_bytes(ptr, PLAIN.size)

    def all_at_once(ptr: int) -> None:
        mem.write_gene(ptr, complete, PLAIN)

    def field_by_field(ptr: int) -> None:
        for f in PLAIN.fields:  # validate all first, as write_gene does, then write one by one
            mem.write_gene(5000, {f.name: complete[f.name]}, PLAIN)
        for f in PLAIN.fields:
            mem.write_gene(ptr, {f.name: complete[f.name]}, PLAIN)

    assert outcome(all_at_once, 4096) == outcome(field_by_field, 8192)
