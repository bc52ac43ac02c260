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
from pathlib import Path

import wasmtime

__all__ = [
    "EPOCH_TICK_SECONDS",
    "CompileCache",
    "engine",
    "ensure_ticker",
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
    from . import _native_core

    if _native_core.start_ticker():  # a native thread: ticks even while a call holds the GIL
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
        return hashlib.sha256(_CONFIG_KEY.encode() + b"\0" + wasm).hexdigest()

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


#: The process-wide compile cache used by :func:`vudo.load_spirit`.
compile_cache = CompileCache()
