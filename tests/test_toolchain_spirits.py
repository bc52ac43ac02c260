"""Spirits built by real compilers (AssemblyScript 0.28, clang 14 + wasi-libc) run on vudo:
strings, genes, messaging between a C and an AssemblyScript Spirit, clocks/random/log,
assert/panic/abort, reactors, the strategy-3 warning. Their sources and build script live in
``tests/spirits/``; the first test proves the committed ``.wasm`` files are what the sources
were built into."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from vudo import Limits, MessageBus, gene_layout, load_spirit
from vudo._memory import allocator_strategy
from vudo._runtime.wasmcode import grows_memory
from vudo._spirit.toolchains import spirit_memory_warning
from vudo.errors import LoadError, SpiritAssertionError, SpiritPanic, SpiritTerminated
from vudo.testing import MockLogger, MockRandomProvider, MockTimeProvider

SPIRITS = Path(__file__).parent / "spirits"
WASM = SPIRITS / "wasm"
MASK = 0xFFFFFFFF
MANIFEST = json.loads((SPIRITS / "manifest.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("output", sorted(MANIFEST["spirits"]))
def test_committed_wasm_matches_its_sources(output: str) -> None:
    entry = MANIFEST["spirits"][output]
    for source, digest in entry["sources"].items():
        assert sha(SPIRITS / "src" / source) == digest, (
            f"{source} changed since {output} was built: run scripts/build_spirits.py"
        )
    assert sha(WASM / output) == entry["sha256"], f"{output} is not the recorded build"


def test_every_committed_wasm_is_in_the_manifest() -> None:
    assert {p.name for p in WASM.glob("*.wasm")} == set(MANIFEST["spirits"])


@pytest.mark.parametrize(("name", "strategy"), [
    ("c_malloc", "guest:malloc"), ("c_nomalloc", "host-pages"),
    ("as_export", "guest:assemblyscript"), ("as_default", "host-pages"),
    ("as_stub", "host-pages"),
])
def test_strategy_per_toolchain(name: str, strategy: str) -> None:
    spirit = load_spirit(WASM / f"{name}.wasm")
    assert allocator_strategy(spirit.memory.allocator) == strategy


# ---- strings ------------------------------------------------------------------------------
def test_c_strings_both_ways() -> None:
    log = MockLogger()
    spirit = load_spirit(WASM / "c_malloc.wasm", logger=log)
    reply = spirit.call("greet", spirit.memory.encode_string("Zoë")) & MASK
    assert spirit.memory.decode_string(reply) == "Hello, Zoë!"
    assert log.outputs == ["Hello, Zoë!\n"]
    spirit.call("lp_free", reply)


@pytest.mark.parametrize("name", ["as_default", "as_stub", "as_export"])
def test_assemblyscript_strings(name: str) -> None:
    log = MockLogger()
    spirit = load_spirit(WASM / f"{name}.wasm", logger=log)
    assert spirit.call("greet", spirit.memory.encode_string("Zoë")) == len("Hello, Zoë!".encode())
    assert log.output == "Hello, Zoë!\n"


# ---- genes --------------------------------------------------------------------------------
def test_gene_read_from_a_c_struct() -> None:
    spirit = load_spirit(WASM / "c_malloc.wasm")
    reading = gene_layout(
        "Reading", [("at", "i64"), ("value", "f64"), ("ok", "bool"), ("label", "string")]
    )
    ptr = spirit.call("new_Reading", 1_700_000_000_123, 21.5, 1) & MASK
    assert spirit.memory.read_gene(ptr, reading) == {
        "at": 1_700_000_000_123, "value": 21.5, "ok": True, "label": "sensor-7",
    }
    spirit.memory.write_gene(ptr, {"value": -3.25, "label": "renamed"}, reading)
    assert spirit.call("Reading.value", ptr) == -3.25
    assert spirit.call("Reading.label_len", ptr) == len("renamed")


# ---- messaging between a C and an AssemblyScript Spirit ----------------------------------
@pytest.mark.parametrize("as_build", ["as_default", "as_export"])
def test_c_and_assemblyscript_exchange_messages(as_build: str) -> None:
    bus = MessageBus()
    c = load_spirit(WASM / "c_malloc.wasm", name="c", broker=bus)
    asc = load_spirit(WASM / f"{as_build}.wasm", name="as", broker=bus)
    for text in ["ping", "ünïcode ✓", "x" * 5000]:
        mem = c.memory
        assert c.call("send_to", mem.encode_string("as"), mem.encode_string(text)) == 0
        assert asc.call("echo") == 1
        reply = c.call("recv_payload") & MASK
        assert mem.decode_string(reply) == f"AS got: {text}"
        c.call("lp_free", reply)
    assert asc.call("echo") == 0 and c.call("recv_payload") == 0


# ---- clocks, random, log, assert, panic --------------------------------------------------
@pytest.mark.parametrize("name", ["c_malloc", "as_export"])
def test_clocks_random_and_log(name: str) -> None:
    log = MockLogger()
    clock = MockTimeProvider(start_ms=1_700_000_000_000, monotonic_start_ns=5)
    rand = MockRandomProvider([0.25], seed=3)
    spirit = load_spirit(
        WASM / f"{name}.wasm", logger=log, time_provider=clock, random_provider=rand
    )
    assert spirit.call("observe") == 1
    assert rand.random_calls == 1
    assert any(text.startswith("now=1700000000000") for _, text in log.records)
    if name == "c_malloc":
        assert "[INFO] now=1700000000000 random=0.250" in log.messages
        assert "[WARN] careful" in log.messages
        assert log.errors == ["something failed"]


@pytest.mark.parametrize("name", ["c_malloc", "as_export"])
def test_assert_fails_the_call_and_the_spirit_stays(name: str) -> None:
    spirit = load_spirit(WASM / f"{name}.wasm")
    spirit.call("check", 1)
    if name == "c_malloc":
        with pytest.raises(SpiritAssertionError, match="value must be positive"):
            spirit.call("check", 0)
        spirit.call("check", 2)
    else:  # AssemblyScript's assert aborts: a panic with the source location
        where = r"value must be positive \(at as/spirit\.ts:\d+:\d+\)"
        with pytest.raises(SpiritPanic, match=where):
            spirit.call("check", 0)
        assert spirit.terminated


@pytest.mark.parametrize(("name", "text"), [
    ("c_malloc", "boom from C"), ("as_default", "boom from AssemblyScript"),
])
def test_panic_terminates(name: str, text: str) -> None:
    spirit = load_spirit(WASM / f"{name}.wasm")
    with pytest.raises(SpiritPanic, match=text):
        spirit.call("boom")
    with pytest.raises(SpiritTerminated, match=text):
        spirit.call("observe")


def test_abort_with_unreadable_strings_still_panics() -> None:
    wat = """(module (import "env" "abort" (func $a (param i32 i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "f")
        (call $a (i32.const 0x7ffffff0) (i32.const 0) (i32.const 3) (i32.const 9))))"""
    spirit = load_spirit(wat)
    with pytest.raises(SpiritPanic, match=r"unreadable abort message.*\(at <unknown>:3:9\)"):
        spirit.call("f")


# ---- reactors -----------------------------------------------------------------------------
def test_reactor_initialize_runs_once_at_load() -> None:
    log = MockLogger()
    spirit = load_spirit(WASM / "c_reactor.wasm", logger=log)
    assert log.output == "reactor ready\n"
    assert spirit.call("init_count") == 1
    assert spirit.call("lookup", 2) == 30
    assert spirit.call("init_count") == 1
    assert load_spirit(WASM / "c_malloc.wasm").call("initialized") == 42


def test_reactor_initialize_runs_under_the_limits() -> None:
    wat = """(module (func (export "_initialize") (loop $l (br $l))))"""
    with pytest.raises(LoadError, match=r"'spin': _initialize failed.*fuel"):
        load_spirit(wat, name="spin", limits=Limits(fuel=10_000))


def test_reactor_initialize_trap_is_a_load_error() -> None:
    wat = """(module (func (export "_initialize") unreachable) (func (export "f")))"""
    with pytest.raises(LoadError, match=r"Spirit 'bad': _initialize failed.*unreachable"):
        load_spirit(wat, name="bad")


# ---- detection (host-abi.md strategy 3) --------------------------------------------------
@pytest.mark.parametrize(("name", "grows"), [
    ("as_default", True), ("as_stub", True), ("as_export", True), ("c_malloc", True),
    ("c_nomalloc", True), ("c_command", True), ("c_reactor", False),
])
def test_memory_grow_found_in_real_modules(name: str, grows: bool) -> None:
    # Cross-checked with binaryen's wasm-dis when the Spirits were built.
    assert grows_memory((WASM / f"{name}.wasm").read_bytes()) is grows


@pytest.mark.parametrize(("name", "warns"), [
    ("as_default", True), ("as_stub", True), ("c_nomalloc", True),
    ("as_export", False), ("c_malloc", False), ("c_reactor", False),
])
def test_warning_at_every_load(
    name: str, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):  # the second load comes from the compile cache
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vudo.spirit"):
            spirit = load_spirit(WASM / f"{name}.wasm")
        found = [r.getMessage() for r in caplog.records if "memory.grow" in r.getMessage()]
        assert bool(found) is warns
        if warns:
            assert name in found[0] and "--exportRuntime" in found[0]
            assert "-Wl,--export=malloc,--export=free" in found[0]
            assert spirit_memory_warning(spirit) == found[0]
