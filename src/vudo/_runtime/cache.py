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
import time
from collections import OrderedDict
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


#: Default bounds of the compile cache (see :class:`CompileCache`).
DEFAULT_MAX_ENTRIES = 256
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_DISK_MAX_BYTES = 1 << 30
DEFAULT_DISK_MAX_AGE = 30 * 86400.0
_STALE_TMP_SECONDS = 3600.0


class CompileCache:
    """Compiled modules by SHA-256 of their bytes, in memory and on disk, both bounded.

    In memory: the ``max_entries`` most recently used modules, whose wasm inputs total at most
    ``max_bytes`` (a Spirit keeps its own module alive; the cache only saves recompiles).
    On disk each artifact is ``<hash>.cwasm`` with a ``.sha256`` of the artifact beside it:
    ``Module.deserialize`` trusts its input, so an artifact that does not match its checksum
    (truncated, tampered) is recompiled instead of loaded. After each write, artifacts unused
    for ``disk_max_age`` seconds are removed, then the least recently used ones until the
    directory holds at most ``disk_max_bytes``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        disk: bool = True,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        disk_max_bytes: int = DEFAULT_DISK_MAX_BYTES,
        disk_max_age: float = DEFAULT_DISK_MAX_AGE,
    ) -> None:
        for label, value in (("max_entries", max_entries), ("max_bytes", max_bytes),
                             ("disk_max_bytes", disk_max_bytes), ("disk_max_age", disk_max_age)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"CompileCache {label} must be a number >= 0 (got {value!r})")
        self.directory = directory if directory is not None else _default_cache_dir()
        self.disk = disk and self.directory is not None
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.disk_max_bytes = int(disk_max_bytes)
        self.disk_max_age = float(disk_max_age)
        self._memory: OrderedDict[str, tuple[wasmtime.Module, int]] = OrderedDict()
        self._memory_bytes = 0
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
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
        if entry is not None:
            self.stats["memory_hits"] += 1
            return entry[0]
        module = self._load_disk(key)
        if module is None:
            module = wasmtime.Module(get_engine(), wasm)
            self.stats["compiled"] += 1
            self._store_disk(key, module)
        else:
            self.stats["disk_hits"] += 1
        self._remember(key, module, len(wasm))
        return module

    def _remember(self, key: str, module: wasmtime.Module, size: int) -> None:
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_bytes -= old[1]
            self._memory[key] = (module, size)
            self._memory_bytes += size
            while self._memory and (
                len(self._memory) > self.max_entries or self._memory_bytes > self.max_bytes
            ):
                _, (_, dropped) = self._memory.popitem(last=False)
                self._memory_bytes -= dropped

    def __len__(self) -> int:
        """How many compiled modules are held in memory."""
        return len(self._memory)

    @property
    def memory_bytes(self) -> int:
        """Total size of the wasm inputs of the modules held in memory."""
        return self._memory_bytes

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
            module = wasmtime.Module.deserialize(get_engine(), data)
        except wasmtime.WasmtimeError:
            return None  # written by an incompatible engine: recompile
        try:
            os.utime(art)  # "recently used", for eviction
        except OSError:
            pass
        return module

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
        self.evict_disk()

    def evict_disk(self, *, now: float | None = None) -> int:
        """Apply the disk bounds now; returns how many artifacts were removed."""
        if not self.disk or self.directory is None:
            return 0
        now = time.time() if now is None else now
        entries: list[tuple[float, int, Path]] = []
        try:
            with os.scandir(self.directory) as it:
                for item in it:
                    try:
                        st = item.stat()
                    except OSError:
                        continue
                    if item.name.startswith(".tmp-"):
                        if now - st.st_mtime > _STALE_TMP_SECONDS:  # a writer that died
                            _unlink(Path(item.path))
                    elif item.name.endswith(".cwasm"):
                        entries.append((st.st_mtime, st.st_size, Path(item.path)))
        except OSError:
            return 0
        entries.sort()  # oldest use first
        total = sum(size for _, size, _ in entries)
        removed = 0
        for mtime, size, path in entries:
            if now - mtime <= self.disk_max_age and total <= self.disk_max_bytes:
                break
            _unlink(path)
            _unlink(path.with_suffix(".sha256"))
            total -= size
            removed += 1
        return removed

    def clear(self) -> None:
        """Forget the in-memory modules (the disk cache is kept)."""
        with self._lock:
            self._memory.clear()
            self._memory_bytes = 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


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


def configure_cache(
    directory: str | os.PathLike[str] | None = None,
    *,
    disk: bool = True,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    disk_max_bytes: int = DEFAULT_DISK_MAX_BYTES,
    disk_max_age: float = DEFAULT_DISK_MAX_AGE,
) -> CompileCache:
    """Replace the process-wide compile cache (Spirits already loaded are unaffected).

    ``directory=None`` is the default directory; ``disk=False`` keeps modules in memory only.
    The bounds are those of :class:`CompileCache`. Returns the new cache.
    """
    global _cache
    path = Path(directory) if directory is not None else None
    cache = CompileCache(
        path, disk=disk, max_entries=max_entries, max_bytes=max_bytes,
        disk_max_bytes=disk_max_bytes, disk_max_age=disk_max_age,
    )
    with _cache_lock:
        _cache = cache
    return cache
