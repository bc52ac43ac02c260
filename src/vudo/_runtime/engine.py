"""The shared wasmtime engine and the epoch ticker used for timeouts.

One engine serves the process: every Spirit's store is created on it, so compiled modules are
shared. Fuel metering and epoch interruption are always on (limits are then per store, per call).
Memories never move, so a Spirit's memory base address can be cached by host functions.
"""

from __future__ import annotations

import threading

import wasmtime

__all__ = [
    "CONFIG_KEY",
    "EPOCH_TICK_SECONDS",
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
CONFIG_KEY = f"wasmtime={wasmtime_version};fuel=1;epoch=1;memory_may_move=0;v=1"


def _make_engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    cfg.memory_may_move = False
    from .safety import wasm_stack_budget
    from .stackcheck import record_budget

    # A deep Spirit traps before the thread's stack ends (threads made later with less stack
    # are refused by the call paths: see stackcheck).
    cfg.max_wasm_stack = record_budget(wasm_stack_budget())
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
