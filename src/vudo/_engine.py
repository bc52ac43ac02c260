"""The shared wasmtime engine, the compile cache, and the epoch ticker used for timeouts.

One engine serves the process: every Spirit's store is created on it, so compiled modules are
shared. Fuel metering and epoch interruption are always on (limits are then per store, per call).
Memories never move, so a Spirit's memory base address can be cached by host functions.
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

__all__ = [
    "EPOCH_TICK_SECONDS",
    "CompileCache",
    "configure_cache",
    "engine",
    "ensure_ticker",
    "get_compile_cache",
    "get_engine",
    "wasmtime_version",
]

#: How often the epoch ticker advances the engine's epoch (timeout granularity).
EPOCH_TICK_SECONDS = 0.005

def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:  # pragma: no cover - vendored or unusual installs
        return "unknown"


#: The installed wasmtime package version (part of the compile cache key).
wasmtime_version: str = _wasmtime_version()

# Part of every cache key: a change to any of these makes old artifacts unusable.
_CONFIG_KEY = f"wasmtime={wasmtime_version};fuel=1;epoch=1;memory_may_move=0;v=1"


def _make_engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    cfg.memory_may_move = False
    from ._safety import wasm_stack_budget

    cfg.max_wasm_stack = wasm_stack_budget()  # a deep Spirit traps before the thread's stack ends
    return wasmtime.Engine(cfg)


_engine_lock = threading.Lock()
_the_engine: wasmtime.Engine | None = None


def get_engine() -> wasmtime.Engine:
    """The process-wide engine, created on first use (also available as ``engine``).

    Not created at import: creating an engine installs wasmtime's signal handlers for traps, and
    a handler installed afterwards for the same signals (``faulthandler.enable()``, which pytest
    calls after importing conftest files) turns every trap into a fatal "Illegal instruction".
    """
    global _the_engine
    eng = _the_engine
    if eng is None:
        with _engine_lock:
            if _the_engine is None:
                _the_engine = _make_engine()
            eng = _the_engine
    return eng


#: The shared engine; resolved lazily by the module ``__getattr__`` below.
engine: wasmtime.Engine


def __getattr__(name: str) -> object:
    if name == "engine":
        eng = get_engine()
        globals()["engine"] = eng  # later lookups no longer come through here
        return eng
    if name == "compile_cache":
        return get_compile_cache()  # not stored: configure_cache() may replace it
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ticker_lock = threading.Lock()
_ticker: threading.Thread | None = None


def _tick() -> None:
    event = threading.Event()
    eng = get_engine()
    while not event.wait(EPOCH_TICK_SECONDS):
        eng.increment_epoch()


def ensure_ticker() -> None:
    """Start the process-wide epoch ticker once (first Spirit with a timeout)."""
    global _ticker
    if _ticker is not None:
        return
    with _ticker_lock:
        if _ticker is None:
            _ticker = threading.Thread(target=_tick, name="vudo-epoch-ticker", daemon=True)
            _ticker.start()


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
        return hashlib.sha256(_CONFIG_KEY.encode() + b"\0" + wasm).hexdigest()

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


def get_compile_cache() -> CompileCache:
    """The process-wide compile cache used by :func:`vudo.load_spirit`.

    Made on first use with the defaults (the user cache directory, or ``VUDO_CACHE_DIR`` as
    it is *then*: empty disables the disk cache), unless :func:`configure_cache` set it first.
    """
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
