"""The compile cache: in memory, on disk, keyed by module hash and engine configuration."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

import vudo
from vudo._runtime import cache as _cache
from vudo._runtime.cache import CompileCache

ADD_WAT = """
(module (func (export "add") (param i32 i32) (result i32)
  local.get 0 local.get 1 i32.add))
"""


@pytest.fixture
def add_wasm(wat: Callable[[str], bytes]) -> bytes:
    return wat(ADD_WAT)


def artifacts(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.cwasm"))


def works(module: wasmtime.Module) -> bool:
    """Whether the cached module instantiates and computes correctly."""
    return vudo.load_spirit(module).call("add", 40, 2) == 42


def test_session_cache_dir_is_isolated() -> None:
    # conftest points the process-wide cache at a temporary directory before vudo is imported.
    expected = Path(os.environ["VUDO_CACHE_DIR"])
    assert _cache.get_cache().directory == expected
    assert _cache.get_cache().disk


def test_empty_cache_dir_variable_disables_the_disk_cache(
    monkeypatch: pytest.MonkeyPatch, add_wasm: bytes
) -> None:
    monkeypatch.setenv("VUDO_CACHE_DIR", "")
    cache = CompileCache()
    assert cache.directory is None and not cache.disk
    assert works(cache.get_or_compile(add_wasm))


def test_second_compile_hits_the_memory_cache(tmp_path: Path, add_wasm: bytes) -> None:
    cache = CompileCache(tmp_path)
    first = cache.get_or_compile(add_wasm)
    second = cache.get_or_compile(add_wasm)
    assert second is first
    assert cache.stats == {"compiled": 1, "memory_hits": 1, "disk_hits": 0}
    assert works(first)


def test_a_new_cache_on_the_same_directory_hits_the_disk(tmp_path: Path, add_wasm: bytes) -> None:
    CompileCache(tmp_path).get_or_compile(add_wasm)
    assert len(artifacts(tmp_path)) == 1
    fresh = CompileCache(tmp_path)
    module = fresh.get_or_compile(add_wasm)
    assert fresh.stats == {"compiled": 0, "memory_hits": 0, "disk_hits": 1}
    assert works(module)


def test_clear_forgets_memory_but_keeps_disk(tmp_path: Path, add_wasm: bytes) -> None:
    cache = CompileCache(tmp_path)
    cache.get_or_compile(add_wasm)
    cache.clear()
    cache.get_or_compile(add_wasm)
    assert cache.stats == {"compiled": 1, "memory_hits": 0, "disk_hits": 1}


def test_different_modules_get_different_entries(
    tmp_path: Path, wat: Callable[[str], bytes]
) -> None:
    cache = CompileCache(tmp_path)
    a = cache.get_or_compile(wat(ADD_WAT))
    b = cache.get_or_compile(wat(ADD_WAT.replace("i32.add", "i32.sub")))
    assert a is not b
    assert cache.stats["compiled"] == 2
    assert len(artifacts(tmp_path)) == 2
    assert vudo.load_spirit(b).call("add", 40, 2) == 38


def test_key_includes_the_engine_configuration(
    tmp_path: Path, add_wasm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CompileCache(tmp_path)
    key = cache.key(add_wasm)
    assert key != hashlib.sha256(add_wasm).hexdigest()
    cache.get_or_compile(add_wasm)
    monkeypatch.setattr(_cache, "CONFIG_KEY", _cache.CONFIG_KEY + ";other-option=1")
    other = CompileCache(tmp_path)
    assert other.key(add_wasm) != key
    other.get_or_compile(add_wasm)
    assert other.stats["disk_hits"] == 0  # artifacts of another configuration are not used
    assert other.stats["compiled"] == 1


def test_corrupted_artifact_is_detected_and_recompiled(tmp_path: Path, add_wasm: bytes) -> None:
    CompileCache(tmp_path).get_or_compile(add_wasm)
    [artifact] = artifacts(tmp_path)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    cache = CompileCache(tmp_path)
    module = cache.get_or_compile(add_wasm)
    assert cache.stats == {"compiled": 1, "memory_hits": 0, "disk_hits": 0}
    assert works(module)
    # The good artifact was written back: the next cache loads it from disk.
    again = CompileCache(tmp_path)
    assert works(again.get_or_compile(add_wasm))
    assert again.stats["disk_hits"] == 1


def test_truncated_artifact_is_recompiled(tmp_path: Path, add_wasm: bytes) -> None:
    CompileCache(tmp_path).get_or_compile(add_wasm)
    [artifact] = artifacts(tmp_path)
    artifact.write_bytes(artifact.read_bytes()[:100])
    cache = CompileCache(tmp_path)
    assert works(cache.get_or_compile(add_wasm))
    assert cache.stats["compiled"] == 1


def test_artifact_from_an_incompatible_engine_is_recompiled(
    tmp_path: Path, add_wasm: bytes
) -> None:
    # A checksum that matches, but content the engine cannot deserialize.
    CompileCache(tmp_path).get_or_compile(add_wasm)
    [artifact] = artifacts(tmp_path)
    junk = b"\x7fELF not really an artifact" * 10
    artifact.write_bytes(junk)
    artifact.with_suffix(".sha256").write_text(hashlib.sha256(junk).hexdigest())
    cache = CompileCache(tmp_path)
    assert works(cache.get_or_compile(add_wasm))
    assert cache.stats["compiled"] == 1


def test_missing_checksum_is_recompiled(tmp_path: Path, add_wasm: bytes) -> None:
    CompileCache(tmp_path).get_or_compile(add_wasm)
    [artifact] = artifacts(tmp_path)
    artifact.with_suffix(".sha256").unlink()
    cache = CompileCache(tmp_path)
    assert works(cache.get_or_compile(add_wasm))
    assert cache.stats["compiled"] == 1


def test_unusable_cache_directory_only_costs_a_compile(tmp_path: Path, add_wasm: bytes) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("occupied")
    cache = CompileCache(not_a_dir)
    assert works(cache.get_or_compile(add_wasm))
    assert cache.stats["compiled"] == 1
    assert not_a_dir.read_text() == "occupied"


def test_disk_false_writes_nothing(tmp_path: Path, add_wasm: bytes) -> None:
    cache = CompileCache(tmp_path, disk=False)
    cache.get_or_compile(add_wasm)
    assert list(tmp_path.iterdir()) == []
    assert cache.get_or_compile(add_wasm) is not None
    assert cache.stats["memory_hits"] == 1


def test_invalid_module_raises_and_is_not_cached(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    with pytest.raises(wasmtime.WasmtimeError):
        cache.get_or_compile(b"\0asm\x01\0\0\0\xff\xff")
    assert list(tmp_path.iterdir()) == []


def test_load_spirit_uses_the_cache(
    tmp_path: Path, add_wasm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CompileCache(tmp_path)
    monkeypatch.setattr(_cache, "_cache", cache)
    source = tmp_path / "add.wasm"
    source.write_bytes(add_wasm)
    first = vudo.load_spirit(source)
    second = vudo.load_spirit(add_wasm)  # same module, other source kind
    assert cache.stats == {"compiled": 1, "memory_hits": 1, "disk_hits": 0}
    assert first.module is second.module
    assert first.call("add", 1, 2) == second.call("add", 3, 4) - 4
    vudo.load_spirit(add_wasm, cache=False)
    assert cache.stats["compiled"] == 1  # cache=False bypasses it entirely


# ------------------------------------------------------------------------------------------
# Bounds: a long-running host that loads many modules does not keep them all
# ------------------------------------------------------------------------------------------
def numbered(n: int) -> bytes:
    """A distinct small module per ``n``."""
    return bytes(wasmtime.wat2wasm(f'(module (func (export "f") (result i32) i32.const {n}))'))


def test_memory_cache_keeps_only_the_most_recently_used_modules() -> None:
    cache = CompileCache(None, disk=False, max_entries=3)
    modules = [numbered(i) for i in range(5)]
    for wasm in modules:
        cache.get_or_compile(wasm)
    assert len(cache) == 3
    cache.get_or_compile(modules[4])  # still held
    cache.get_or_compile(modules[0])  # evicted: compiled again
    assert cache.stats == {"compiled": 6, "memory_hits": 1, "disk_hits": 0}


def test_memory_cache_is_bounded_in_bytes() -> None:
    modules = [numbered(i) for i in range(4)]
    cache = CompileCache(None, disk=False, max_bytes=2 * len(modules[0]))
    for wasm in modules:
        cache.get_or_compile(wasm)
    assert len(cache) == 2 and cache.memory_bytes <= 2 * len(modules[0])


def test_disk_cache_evicts_least_recently_used_beyond_its_size(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    for i in range(3):
        cache.get_or_compile(numbered(i))
    arts = sorted(artifacts(tmp_path), key=lambda p: p.stat().st_mtime)
    assert len(arts) == 3
    for age, art in enumerate(reversed(arts)):  # set the order explicitly: arts[0] oldest
        os.utime(art, (1_000_000 - age, 1_000_000 - age))
    cache.disk_max_bytes = sum(p.stat().st_size for p in arts[1:])
    assert cache.evict_disk(now=1_000_001) == 1
    assert artifacts(tmp_path) == sorted(arts[1:])
    assert not arts[0].with_suffix(".sha256").exists()


def test_disk_cache_evicts_artifacts_unused_for_too_long(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path, disk_max_age=86400)
    cache.get_or_compile(numbered(1))
    cache.get_or_compile(numbered(2))
    old, new = artifacts(tmp_path)
    os.utime(old, (0, 0))
    assert cache.evict_disk() == 1
    assert artifacts(tmp_path) == [new]


def test_a_disk_hit_counts_as_a_use(tmp_path: Path) -> None:
    CompileCache(tmp_path).get_or_compile(numbered(7))
    (art,) = artifacts(tmp_path)
    os.utime(art, (0, 0))
    CompileCache(tmp_path, disk_max_age=86400).get_or_compile(numbered(7))
    assert art.stat().st_mtime > 86400


def test_configure_cache_replaces_the_process_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, add_wasm: bytes
) -> None:
    monkeypatch.setattr(_cache, "_cache", _cache.get_cache())  # restored after
    cache = vudo.configure_cache(tmp_path, max_entries=1)
    assert _cache.get_cache() is cache and cache.max_entries == 1
    vudo.load_spirit(add_wasm)
    assert artifacts(tmp_path) and cache.stats["compiled"] == 1
    memory_only = vudo.configure_cache(disk=False)
    assert not memory_only.disk


@pytest.mark.parametrize("bad", [{"max_entries": -1}, {"disk_max_age": float("nan")},
                                 {"max_bytes": "1MiB"}])
def test_cache_bounds_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CompileCache(None, disk=False, **bad)  # type: ignore[arg-type]
