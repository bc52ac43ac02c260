"""The native core, when it is built and matches the loaded wasmtime; ``None`` answers otherwise.

:mod:`vudo._cnative` (C, ``src/vudo/_native/``) implements the per-export call path, the host
trampoline, the built-in host functions that need no Python (clocks and randomness with the
default providers), the epoch-deadline callback and the epoch ticker thread. It binds to the
libwasmtime that ``wasmtime`` already loaded, and is used only after :func:`_load` checked the
wasmtime version and struct sizes. Each maker here returns ``None`` when the native path cannot
serve a case (extension absent, ``VUDO_NATIVE=0``, a value type it does not handle), and the
caller then uses the pure-Python path: nothing above the makers knows which one runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterator
from functools import partial
from types import ModuleType
from typing import Any

import wasmtime
from wasmtime import _ffi as wffi

from . import engine as _engine
from . import native
from .caps import refuse_text

__all__ = [
    "available",
    "builtin_func",
    "bus_builtin_func",
    "bus_host",
    "caller_template",
    "fallback",
    "func_new",
    "gil_stats",
    "is_native_host",
    "native_bus_available",
    "native_host_functions",
    "reason",
    "rlock",
    "set_epoch_callback",
    "set_gil_policy",
    "start_ticker",
    "trampoline_template",
]

_log = logging.getLogger("vudo.native")
_CODES = {"i32": "i", "i64": "q", "f32": "f", "f64": "d"}
# The built-ins written in C (kinds of host.c) and the wasm signature each must have.
_BUILTINS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "vudo_now": (1, (), ("i64",)),
    "vudo_monotonic_now": (2, (), ("i64",)),
    "vudo_random": (3, (), ("f64",)),
    "vudo_random_bytes": (4, ("i32", "i32"), ()),
    "vudo_print": (5, ("i32", "i32"), ()),
    "vudo_println": (5, ("i32", "i32"), ()),
    "vudo_error": (5, ("i32", "i32"), ()),
}
# The messaging and host-heap built-ins (bushost.c), served over vudo._nbus's C bus and heap.
_I = "i32"
_BUS_BUILTINS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "vudo_send": (6, (_I, _I, _I, _I), (_I,)),
    "vudo_recv": (7, (), (_I,)),
    "vudo_pending": (8, (), (_I,)),
    "vudo_broadcast": (9, (_I, _I), (_I,)),
    "vudo_free_message": (10, (_I,), ()),
    "vudo_alloc": (11, (_I,), (_I,)),
    "vudo_free": (12, (_I, _I), ()),
    "vudo_realloc": (13, (_I, _I, _I), (_I,)),
}
#: The host functions that must be served all natively or all in Python (C recv's blocks are
#: freed by C free_message; both paths tag them in the C heap, so either frees either's).
BUS_FUNCTIONS = frozenset(_BUS_BUILTINS)
# The logger method each text built-in calls (the Python Loa calls the same one).
_TEXT_OUTPUT = {"vudo_print": "print", "vudo_println": "println", "vudo_error": "error"}


def _load() -> tuple[ModuleType | None, str | None]:
    if os.environ.get("VUDO_NATIVE", "").strip() == "0":
        return None, "disabled by VUDO_NATIVE=0"
    if importlib.util.find_spec("vudo._cnative") is None:
        return None, "extension vudo._cnative not built (no C compiler at install time?)"
    try:
        _cnative: Any = importlib.import_module("vudo._cnative")
    except ImportError as exc:
        return None, f"extension vudo._cnative failed to import: {exc}"
    try:
        major = int(_engine.wasmtime_version.split(".")[0])
        _cnative.init(
            wffi.dll._handle, major, ctypes.sizeof(wffi.wasmtime_func_t),
            ctypes.sizeof(wffi.wasmtime_memory_t), ctypes.sizeof(wffi.wasmtime_val_raw),
        )
    except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
        return None, f"does not match the loaded wasmtime {_engine.wasmtime_version}: {exc}"
    return _cnative, None


_c, _reason = _load()
if _c is None:
    _log.debug("native core unavailable, using the pure-Python paths: %s", _reason)


def available() -> bool:
    """Whether the native core is active (built, matching wasmtime, not disabled)."""
    return _c is not None


_local = threading.local()


def _active() -> ModuleType | None:
    return None if getattr(_local, "fallback", False) else _c


def active() -> bool:
    """Whether Spirits loaded now, on this thread, get the native core."""
    return _active() is not None


@contextlib.contextmanager
def fallback() -> Iterator[None]:
    """Spirits loaded on this thread inside the block use the pure-Python paths.

    For side-by-side benchmarks and tests in one process; ``VUDO_NATIVE=0`` is the switch for
    users.
    """
    before = getattr(_local, "fallback", False)
    _local.fallback = True
    try:
        yield
    finally:
        _local.fallback = before


def reason() -> str | None:
    """Why the native core is not active (``None`` when it is)."""
    return _reason


def _codes(types: tuple[str, ...]) -> str | None:
    try:
        return "".join(_CODES[t] for t in types)
    except KeyError:
        return None  # reference types, v128: the Python path handles (or refuses) them


def caller_template(
    params: tuple[str, ...], results: tuple[str, ...], tracked: bool, *, guard: str = "_guard"
) -> Callable[..., Any] | None:
    """A drop-in for ``spirit._caller_template`` returning native call paths, or ``None``.

    ``guard`` names the attribute of ``make``'s first argument holding the per-call pre-check
    (``None`` or ``guard(function)``), read on every call.
    """
    c = _active()
    pc, rc = _codes(params), _codes(results)
    if c is None or pc is None or rc is None:
        return None

    def make(
        spirit: Any, name: str, acquire: Any, release: Any, stack: list[str],
        ctx: ctypes.c_void_p, faddr: ctypes.c_void_p, buf: Any, baddr: ctypes.c_void_p,
        trapbuf: ctypes.c_void_p, taddr: ctypes.c_void_p, nslots: ctypes.c_size_t,
        call_unchecked: Any, failed: Any, convert: Any, arity: Any,
    ) -> Callable[..., Any]:
        return c.Caller(  # type: ignore[no-any-return]
            spirit, name, acquire, release, stack, ctx.value, faddr.value, buf, baddr.value,
            trapbuf, taddr.value, nslots.value, failed, convert, arity, pc, rc, tracked, guard,
        )

    return make


def trampoline_template(
    params: tuple[str, ...], results: tuple[str, ...]
) -> Callable[..., Any] | None:
    """A drop-in for ``spirit._trampoline_template``: ``make(fail, fn) -> (cb, bind)``."""
    c = _active()
    pc, rc = _codes(params), _codes(results)
    if c is None or pc is None or rc is None:
        return None

    def make(fail: Any, fn: Any) -> tuple[Any, Callable[[Any], None]]:
        cb = c.Trampoline(pc, rc, fail, fn)
        return cb, cb.bind

    return make


def is_native_host(cb: object) -> bool:
    """Whether ``cb`` came from :func:`trampoline_template` (register it with :func:`func_new`)."""
    return _c is not None and isinstance(cb, _c.Trampoline | _c.Builtin)


def rlock() -> Any:
    """A Spirit's call lock: the native RLock (taken without a Python call by the native call
    path), or ``threading.RLock`` without the native core. Same API either way."""
    c = _active()
    return c.RLock() if c is not None else threading.RLock()


def _address(ptr: Any) -> int:
    value = ctypes.cast(ptr, ctypes.c_void_p).value
    if not value:
        raise ValueError("null wasmtime pointer")
    return value


def func_new(store: wasmtime.Store, ty: wasmtime.FuncType, host: Any) -> wasmtime.Func:
    """A host ``Func`` in ``store`` calling the native ``host`` (keep ``host`` alive with the
    Spirit: the store refers to it without a reference)."""
    assert _c is not None
    func = wffi.wasmtime_func_t()
    ctx = _address(store._context())
    _c.func_new(ctx, _address(ty.ptr()), host, ctypes.addressof(func))
    return wasmtime.Func._from_raw(func)


def builtin_func(
    store: wasmtime.Store, name: str, params: tuple[str, ...], results: tuple[str, ...],
    fail: Callable[[BaseException], int], *, spirit: str, default_time: bool,
    default_random: bool, max_text: int | None = None,
) -> tuple[wasmtime.Func, Any, Callable[[int, Any], None]] | None:
    """The C implementation of core host function ``name``, or ``None`` (use the Python one).

    Clocks and randomness are native only with the default providers (``default_time``,
    ``default_random``); text goes to whatever logger the Spirit has. Returns ``(func,
    keepalive, bind)``: ``bind(memory_address, logger)`` is called once the instance exists,
    with the address of its ``wasmtime_memory_t`` (0 for none). Text over ``max_text`` bytes
    (the Spirit's ``max_string_length``) is refused and logged as the Python Loa does.
    """
    if _active() is None:
        return None
    spec = _BUILTINS.get(name)
    if spec is None or (spec[1], spec[2]) != (params, results):
        return None
    kind = spec[0]
    if (kind <= 2 and not default_time) or (2 < kind <= 4 and not default_random):
        return None  # a MockTimeProvider, a seeded random: the Python provider is called
    assert _c is not None
    ty = wasmtime.FuncType(
        [getattr(wasmtime.ValType, t)() for t in params],
        [getattr(wasmtime.ValType, t)() for t in results],
    )
    host = _c.Builtin(kind, fail, spirit)
    output = _TEXT_OUTPUT.get(name)
    if output is not None and max_text is not None:
        host.set_text_cap(max_text, partial(refuse_text, spirit, name, cap=max_text))

    def bind(memory_address: int, logger: Any) -> None:
        host.set_memory(memory_address)
        if output is not None:
            host.set_output(getattr(logger, output))

    return func_new(store, ty, host), host, bind


_nbus_attached: bool | None = None


def _attach_nbus() -> bool:
    """Whether the C API of ``vudo._nbus`` is reachable (its capsule, same ABI version)."""
    global _nbus_attached
    if _nbus_attached is None:
        _nbus_attached = False
        if _c is not None and native.native_module() is not None:
            _nbus_attached = bool(_c.nbus_attach())
            if not _nbus_attached:
                _log.debug("vudo._nbus's C API is absent or of another ABI version: the "
                           "messaging host functions stay in Python")
    return _nbus_attached


def native_bus_available() -> bool:
    """Whether messaging and host-heap host functions can be served in C."""
    return _active() is not None and _attach_nbus()


def bus_host(
    bus: Any, heap: Any, grow: Callable[[int], Any], spirit: str, *,
    max_message_size: int | None, max_alloc: int | None,
) -> Any:
    """The native state one Spirit's messaging functions share, or ``None`` (fall back)."""
    if not native_bus_available():
        return None
    assert _c is not None
    return _c.BusHost(bus, heap, grow, spirit,
                      -1 if max_message_size is None else max_message_size,
                      -1 if max_alloc is None else max_alloc)


def bus_builtin_func(
    store: wasmtime.Store, name: str, params: tuple[str, ...], results: tuple[str, ...],
    fail: Callable[[BaseException], int], *, spirit: str, host: Any,
    python: Callable[..., Any], exhausted: Callable[[], None] | None,
) -> tuple[wasmtime.Func, Any, Callable[[int, Any], None]] | None:
    """The C messaging/heap host function ``name`` over ``host`` (from :func:`bus_host`), or
    ``None``. ``python`` is its Python host function, called for the rare cases."""
    spec = _BUS_BUILTINS.get(name)
    if host is None or _active() is None or spec is None or (spec[1], spec[2]) != (
        params, results
    ):
        return None
    assert _c is not None
    ty = wasmtime.FuncType(
        [getattr(wasmtime.ValType, t)() for t in params],
        [getattr(wasmtime.ValType, t)() for t in results],
    )
    fn = _c.Builtin(spec[0], fail, spirit)
    fn.set_bus(host, python, exhausted)

    def bind(memory_address: int, logger: Any) -> None:
        fn.set_memory(memory_address)

    return func_new(store, ty, fn), fn, bind


def native_host_functions(keepalive: list[Any]) -> set[str]:
    """The names of the host functions served in C among a Spirit's kept objects (the
    messaging/heap ones and the clocks, randomness and text built-ins): for tests and
    diagnostics."""
    if _c is None:
        return set()
    kinds = {kind: name for name, (kind, _, _) in (_BUILTINS | _BUS_BUILTINS).items()}
    kinds[5] = "vudo_print/println/error"
    return {kinds[obj.kind] for obj in keepalive if isinstance(obj, _c.Builtin)}


def set_epoch_callback(
    store: wasmtime.Store, on_epoch: Callable[..., int], *, interrupt: str = "_interrupt"
) -> bool:
    """Install the native epoch-deadline callback calling ``on_epoch`` (keep it alive).

    ``on_epoch`` is a bound method called like the ctypes one, with one-item lists for the
    delta and kind pointers; a Ctrl-C that escapes it sets ``on_epoch.__self__.<interrupt>`` to
    ``"keyboard"`` and stops the call. Returns ``False`` (nothing installed) without the native
    core.
    """
    if _active() is None:
        return False
    assert _c is not None
    _c.set_epoch_callback(_address(store.ptr()), on_epoch, interrupt)
    return True


def start_ticker() -> bool:
    """Start the native epoch ticker thread (idempotent; restarted in a forked child)."""
    if _c is None:
        return False
    eng = _engine.get_engine()
    _c.start_ticker(eng, _address(eng.ptr()), _engine.EPOCH_TICK_SECONDS)
    return True


_POLICIES = {"auto": 0, "hold": 1, "release": 2}


def set_gil_policy(policy: str) -> None:
    """How native calls treat the GIL while wasm runs (process-wide).

    ``"auto"`` (default): hold it while this is the only Python thread, release it at the start
    of a call when other Python threads exist, and in any case at the call's first epoch tick
    (5 ms), so a long call never starves other threads. ``"hold"``/``"release"``: always, except
    that a held call still lets go at its first epoch tick. For benchmarks and tuning.
    """
    if policy not in _POLICIES:
        raise ValueError(f"GIL policy must be one of {sorted(_POLICIES)}, not {policy!r}")
    if _c is not None:
        _c.set_gil_policy(_POLICIES[policy])


def add_quiet_thread() -> None:
    """Tell the auto GIL policy about one more idle vudo thread (it does not count it)."""
    if _c is not None:
        _c.add_quiet_thread()


def gil_stats() -> tuple[int, int, int]:
    """Native calls so far: (held the GIL, released it at the start, released it at a tick)."""
    if _c is None:
        return (0, 0, 0)
    held, at_start, at_tick = _c.gil_stats()
    return int(held), int(at_start), int(at_tick)
