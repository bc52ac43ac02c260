"""Fuzzing: the loader and the host functions against hostile input.

1. The loader, given random bytes, a valid header with a random tail, WAT with random text, or a
   valid module with one byte changed, one byte dropped or the tail cut off, either loads or
   raises :class:`vudo.LoadError` (``LinkError`` included): nothing else, never a crash. A
   mutant that loads is called (under fuel and memory limits) and fails only with ``VudoError``.
2. The compile cache never deserializes a tampered artifact: it recompiles instead.
3. Isolation: an "attacker" Spirit calls the host functions with random pointers, lengths, log
   levels, effect ids and sizes; each call returns a documented result or raises a
   ``VudoError``, and a "victim" Spirit in the same Séance keeps byte-identical memory.

``tests/test_host_fuzz.py`` covers each host function's out-of-bounds errors in detail.

Longer runs, outside CI (see docs/security.md, "Fuzzing")::

    HYPOTHESIS_PROFILE=long python -m pytest -o timeout=0 tests/test_fuzz.py
    python scripts/fuzz.py --minutes 30
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

import vudo
from vudo import Limits, LoadError, Seance, Spirit, VudoError
from vudo._memory import PAGE_SIZE
from vudo._runtime.cache import CompileCache
from vudo.abi import HOST_FUNCTIONS_BY_NAME, EffectId, LogLevel, ResultCode
from vudo.errors import SpiritTerminated

# ------------------------------------------------------------------------------------------
# Profiles: "fuzz" for CI (the default here), "long" for HYPOTHESIS_PROFILE=long.
# ------------------------------------------------------------------------------------------
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fuzz", max_examples=100, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("VUDO_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=_HEALTH,
)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz")
#: The settings every property here runs with (``fuzz`` unless the environment asks for more).
FUZZ = settings.get_profile(_PROFILE if _PROFILE in ("fuzz", "long") else "fuzz")

RESULT_CODES = {int(c) for c in ResultCode}
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def note(value: str) -> None:
    """Count an outcome in ``--hypothesis-show-statistics`` (ignored outside a property)."""
    if currently_in_test_context():
        event(value)


class SilentLogger:
    """A Logger that drops everything (fuzzed Spirits print megabytes of noise)."""

    def log(self, level: LogLevel, message: str) -> None:
        pass

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def print(self, message: str) -> None:
        pass

    def println(self, message: str) -> None:
        pass


# ------------------------------------------------------------------------------------------
# Seeds for the loader: a module touching most sections, plus the real Spirits when present.
# ------------------------------------------------------------------------------------------
SEED_WAT = """
(module
  (type $pl (func (param i32 i32)))
  (import "vudo" "vudo_print" (func $print (type $pl)))
  (import "loa" "vudo_alloc" (func $alloc (param i32) (result i32)))
  (import "env" "vudo_now" (func $now (result i64)))
  (memory (export "memory") 1 4)
  (global $counter (mut i32) (i32.const 7))
  (table 2 funcref)
  (elem (i32.const 0) $get $bump)
  (data (i32.const 1024) "Hello, fuzz!")
  (func $get (export "get") (result i32) global.get $counter)
  (func $bump (export "bump") (param $by i32) (result i32)
    (global.set $counter (i32.add (global.get $counter) (local.get $by)))
    global.get $counter)
  (func (export "greet") (call $print (i32.const 1024) (i32.const 12)))
  (func (export "indirect") (param i32) (result i32)
    (call_indirect (result i32) (local.get 0)))
  (func (export "sum") (param $n i32) (result i64) (local $acc i64)
    (block (loop
      (br_if 1 (i32.eqz (local.get $n)))
      (local.set $acc (i64.add (local.get $acc) (i64.extend_i32_u (local.get $n))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      br 0))
    local.get $acc)
  (func (export "heap") (result i32) (call $alloc (i32.const 16)))
  (func (export "clock") (result i64) call $now))
"""
SEED = bytes(wasmtime.wat2wasm(SEED_WAT))
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "spirits"
SEEDS: list[bytes] = [SEED] + [
    p.read_bytes() for p in sorted(_SHARED.glob("*.wasm")) if _SHARED.is_dir()
]
HEADER = b"\0asm\x01\0\0\0"

#: Limits a loaded mutant runs under: its calls cannot spin or balloon.
MUTANT_LIMITS = Limits(fuel=1_000_000, max_memory=64 * PAGE_SIZE, timeout=10)


def _zero(t: str) -> int | float:
    return 0.0 if t in ("f32", "f64") else 0


def load_or_load_error(source: Any, *, cache: bool = False) -> Spirit | None:
    """Load ``source``; ``None`` for a LoadError. Anything else propagates and fails the test."""
    try:
        spirit = vudo.load_spirit(
            source, cache=cache, logger=SilentLogger(), limits=MUTANT_LIMITS)
    except LoadError as exc:
        assert str(exc)  # the message renders
        note(f"load: {type(exc).__name__}")
        return None
    note("load: loaded")
    return spirit


def exercise(spirit: Spirit) -> None:
    """Call every export with zeros: each returns or raises a VudoError."""
    try:
        for name in spirit.functions:
            params, _ = spirit.signature(name)
            try:
                spirit.call(name, *(_zero(t) for t in params))
            except VudoError as exc:
                note(f"call: {type(exc).__name__}")
    finally:
        spirit.close()


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    """A seed module with one byte replaced, one byte removed, one inserted, or truncated."""
    seed = draw(st.sampled_from(SEEDS))
    kind = draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
    i = draw(st.integers(0, len(seed) - 1))
    if kind == "replace":
        byte = draw(st.integers(0, 255))
        return seed[:i] + bytes([byte]) + seed[i + 1:]
    if kind == "delete":
        return seed[:i] + seed[i + 1:]
    if kind == "insert":
        return seed[:i] + bytes([draw(st.integers(0, 255))]) + seed[i:]
    return seed[:i]


def test_seed_modules_load_and_run() -> None:
    """The mutation seeds are valid (otherwise the mutation test proves little)."""
    for seed in SEEDS:
        spirit = load_or_load_error(seed)
        assert spirit is not None
        exercise(spirit)


@FUZZ
@given(data=st.binary(max_size=512))
def test_loader_random_bytes(data: bytes) -> None:
    spirit = load_or_load_error(data)
    if spirit is not None:  # only possible for a valid module, e.g. the bare header
        exercise(spirit)


@FUZZ
@given(tail=st.binary(max_size=256), cache=st.booleans())
def test_loader_valid_header_random_tail(tail: bytes, cache: bool) -> None:
    spirit = load_or_load_error(HEADER + tail, cache=cache)
    if spirit is not None:
        exercise(spirit)


@FUZZ
@given(module=mutants(), cache=st.booleans())
def test_loader_mutated_valid_modules(module: bytes, cache: bool) -> None:
    spirit = load_or_load_error(module, cache=cache)
    if spirit is not None:
        exercise(spirit)


@FUZZ
@given(text=st.text(max_size=200))
def test_loader_random_wat_text(text: str) -> None:
    spirit = load_or_load_error("(module " + text)
    if spirit is not None:
        exercise(spirit)


@FUZZ
@given(name=st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="/\\.\0"),
    min_size=1, max_size=64,
))
def test_loader_random_path_in_an_empty_directory(name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="vudo-fuzz-") as tmp:
        with pytest.raises(LoadError):
            vudo.load_spirit(str(Path(tmp) / name))


@pytest.mark.parametrize("path", ["spirit\0.wasm", "spirit\ud800.wasm"], ids=["nul", "surrogate"])
def test_loader_unencodable_path_raises_load_error(path: str) -> None:
    with pytest.raises(LoadError):
        vudo.load_spirit(path)


# ------------------------------------------------------------------------------------------
# The compile cache: a tampered artifact is never deserialized
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vudo-fuzz-cache-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@FUZZ
@given(
    how=st.sampled_from(["flip", "truncate", "append", "digest"]),
    where=st.floats(0, 1, exclude_max=True),
    byte=st.integers(1, 255),
)
def test_compile_cache_recompiles_tampered_artifacts(
    cache_dir: Path, how: str, where: float, byte: int,
) -> None:
    directory = cache_dir / hashlib.sha256(f"{how}{where}{byte}".encode()).hexdigest()[:16]
    first = CompileCache(directory)
    first.get_or_compile(SEED)
    (art,) = directory.glob("*.cwasm")
    (digest,) = directory.glob("*.sha256")
    data = bytearray(art.read_bytes())
    i = int(where * len(data))
    if how == "flip":
        data[i] ^= byte
        art.write_bytes(bytes(data))
    elif how == "truncate":
        art.write_bytes(bytes(data[:i]))
    elif how == "append":
        art.write_bytes(bytes(data) + bytes([byte]))
    else:
        digest.write_text(hashlib.sha256(bytes([byte])).hexdigest())
    second = CompileCache(directory)
    module = second.get_or_compile(SEED)
    assert second.stats == {"compiled": 1, "memory_hits": 0, "disk_hits": 0}
    spirit = vudo.load_spirit(module, logger=SilentLogger())
    try:
        assert spirit.call("bump", 3) == 10
        assert spirit.call("sum", 100) == 5050
    finally:
        spirit.close()
    # The recompiled artifact replaced the tampered one: a third cache reads it from disk.
    third = CompileCache(directory)
    third.get_or_compile(SEED)
    assert third.stats["disk_hits"] == 1
    shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# Isolation: hammering one Spirit's host functions leaves another Spirit's memory untouched
# ------------------------------------------------------------------------------------------
#: The host functions hammered, each exported by the attacker as a wrapper of the same name
#: taking the raw i32 arguments. vudo_sleep (would sleep for random times) and vudo_panic
#: (ends the Spirit at once) are left out.
HAMMERED = (
    "vudo_print", "vudo_println", "vudo_log", "vudo_error", "vudo_alloc", "vudo_free",
    "vudo_realloc", "vudo_send", "vudo_recv", "vudo_pending", "vudo_broadcast",
    "vudo_random_bytes", "vudo_emit_effect", "vudo_subscribe", "vudo_assert",
    "vudo_free_message",
)
VICTIM_NAME_AT, CHANNEL_AT = 64, 80  # where the attacker keeps "victim" and "news"
ATTACKER_CAP = 4 * PAGE_SIZE


def _attacker_wat() -> str:
    imports, wrappers = [], []
    for name in HAMMERED:
        spec = HOST_FUNCTIONS_BY_NAME[name]
        params = " ".join(spec.param_types)
        results = " ".join(spec.results)
        sig = (f"(param {params})" if params else "") + (f" (result {results})" if results else "")
        imports.append(f'  (import "vudo" "{name}" (func ${name} {sig}))')
        gets = " ".join(f"local.get {i}" for i in range(len(spec.params)))
        wrappers.append(f'  (func (export "{name}") {sig} {gets} call ${name})')
    send = HOST_FUNCTIONS_BY_NAME["vudo_send"]
    assert send.param_types == ("i32", "i32", "i32", "i32")
    return "\n".join([
        "(module",
        *imports,
        '  (memory (export "memory") 1)',
        f'  (data (i32.const {VICTIM_NAME_AT}) "victim")',
        f'  (data (i32.const {CHANNEL_AT}) "news")',
        *wrappers,
        # The same host functions aimed at real names, so the fuzz reaches the victim's inbox
        # and a registered channel, not only names made of random bytes.
        '  (func (export "send_to_victim") (param i32 i32) (result i32)',
        f"    (call $vudo_send (i32.const {VICTIM_NAME_AT}) (i32.const 6)"
        " (local.get 0) (local.get 1)))",
        '  (func (export "subscribe_news") (result i32)',
        f"    (call $vudo_subscribe (i32.const {CHANNEL_AT}) (i32.const 4)))",
        ")",
    ])


ATTACKER = bytes(wasmtime.wat2wasm(_attacker_wat()))
VICTIM = bytes(wasmtime.wat2wasm("""
(module
  (memory (export "memory") 2)
  (data (i32.const 1024) "the victim's own data")
  (func (export "checksum") (result i32) (local $i i32) (local $acc i32)
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (i32.const 131072)))
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31))
                               (i32.load8_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      br 0))
    local.get $acc))
