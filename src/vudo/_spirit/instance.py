"""Creating a Spirit's store under its limits and instantiating a module from a link plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wasmtime

from .._config import Limits
from .._host import HostContext
from .._host.loas import CORE_LOA
from .._linking import LinkPlan, bind_host_function
from .._runtime import budget, cnative, ffi, valtypes
from .._runtime.asyncbridge import AsyncBridge
from .._runtime.backend import Backend
from .._runtime.callstate import CallState, trap_cause
from .._runtime.engine import get_engine
from ..errors import LinkError, LoadError, UnresolvedImport
from .native_bus import native_bus

__all__ = ["instantiate", "link_externs", "new_store"]

_UNLIMITED_FUEL = 2**63 - 1


def new_store(
    module: wasmtime.Module, limits: Limits, state: CallState, backend: Backend,
    keepalive: list[Any],
) -> wasmtime.Store:
    """A store of its own for one Spirit: limits, fuel, the epoch callback of ``state``."""
    store = wasmtime.Store(get_engine())
    if limits.max_memory is not None:
        # One budget for all memories and tables together (table elements: 8 bytes each).
        store.set_limits(**budget.store_limits(valtypes.shape_of(module), limits.max_memory))
    store.set_fuel(_UNLIMITED_FUEL)
    store.set_epoch_deadline(1)
    epoch_cb: Any = state.on_epoch
    if not cnative.set_epoch_callback(store, epoch_cb, interrupt="interrupt"):
        epoch_cb = ffi.EPOCH_CALLBACK(epoch_cb)
        ffi.set_epoch_callback(store, epoch_cb)
    keepalive.append(epoch_cb)
    state.set_fuel = store.set_fuel
    state.set_epoch_deadline = store.set_epoch_deadline
    backend.ensure_ticker()
    return store


def link_externs(
    plan: LinkPlan, store: wasmtime.Store, ctx: HostContext, state: CallState, backend: Backend,
    bridge: AsyncBridge, *, trace: bool, keepalive: list[Any], default_time: bool,
    default_random: bool,
) -> tuple[list[Any], wasmtime.Memory | None, list[Callable[[int, Any], None]]]:
    """One extern per import of ``plan`` (host functions bound to ``ctx``), the imported
    memory if there is one, and the binders of built-in host functions (called with the
    memory's address and the logger once the instance exists). Raises one ``LinkError`` for
    every derived signature that does not match.

    The core Loa's own functions may be served by the backend itself (the native core's C
    clocks, randomness and text output, and messaging and host heap over the C bus and heap),
    unless the Spirit is traced.
    """
    externs: list[Any] = []
    imported_memory: wasmtime.Memory | None = None
    problems: list[UnresolvedImport] = []
    binders: list[Callable[[int, Any], None]] = []
    # The C messaging/heap functions, when the broker and heap are the C ones (native_bus.py).
    bus = None if trace or backend.name != "native" else native_bus(plan, ctx)
    for entry in plan.imports:
        if entry.memory_type is not None:
            imported_memory = wasmtime.Memory(store, entry.memory_type)
            externs.append(imported_memory)
            continue
        if entry.engine_wasi:  # [toolchains] a WASI function wasmtime implements
            assert ctx.wasi is not None
            externs.append(ctx.wasi.engine_function(entry.name))
            continue
        python: Any = None
        if not trace and entry.host is not None and entry.host is CORE_LOA.functions.get(
            entry.name
        ):
            if bus is not None and entry.name in cnative.BUS_FUNCTIONS:
                python = bind_host_function(entry, ctx, bridge, trace=False)  # its rare paths
            made = backend.builtin(
                state, store, entry.name, entry.params, entry.results, keepalive,
                default_time=default_time, default_random=default_random,
                bus=bus if python is not None else None, python=python,
            )
            if made is not None:
                externs.append(made[0])
                binders.append(made[1])
                continue
        fn = python if python is not None else bind_host_function(
            entry, ctx, bridge, trace=trace)
        if isinstance(fn, UnresolvedImport):
            problems.append(fn)
            continue
        externs.append(backend.host_func(
            state, store, entry.name, entry.params, entry.results, fn, keepalive,
        ))
    if problems:
        raise LinkError(plan.source, problems)
    return externs, imported_memory, binders


def instantiate(
    store: wasmtime.Store, module: wasmtime.Module, externs: list[Any], state: CallState,
    source: str,
) -> wasmtime.Instance:
    """Instantiate; a start function runs with the budget of one call (fuel, timeout)."""
    limits = state.limits
    state.arm_store()
    try:
        return wasmtime.Instance(store, module, externs)
    except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
        pending, state.pending = state.pending, None
        if state.interrupt == "keyboard":
            raise KeyboardInterrupt(f"interrupted Spirit {state.name!r} while it started") from None
        if pending is not None and not isinstance(pending, Exception):
            raise pending from None  # SystemExit from a signal handler, KeyboardInterrupt
        if pending is not None:
            raise LoadError(source, f"start function failed: {pending}") from pending
        if state.interrupt == "timeout":
            raise LoadError(
                source, f"start function exceeded its timeout ({limits.timeout}s)"
            ) from None
        code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            raise LoadError(source, f"start function exhausted its fuel ({limits.fuel})") from None
        raise LoadError(source, f"instantiation failed: {trap_cause(str(exc))}") from None
    finally:
        state.deadline = None
        state.interrupt = None
        store.set_fuel(_UNLIMITED_FUEL)
