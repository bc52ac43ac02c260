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