"""))
#: What the victim's memory holds before each example: its module data overwritten with a
#: fixed pseudo-random pattern, plus a host-heap block.
VICTIM_PATTERN = hashlib.shake_256(b"victim").digest(2 * PAGE_SIZE)

# Argument strategies, biased towards interesting values: boundaries of the attacker's memory
# and of i32, small lengths, and anything at all.
_EDGES = [0, 1, 4, 7, 8, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 8, ATTACKER_CAP, I32_MAX, I32_MIN,
          -1, VICTIM_NAME_AT, CHANNEL_AT]
ANY_I32 = st.integers(I32_MIN, I32_MAX)
POINTERS = st.one_of(st.sampled_from(_EDGES), st.integers(0, ATTACKER_CAP + 64), ANY_I32)
LENGTHS = st.one_of(st.sampled_from([0, 1, 4, 6, 8, 64, PAGE_SIZE, 1 << 20, (1 << 20) + 1, -1,
                                     I32_MAX]), st.integers(0, 4096), ANY_I32)
LEVELS = st.one_of(st.sampled_from([*map(int, LogLevel), -1, 4, 5]), ANY_I32)
EFFECT_IDS = st.one_of(st.sampled_from([*map(int, EffectId), 255, 256, 1000]), ANY_I32)
CONDS = st.one_of(st.sampled_from([0, 1, -1]), ANY_I32)


def _arg_strategy(param: str) -> st.SearchStrategy[int]:
    if param == "level":
        return LEVELS
    if param == "id":
        return EFFECT_IDS
    if param == "cond":
        return CONDS
    if param.endswith("ptr"):
        return POINTERS
    return LENGTHS  # len, size, old, new


def _call_strategy(name: str) -> st.SearchStrategy[tuple[str, tuple[int, ...]]]:
    spec = HOST_FUNCTIONS_BY_NAME[name]
    args = st.tuples(*(_arg_strategy(p) for p, _ in spec.params))
    return st.tuples(st.just(name), args)


CALLS = st.one_of(
    *(_call_strategy(name) for name in HAMMERED),
    st.tuples(st.just("send_to_victim"), st.tuples(POINTERS, LENGTHS)),
    st.tuples(st.just("subscribe_news"), st.just(())),
)


def check_result(attacker: Spirit, name: str, args: tuple[int, ...], result: Any) -> None:
    """A call that returned gave a value the ABI documents."""
    if name in ("vudo_alloc", "vudo_realloc"):
        size = args[0] if name == "vudo_alloc" else args[2]
        assert isinstance(result, int)
        if result != 0:
            mem = attacker.memory
            assert result % 8 == 0, f"{name}{args} -> {result}: not 8-byte aligned"
            assert mem.heap_floor <= result, f"{name}{args} -> {result}: below the host heap"
            assert result + size <= mem.size <= ATTACKER_CAP, f"{name}{args} -> {result}"
    elif name in ("vudo_send", "vudo_broadcast", "vudo_emit_effect", "vudo_subscribe",
                  "send_to_victim", "subscribe_news"):
        assert result in RESULT_CODES, f"{name}{args} -> {result!r}"
    elif name == "vudo_recv":
        assert result == 0 or attacker.memory.heap_floor <= result < attacker.memory.size
    elif name == "vudo_pending":
        assert 0 <= result
    else:
        assert result is None, f"{name}{args} -> {result!r}"


@FUZZ
@given(calls=st.lists(CALLS, min_size=1, max_size=25))
def test_hammering_host_functions_never_touches_another_spirits_memory(
    calls: list[tuple[str, tuple[int, ...]]],
) -> None:
    with Seance(logger=SilentLogger(), channels=("news",)) as session:
        victim = session.summon("victim", VICTIM, limits=Limits(max_inbox=8))
        vmem = victim.memory
        vmem.write_bytes(0, VICTIM_PATTERN)
        block = vmem.alloc(256)
        assert block != 0
        vmem.write_bytes(block, b"\xa5" * 256)
        before = vmem.read_bytes(0, vmem.size)
        checksum = victim.call("checksum")

        attacker = session.summon(
            "attacker", ATTACKER,
            limits=Limits(max_memory=ATTACKER_CAP, max_message_size=4096, max_inbox=16),
        )
        for name, args in calls:
            try:
                result = attacker.call(name, *args)
            except VudoError as exc:
                assert str(exc)
                note(f"{name}: {type(exc).__name__}")
                continue
            check_result(attacker, name, args, result)
            note(f"{name}: {'None' if result is None else '0' if result == 0 else 'nonzero'}")

        assert vmem.size == len(before)
        assert vmem.read_bytes(0, vmem.size) == before, "the victim's memory changed"
        assert victim.call("checksum") == checksum
        assert not victim.terminated
        assert session.pending("victim") <= 8
        # The attacker is either still usable or cleanly terminated (the TERMINATE effect).
        if attacker.terminated:
            with pytest.raises(SpiritTerminated):
                attacker.call("vudo_pending")
        else:
            assert attacker.call("vudo_pending") >= 0


def test_attacker_module_exports_a_wrapper_per_hammered_host_function() -> None:
    spirit = vudo.load_spirit(ATTACKER, logger=SilentLogger())
    try:
        for name in HAMMERED:
            spec = HOST_FUNCTIONS_BY_NAME[name]
            assert spirit.signature(name) == (spec.param_types, spec.results)
    finally:
        spirit.close()
