"""The compile cache: compiled modules by hash, in memory (bounded) and on disk (verified).

It is configured explicitly (:func:`configure_cache`); until then the default directory is
chosen on first use (``VUDO_CACHE_DIR`` if set, empty disabling the disk cache, else the user
cache directory), never at import.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import wasmtime

from .engine import CONFIG_KEY, get_engine

__all__ = ["CompileCache", "configure_cache", "get_cache"]


def _default_cache_dir() -> Path | None:
    env = os.environ.get("VUDO_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None  # VUDO_CACHE_DIR="" disables the disk cache
    import platformdirs

    return Path(platformdirs.user_cache_dir("vudo")) / "modules"


class CompileCache:
    """Compiled modules by SHA-256 of their bytes, in memory and on disk.

    On disk each artifact is ``<hash>.cwasm`` with a ``.sha256`` of the artifact beside it:
    ``Module.deserialize`` trusts its input, so an artifact that does not match its checksum
    (truncated, tampered) is recompiled instead of loaded.
    """

    def __init__(self, directory: Path | None = None, *, disk: bool = True) -> None:
        self.directory = directory if directory is not None else _default_cache_dir()
        self.disk = disk and self.directory is not None
        self._memory: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()
        #: Counters for tests and benchmarks: how each module was obtained.
        self.stats = {"compiled": 0, "memory_hits": 0, "disk_hits": 0}

    def key(self, wasm: bytes) -> str:
        """The cache key of ``wasm``: its hash and the engine configuration."""
        return hashlib.sha256(CONFIG_KEY.encode() + b"\0" + wasm).hexdigest()

    def get_or_compile(self, wasm: bytes) -> wasmtime.Module:
        """Return the compiled module for ``wasm``, compiling only on a miss.

        Raises ``wasmtime.WasmtimeError`` when ``wasm`` is not a valid module.
        """
        key = self.key(wasm)
        with self._lock:
            module = self._memory.get(key)
        if module is not None:
            self.stats["memory_hits"] += 1
            return module
        module = self._load_disk(key)
        if module is None:
            module = wasmtime.Module(get_engine(), wasm)
            self.stats["compiled"] += 1
            self._store_disk(key, module)
        else:
            self.stats["disk_hits"] += 1
        with self._lock:
            self._memory[key] = module
        return module

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.directory is not None
        return self.directory / f"{key}.cwasm", self.directory / f"{key}.sha256"

    def _load_disk(self, key: str) -> wasmtime.Module | None:
        if not self.disk:
            return None
        art, digest = self._paths(key)
        try:
            data = art.read_bytes()
            expected = digest.read_text().strip()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != expected:
            return None
        try:
            return wasmtime.Module.deserialize(get_engine(), data)
        except wasmtime.WasmtimeError:
            return None  # written by an incompatible engine: recompile

    def _store_disk(self, key: str, module: wasmtime.Module) -> None:
        if not self.disk:
            return
        art, digest = self._paths(key)
        try:
            assert self.directory is not None
            self.directory.mkdir(parents=True, exist_ok=True)
            data = bytes(module.serialize())
            # Write-then-rename so a concurrent reader never sees half an artifact.
            for path, content in ((art, data), (digest, hashlib.sha256(data).hexdigest().encode())):
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
                os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full cache directory only costs a recompile next time

    def clear(self) -> None:
        """Forget the in-memory modules (the disk cache is kept)."""
        with self._lock:
            self._memory.clear()


_cache_lock = threading.Lock()
_cache: CompileCache | None = None


def get_cache() -> CompileCache:
    """The process-wide compile cache used by :func:`vudo.load_spirit`."""
    global _cache
    cache = _cache
    if cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = CompileCache()
            cache = _cache
    return cache


def configure_cache(directory: str | os.PathLike[str] | None = None, *, disk: bool = True) -> None:
    """Replace the process-wide compile cache: ``directory`` for compiled artifacts
    (``None``: the default location), ``disk=False`` to keep compiled modules in memory only."""
    global _cache
    with _cache_lock:
        _cache = CompileCache(Path(directory) if directory is not None else None, disk=disk)
