"""The module-byte readers: the memory.grow check decodes instructions (immediates that contain
0x40 never fool it), and the section reader counts what ``vudo inspect`` shows."""

from __future__ import annotations

import pytest
import wasmtime

from vudo._runtime.wasmcode import grows_memory


def wasm(body: str, extra: str = "") -> bytes:
    return bytes(wasmtime.wat2wasm(
        f"(module (memory 1) {extra} (func (export \"f\") (param i32) (result i32) {body}))"
    ))


TRICKY = {
    "empty block type": "(block unreachable) (i32.const 0)",
    "i32.const 64": "(i32.const 64)",
    "i64.const 0x4040": "(drop (i64.const 0x4040)) (i32.const 0)",
    "f32 bytes": "(drop (f32.const 3.00390625)) (i32.const 0)",  # 0x40 in its bytes
    "f64 bytes": "(drop (f64.const 2.0)) (i32.const 0)",
    "memarg offset 64": "(i32.load offset=64 (i32.const 0))",
    "local index 64": "(local.get 0)",
    "br_table": "(block (block (br_table 0 1 0 (local.get 0)))) (i32.const 0)",
    "memory.size": "(memory.size)",
    "bulk memory": "(memory.fill (i32.const 0) (i32.const 64) (i32.const 64)) (i32.const 0)",
    "v128.const with 0x40": "(drop (v128.const i8x16 64 64 64 64 64 64 64 64 64 64 64 64 64 64 "
                            "64 64)) (i32.const 0)",
    "i8x16.extract_lane": "(i8x16.extract_lane_u 0 (v128.const i32x4 0 0 0 0))",
    "select typed": "(select (result i32) (i32.const 64) (i32.const 0) (local.get 0))",
    "call_indirect": "(call_indirect (type 0) (local.get 0) (i32.const 64))",
}


@pytest.mark.parametrize("body", TRICKY.values(), ids=TRICKY.keys())
def test_immediates_are_not_memory_grow(body: str) -> None:
    extra = "(table 1 funcref) (type (func (param i32) (result i32)))"
    assert grows_memory(wasm(body, extra)) is False


@pytest.mark.parametrize("body", [
    "(memory.grow (local.get 0))",
    "(block (result i32) (i32.const 64)) (drop) (memory.grow (i32.const 1))",
    "(if (result i32) (local.get 0) (then (memory.grow (i32.const 1))) (else (i32.const 0)))",
])
def test_memory_grow_is_found(body: str) -> None:
    assert grows_memory(wasm(body)) is True


def test_in_any_function() -> None:
    module = bytes(wasmtime.wat2wasm("""(module (memory 1)
      (func (drop (i32.const 64)))
      (func (drop (memory.grow (i32.const 0)))))"""))
    assert grows_memory(module) is True


def test_undecidable_is_none_not_a_guess() -> None:
    assert grows_memory(b"not wasm") is None
    truncated = wasm("(memory.size)")[:-3]
    assert grows_memory(truncated) is None
    assert grows_memory(bytes(wasmtime.wat2wasm("(module)"))) is False


def test_the_module_reader_counts_memories_and_data_for_inspect() -> None:
    from vudo._runtime.wasmscan import scan

    wat = """
        (module
          (import "env" "mem" (memory 1 4))
          (memory 2 3)
          (data (memory 1) (i32.const 0x7ffff) "xyz")
          (data (memory 1) (i32.const 8) "hello")
          (data "passive!"))
    """
    config = wasmtime.Config()
    config.wasm_multi_memory = True
    wasmtime.Module(wasmtime.Engine(config), wat)  # valid, as scan expects
    shape = scan(bytes(wasmtime.wat2wasm(wat)), data=True)
    assert shape.imported_memories == 1
    assert shape.memories == [(65536, 4 * 65536), (2 * 65536, 3 * 65536)]
    assert (shape.data_segments, shape.data_bytes) == (3, 3 + 5 + 8)
    assert scan(bytes(wasmtime.wat2wasm(wat))).data_segments == 0  # only when asked
