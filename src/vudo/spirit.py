"""A Spirit: one loaded WebAssembly module instance, callable like a Python object.

Loading reads the module (path, bytes, WAT text or a compiled ``wasmtime.Module``), compiles it
through the cache, links every import against the Loas (reporting every unresolved import at
once), and instantiates it in a store of its own. Each export gets a call path built once at load
time: converters and a preallocated raw argument buffer, called through wasmtime's unchecked C
API. Host functions are registered through the unchecked callback API the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import inspect
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, overload

import wasmtime

from . import _engine, _ffi, _toolchains, _wasi, _wasm_scan
from .abi import NAMESPACES, ValType
from .broker import MessageBroker, MessageBus
from .effects import Permissions, StandardEffectHandler
from .errors import (
    FuelExhausted,
    HostFunctionError,
    LimitExceeded,
    LinkError,
    LoadError,
    MemoryAccessError,
    MemoryLimitExceeded,
    SpiritAssertionError,
    SpiritPanic,
    SpiritTerminated,
    SpiritTimeout,
    SpiritTrap,
    UnknownExportError,
    UnresolvedImport,
    VudoError,
)
from .limits import Limits, MemoryOptions
from .loa import HostFunction, LoaContext, LoaRegistry, Marshal, marshal_for
from .memory import PAGE_SIZE, NullMemory, WasmMemory
from .providers import (
    DebugHandler,
    DefaultDebugHandler,
    EffectHandler,
    Logger,
    RandomProvider,
    StdLogger,
    SystemRandomProvider,
    SystemTimeProvider,
    TimeProvider,
)

__all__ = [
    "Spirit",
    "SpiritProxy",
    "aload_spirit",
    "compile_source",
    "engine_message",
    "load_spirit",
    "read_wasm",
]

T = TypeVar("T")
Source = str | os.PathLike[str] | bytes | bytearray | wasmtime.Module
HostCallable = Callable[..., Any]

_log = logging.getLogger("vudo.spirit")
_trace_log = logging.getLogger("vudo.trace")
_WASM_MAGIC = b"\0asm"
#: Accepted Python ints per wasm int type: signed or unsigned interpretations of the width.
_INT_LIMITS = {"i32": (-(2**31), 2**32 - 1), "i64": (-(2**63), 2**64 - 1)}
_INT_TYPES = frozenset(_INT_LIMITS)


# ------------------------------------------------------------------------------------------
# Reading the source
# ------------------------------------------------------------------------------------------
def _read_source(source: Source) -> tuple[bytes | wasmtime.Module, str, str]:
    """Return (wasm bytes or module, a label for errors, a default Spirit name)."""
    if isinstance(source, wasmtime.Module):
        return source, "<wasmtime.Module>", "spirit"
    return read_wasm(source)


def read_wasm(source: str | os.PathLike[str] | bytes | bytearray) -> tuple[bytes, str, str]:
    """The WebAssembly bytes of a path (``.wasm`` or WAT text), bytes, or WAT text.

    Returns ``(wasm, label for messages, default Spirit name)``; raises
    :class:`~vudo.errors.LoadError` for a missing file, invalid WAT, or bytes that are not
    WebAssembly. Nothing is compiled.
    """
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        if not data.startswith(_WASM_MAGIC):
            raise LoadError("<bytes>", "not a WebAssembly module (missing the \\0asm header)")
        return data, "<bytes>", "spirit"
    if isinstance(source, str) and "(module" in source and not os.path.exists(source):
        return _wat(source, "<wat>"), "<wat>", "spirit"
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"Spirit source must be a path, bytes, WAT text or wasmtime.Module, "
            f"not {type(source).__name__}"
        )
    path = Path(source)
    label = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoadError(label, "no such file") from None
    except IsADirectoryError:
        raise LoadError(label, "is a directory, not a module") from None
    except OSError as exc:
        raise LoadError(label, exc.strerror or str(exc)) from None
    except ValueError as exc:  # a NUL byte or an unencodable character in the path
        raise LoadError(repr(str(source)), f"invalid path: {exc}") from None
    if path.suffix == ".wat" or (not data.startswith(_WASM_MAGIC) and b"(module" in data):
        return _wat(data.decode("utf-8", "replace"), label), label, path.stem
    if not data.startswith(_WASM_MAGIC):
        raise LoadError(label, "not a WebAssembly module (missing the \\0asm header)")
    return data, label, path.stem


def engine_message(exc: BaseException) -> str:
    """wasmtime's multi-line error text as one line: ``message (line L, column C)``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    message = lines[0]
    for i, line in enumerate(lines[1:], 1):
        where = re.match(r"-->\s*\S*?:(\d+):(\d+)", line)
        if where:
            message += f" (line {where.group(1)}, column {where.group(2)})"
            break
        if line == "Caused by:":
            message += ": " + "; ".join(lines[i + 1:])
            break
    return message


def _wat(text: str, label: str) -> bytes:
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise LoadError(label, f"invalid WAT: {engine_message(exc)}") from None


def compile_source(source: Source, *, cache: bool = True) -> tuple[wasmtime.Module, str, str]:
    """Read and compile ``source`` without instantiating it.

    Returns ``(module, label for messages, default Spirit name)``; raises
    :class:`~vudo.errors.LoadError` (missing file, not WebAssembly, invalid WAT or module).
    """
    data, label, default_name = _read_source(source)
    if isinstance(data, wasmtime.Module):
        return data, label, default_name
    try:
        if cache:
            module = _engine.compile_cache.get_or_compile(data)
        else:
            module = wasmtime.Module(_engine.engine, data)
    except wasmtime.WasmtimeError as exc:
        raise LoadError(label, f"invalid WebAssembly module: {engine_message(exc)}") from None
    _wasm_scan.note_module(module, data)  # [toolchains hook] does it grow memory itself?
    return module, label, default_name


# ------------------------------------------------------------------------------------------
# Signatures
# ------------------------------------------------------------------------------------------
def _vt(t: wasmtime.ValType) -> ValType:
    return cast(ValType, str(t))


def _sig(params: Iterable[str], results: Iterable[str]) -> str:
    res = list(results)
    return f"({', '.join(params)}) -> {', '.join(res) if res else '()'}"


@dataclass(slots=True)
class _Binding:
    """How one function import is satisfied."""

    module: str
    name: str
    params: tuple[ValType, ...]
    results: tuple[ValType, ...]
    fn: HostCallable | None  # bound at link time (annotation-derived signatures)
    factory: Callable[[LoaContext], HostCallable] | None  # bound after instantiation
    marshal: Marshal | None = None
    extra_result: bool = False  # declared an extra i32 result the host fills with 0


def _offered(hf: HostFunction) -> tuple[tuple[ValType, ...], tuple[ValType, ...]] | None:
    if hf.params is not None and hf.results is not None:
        return hf.params, hf.results
    return None


# ------------------------------------------------------------------------------------------
# Code generation for the fast paths (one template per wasm signature, cached)
# ------------------------------------------------------------------------------------------
_CALLER_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Callable[..., Any]] = {}
_TRAMPOLINE_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], Callable[..., Any]] = {}


def _caller_template(
    params: tuple[str, ...], results: tuple[str, ...], tracked: bool
) -> Callable[..., Any]:
    """Generate the call path of one wasm signature.

    ``tracked`` paths (Spirits with limits or ``debug``) keep the call stack; lean paths skip
    it, which is most of the difference on a sub-microsecond call.
    """
    key = (params, results, tracked)
    tmpl = _CALLER_CACHE.get(key)
    if tmpl is not None:
        return tmpl
    n = len(params)
    names = [f"a{i}" for i in range(n)]
    slots = [f"s{i}" for i in range(max(n, len(results)))]
    lines = [
        "def make(spirit, name, acquire, release, stack, ctx, faddr, buf, baddr, trapbuf,"
        " taddr, nslots, call_unchecked, failed, convert, arity):",
        *(f"    {slot} = buf[{i}]" for i, slot in enumerate(slots)),
        "    def call(*args):",
        f"        if len(args) != {n}:",
        "            arity(args)",
    ]
    if n:
        lines.append(f"        {', '.join(names)}{',' if n == 1 else ''} = args")
    lines += [
        "        acquire()",
        "        try:",
        "            if spirit._guard is not None:",
        "                spirit._guard(name)",
    ]
    if n:
        # ctypes checks the types (TypeError for a str, a float for an int...) and wraps
        # integers to the field's width like wasm does: 2**32 - 1 passed as i32 is -1.
        lines.append("            try:")
        for i, t in enumerate(params):
            if t in _INT_LIMITS:
                lo, hi = _INT_LIMITS[t]
                lines.append(f"                if not {lo} <= {names[i]} <= {hi}:")
                lines.append("                    convert(args)")
            lines.append(f"                s{i}.{t} = {names[i]}")
        lines += ["            except TypeError:", "                convert(args)"]
    call = "call_unchecked(ctx, faddr, baddr, nslots, taddr)"
    if tracked:
        lines += [
            "            stack.append(name)",
            "            try:",
            f"                err = {call}",
            "            finally:",
            "                stack.pop()",
        ]
    else:
        lines.append(f"            err = {call}")
    lines += [
        "            if err or trapbuf.value:",
        "                failed(name, err, trapbuf)",
    ]
    if not results:
        lines.append("            return None")
    elif len(results) == 1:
        lines.append(f"            return s0.{results[0]}")
    else:
        values = ", ".join(f"s{i}.{t}" for i, t in enumerate(results))
        lines.append(f"            return ({values},)")
    lines += [
        "        finally:",
        "            release()",
        "    return call",
    ]
    ns: dict[str, Any] = {}
    exec("\n".join(lines), ns)  # generated from wasm type names only
    tmpl = cast(Callable[..., Any], ns["make"])
    _CALLER_CACHE[key] = tmpl
    return tmpl


_SLOT_FORMAT = {"i32": "i12x", "i64": "q8x", "f32": "f12x", "f64": "d8x"}
_RESULT_FORMAT = {"i32": "I12x", "i64": "Q8x", "f32": "f12x", "f64": "d8x"}
_RESULT_MASK = {"i32": " & 0xFFFFFFFF", "i64": " & 0xFFFFFFFFFFFFFFFF", "f32": "", "f64": ""}


def _trampoline_template(params: tuple[str, ...], results: tuple[str, ...]) -> Callable[..., Any]:
    """Generate the host callback of one wasm signature.

    wasmtime passes the arguments as an array of 16-byte slots whose address is the same from
    one call to the next at a given stack depth, so a memoryview of it is built only when the
    address changes and the arguments are read with one ``struct.unpack``.
    """
    key = (params, results)
    tmpl = _TRAMPOLINE_CACHE.get(key)
    if tmpl is not None:
        return tmpl
    nslots = max(len(params), len(results), 1)
    names = [f"p{i}" for i in range(len(params))]
    body: list[str] = []
    if params:
        targets = ", ".join(names) + ("," if len(names) == 1 else "")
        body.append(f"            {targets} = unpack(view)")
    call = f"fn({', '.join(names)})"
    if not results:
        body.append(f"            {call}")
    elif len(results) == 1:
        body.append(f"            pack_into(view, 0, {call}{_RESULT_MASK[results[0]]})")
    else:
        body.append(f"            r = {call}")
        masked = ", ".join(f"r[{i}]{_RESULT_MASK[t]}" for i, t in enumerate(results))
        body.append(f"            pack_into(view, 0, {masked})")
    src = "\n".join([
        "def make(fail, fn):",
        "    last = 0",
        "    view = None",
        "    def bind(f):",
        "        nonlocal fn",
        "        fn = f",
        "    def cb(env, caller, addr, n):",
        "        nonlocal last, view",
        "        try:",
        "            if addr != last:",
        "                view = memoryview(slots.from_address(addr)).cast('B')",
        "                last = addr",
        *body,
        "            return 0",
        "        except BaseException as e:",
        "            return fail(e)",
        "    return cb, bind",
    ])
    ns: dict[str, Any] = {
        "slots": ctypes.c_char * (16 * nslots),
        "unpack": struct.Struct("<" + "".join(_SLOT_FORMAT[t] for t in params)).unpack,
        "pack_into": struct.Struct("<" + "".join(_RESULT_FORMAT[t] for t in results)).pack_into,
    }
    exec(src, ns)  # generated from wasm type names only
    tmpl = cast(Callable[..., Any], ns["make"])
    _TRAMPOLINE_CACHE[key] = tmpl
    return tmpl


# ------------------------------------------------------------------------------------------
# The Spirit
# ------------------------------------------------------------------------------------------
_loop_local = threading.local()


class Spirit:
    """A loaded, instantiated Spirit. Create it with :func:`load_spirit`.

    Calls are thread-safe: each Spirit has its own store and lock, so different Spirits run in
    parallel (wasmtime releases the GIL while WebAssembly runs) while calls into one Spirit are
    serialised. A host function may call back into its own Spirit (re-entrancy).
    """

    def __init__(
        self,
        module: wasmtime.Module,
        *,
        name: str,
        source_label: str = "<module>",
        logger: Logger | None = None,
        time_provider: TimeProvider | None = None,
        random_provider: RandomProvider | None = None,
        effect_handler: EffectHandler | None = None,
        debug_handler: DebugHandler | None = None,
        loas: LoaRegistry | None = None,
        imports: Mapping[str | tuple[str, str], HostCallable | HostFunction] | None = None,
        memory: MemoryOptions | Mapping[str, int] | None = None,
        debug: bool = False,
        limits: Limits | None = None,
        permissions: Permissions | None = None,
        broker: MessageBroker | None = None,
        allocator: str = "freelist",
        trace: bool = False,
        wasi: _wasi.WasiOptions | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.source = source_label
        self.debug = debug
        self.logger: Logger = logger if logger is not None else StdLogger(name)
        self.time_provider: TimeProvider = time_provider or SystemTimeProvider()
        self.random_provider: RandomProvider = random_provider or SystemRandomProvider()
        self._owns_effects = effect_handler is None
        self.effect_handler: EffectHandler = effect_handler or StandardEffectHandler()
        self.debug_handler: DebugHandler = debug_handler or DefaultDebugHandler(debug)
        self.loas: LoaRegistry = loas if loas is not None else LoaRegistry()
        self.limits: Limits = limits or Limits()
        #: Capabilities checked by the effect handler (see :mod:`vudo.effects`).
        self.permissions: Permissions | None = permissions
        self._owns_broker = broker is None
        self.broker: MessageBroker = broker if broker is not None else MessageBus()
        if not self.broker.is_registered(name):
            self.broker.register(name, capacity=self.limits.max_inbox)
        self._trace = trace

        self._lock = threading.RLock()
        #: Export names currently executing, outermost first.
        self.call_stack: list[str] = []
        self._terminated = False
        self.termination_cause: str | None = None
        self._guard: Callable[[str], None] | None = None
        self._pending: BaseException | None = None
        self._interrupt: str | None = None
        self._deadline: float | None = None
        self._cancelled = False
        self._wake = threading.Event()
        self._message_blocks: set[int] = set()
        self._keepalive: list[Any] = []
        self._async_loop: asyncio.AbstractEventLoop | None = None

        # Link, then instantiate in a store of our own.
        bindings, memory_import = self._resolve(imports or {}, memory)
        self.store = wasmtime.Store(_engine.engine)
        self._ctx = _ffi.context_address(self.store)
        # [toolchains hook] WASI preview 1: the engine's implementation, deny-by-default.
        self._wasi_ctx: _wasi.WasiContext | None = None
        if _wasi.imports_wasi(module):
            self._wasi_ctx = _wasi.configure_wasi(
                self.store, name=name, logger=self.logger, permissions=permissions, options=wasi)
        if self.limits.max_memory is not None:
            # Table elements cost the host 8 bytes each outside linear memory: same budget.
            self.store.set_limits(
                memory_size=self.limits.max_memory,
                table_elements=max(self.limits.max_memory // 8, 1),
            )
        self.store.set_fuel(2**63 - 1)
        self.store.set_epoch_deadline(1)
        epoch_cb = _ffi.EPOCH_CALLBACK(self._on_epoch)
        self._keepalive.append(epoch_cb)
        _ffi.set_epoch_callback(self.store, epoch_cb)
        _engine.ensure_ticker()

        externs: list[Any] = []
        late: list[tuple[_Binding, Callable[[HostCallable], None]]] = []
        imported_memory: wasmtime.Memory | None = None
        for imp in module.imports:
            if isinstance(imp.type, wasmtime.MemoryType):
                assert memory_import is not None
                imported_memory = wasmtime.Memory(self.store, memory_import)
                externs.append(imported_memory)
                continue
            b = bindings.get((imp.module, imp.name or ""))
            if b is None:  # [toolchains hook] a WASI function wasmtime implements
                assert self._wasi_ctx is not None
                externs.append(self._wasi_ctx.linker.get(self.store, imp.module, imp.name or ""))
                continue
            func, bind = self._host_func(b)
            externs.append(func)
            if b.fn is None:
                late.append((b, bind))
        # A start function runs inside instantiation: it gets the same budget as one call.
        if self.limits.fuel is not None:
            self.store.set_fuel(self.limits.fuel)
        if self.limits.timeout is not None:
            self._deadline = time.monotonic() + self.limits.timeout
        try:
            self.instance = wasmtime.Instance(self.store, module, externs)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            pending, self._pending = self._pending, None
            if pending is not None:
                raise LoadError(source_label, f"start function failed: {pending}") from pending
            if self._interrupt == "timeout":
                raise LoadError(
                    source_label, f"start function exceeded its timeout ({self.limits.timeout}s)"
                ) from None
            code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
            if code == wasmtime.TrapCode.OUT_OF_FUEL:
                raise LoadError(
                    source_label, f"start function exhausted its fuel ({self.limits.fuel})"
                ) from None
            reason = _trap_cause(str(exc))
            raise LoadError(source_label, f"instantiation failed: {reason}") from None
        finally:
            self._deadline = None
            self._interrupt = None
        self.store.set_fuel(2**63 - 1)
        self.exports: dict[str, Any] = dict(self.instance.exports(self.store))
        mem = self.exports.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            mem = imported_memory or next(
                (e for e in self.exports.values() if isinstance(e, wasmtime.Memory)), None
            )
        self._memory: WasmMemory | None = (
            WasmMemory(self.store, mem, allocator=allocator, name=name) if mem is not None else None
        )
        self._null_memory = NullMemory(name) if mem is None else None
        if self._memory is not None:  # [toolchains hook] the Spirit's own allocator, if any
            _toolchains.install_host_allocator(self, self._memory)

        ctx = LoaContext(self)
        for b, bind in late:
            assert b.factory is not None
            bind(self._adapt(b, b.factory(ctx)))

        self._callers: dict[str, Callable[..., Any]] = {}
        self._signatures: dict[str, tuple[tuple[ValType, ...], tuple[ValType, ...]]] = {}
        for ename, ext in self.exports.items():
            if isinstance(ext, wasmtime.Func):
                ty = ext.type(self.store)
                params = tuple(_vt(t) for t in ty.params)
                results = tuple(_vt(t) for t in ty.results)
                self._signatures[ename] = (params, results)
                self._callers[ename] = self._make_caller(ename, ext, params, results)
        self._update_guard()
        _toolchains.finish_load(self)  # [toolchains hook] warning; reactor's _initialize

    # ---------------------------------------------------------------------------- linking
    def _resolve(
        self,
        imports: Mapping[str | tuple[str, str], HostCallable | HostFunction],
        memory: MemoryOptions | Mapping[str, int] | None,
    ) -> tuple[dict[tuple[str, str], _Binding], wasmtime.MemoryType | None]:
        mem_opts = (
            memory if isinstance(memory, MemoryOptions | None) else MemoryOptions(**memory)
        )
        loa_fns: dict[tuple[str, str], HostFunction] = {}
        for loa in self.loas.all():
            for fname, loa_fn in loa.functions.items():
                for ns in (*NAMESPACES, loa.name):
                    loa_fns[(ns, fname)] = loa_fn
        ctx = LoaContext(self)
        bindings: dict[tuple[str, str], _Binding] = {}
        hf: HostFunction | None
        unresolved: list[UnresolvedImport] = []
        memory_type: wasmtime.MemoryType | None = None
        for imp in self.module.imports:
            mod, name, ty = imp.module, imp.name or "", imp.type
            if isinstance(ty, wasmtime.MemoryType):
                if name == "memory" and mod in NAMESPACES:
                    lim = ty.limits
                    initial = lim.min if mem_opts is None or mem_opts.initial is None \
                        else mem_opts.initial
                    maximum = lim.max if mem_opts is None or mem_opts.maximum is None \
                        else mem_opts.maximum
                    if initial < lim.min or (maximum is not None and maximum < initial):
                        unresolved.append(UnresolvedImport(
                            mod, name, f"memory {lim.min}..{lim.max}",
                            f"memory {initial}..{maximum}"))
                        continue
                    memory_type = wasmtime.MemoryType(wasmtime.Limits(initial, maximum))
                else:
                    unresolved.append(UnresolvedImport(mod, name, "memory", None))
                continue
            if not isinstance(ty, wasmtime.FuncType):
                kind = type(ty).__name__.replace("Type", "").lower()
                unresolved.append(UnresolvedImport(mod, name, kind, None))
                continue
            params = tuple(_vt(t) for t in ty.params)
            results = tuple(_vt(t) for t in ty.results)
            declared = _sig(params, results)
            user = imports.get((mod, name), imports.get(name) if mod in NAMESPACES else None)
            if user is not None and not isinstance(user, HostFunction):
                b = self._bind_user(mod, name, params, results, user)
                if isinstance(b, UnresolvedImport):
                    unresolved.append(b)
                else:
                    bindings[(mod, name)] = b
                continue
            hf = user if isinstance(user, HostFunction) else loa_fns.get((mod, name))
            if hf is None:  # [toolchains hook] env.abort, env.seed, WASI
                extra = _toolchains.toolchain_import(mod, name)
                if extra == _toolchains.ENGINE_WASI:
                    continue
                hf = extra if isinstance(extra, HostFunction) else None
            if hf is None:
                unresolved.append(UnresolvedImport(mod, name, declared, None))
                continue
            offered = _offered(hf)
            if offered is not None:
                if offered == (params, results):
                    bindings[(mod, name)] = _Binding(mod, name, params, results, None, hf.factory)
                elif offered == (params, ()) and results == ("i32",):
                    bindings[(mod, name)] = _Binding(
                        mod, name, params, results, None, hf.factory, extra_result=True)
                else:
                    unresolved.append(UnresolvedImport(mod, name, declared, _sig(*offered)))
                continue
            fn = hf.factory(ctx)
            try:
                m = marshal_for(fn, name)
            except TypeError as exc:
                unresolved.append(UnresolvedImport(mod, name, declared, f"<{exc}>"))
                continue
            if (m.params, m.results) != (params, results):
                unresolved.append(UnresolvedImport(mod, name, declared, _sig(m.params, m.results)))
                continue
            b = _Binding(mod, name, params, results, None, None, marshal=m)
            b.fn = self._adapt(b, fn)
            bindings[(mod, name)] = b
        if unresolved:
            raise LinkError(self.source, unresolved)
        return bindings, memory_type

    def _bind_user(
        self, mod: str, name: str, params: tuple[ValType, ...], results: tuple[ValType, ...],
        fn: HostCallable,
    ) -> _Binding | UnresolvedImport:
        """A plain callable from ``imports=``: annotated, or taking the raw declared values."""
        b = _Binding(mod, name, params, results, None, None)
        m: Marshal | None = None
        if getattr(fn, "__annotations__", None):  # unannotated: called with the raw values
            try:
                m = marshal_for(fn, name)
            except TypeError:
                m = None
        if m is not None:
            if (m.params, m.results) != (params, results):
                return UnresolvedImport(mod, name, _sig(params, results), _sig(m.params, m.results))
            b.marshal = m
        b.fn = self._adapt(b, fn)
        return b

    def _adapt(self, b: _Binding, fn: HostCallable) -> HostCallable:
        """Wrap ``fn`` for marshalling, coroutines, the extra-result variant and tracing."""
        if inspect.iscoroutinefunction(fn):
            coro_fn = fn

            def run_async(*args: Any) -> Any:
                return self._run_coroutine(coro_fn(*args))

            fn = run_async
        m = b.marshal
        if m is not None and not m.is_plain:
            fn = self._marshalled(fn, m)
        if b.extra_result:
            inner = fn

            def with_code(*args: Any) -> int:
                inner(*args)
                return 0

            fn = with_code
        if self._trace:
            traced, hname, spirit_name = fn, b.name, self.name

            def trace(*args: Any) -> Any:
                result = traced(*args)
                _trace_log.info("%s: %s%r -> %r", spirit_name, hname, args, result)
                return result

            fn = trace
        return fn

    def _marshalled(self, fn: HostCallable, m: Marshal) -> HostCallable:
        kinds, rkind = m.param_kinds, m.result_kind

        def marshalled(*raw: Any) -> Any:
            mem = self.memory_or_null
            args: list[Any] = []
            i = 0
            for kind in kinds:
                if kind in ("str", "bytes"):
                    ptr, length = raw[i] & 0xFFFFFFFF, raw[i + 1] & 0xFFFFFFFF
                    data = mem.read_bytes(ptr, length)
                    args.append(data.decode("utf-8", "replace") if kind == "str" else data)
                    i += 2
                else:
                    args.append(raw[i])
                    i += 1
            result = fn(*args)
            if rkind in ("str", "bytes"):
                data = result.encode("utf-8") if isinstance(result, str) else bytes(result)
                ptr = mem.alloc(4 + len(data))
                if ptr:
                    mem.write_bytes(ptr, len(data).to_bytes(4, "little") + data)
                return ptr
            return result

        return marshalled

    def _host_func(self, b: _Binding) -> tuple[wasmtime.Func, Callable[[HostCallable], None]]:
        hname = b.name

        def fail(exc: BaseException) -> int:
            return self._host_failed(hname, exc)

        def unbound(*_args: Any) -> Any:
            raise VudoError(f"host function {hname} called before the Spirit finished loading")

        tmpl = _trampoline_template(b.params, b.results)
        cb, bind = tmpl(fail, b.fn or unbound)
        if b.fn is not None:
            bind(b.fn)
        callback = _ffi.HOST_CALLBACK(cb)
        self._keepalive.append(callback)
        ty = wasmtime.FuncType(
            [getattr(wasmtime.ValType, t)() for t in b.params],
            [getattr(wasmtime.ValType, t)() for t in b.results],
        )
        return _ffi.func_new_unchecked(self.store, ty, callback), bind

    def _host_failed(self, hname: str, exc: BaseException) -> int:
        """A host function raised: remember why, and trap the Spirit."""
        if isinstance(exc, MemoryAccessError) and exc.function is None:
            exc = MemoryAccessError(
                exc.ptr, exc.length, exc.memory_size, spirit=self.name, function=hname
            )
        elif not isinstance(exc, VudoError | KeyboardInterrupt | SystemExit):
            wrapped = HostFunctionError(
                self.name, self.current_function,
                f"host function {hname} raised {type(exc).__name__}: {exc}",
            )
            wrapped.__cause__ = exc
            exc = wrapped
        self._pending = exc
        return _ffi.trap_new(f"host function {hname} failed: {exc}")

    def _run_coroutine(self, coro: Any) -> Any:
        """Run an ``async def`` host function's coroutine to completion for the Spirit."""
        loop = self._async_loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and loop.is_running() and running is not loop:
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        if running is not None:
            # Called from code already inside an event loop (e.g. spirit.call in a coroutine):
            # that loop is blocked on this call, so the coroutine runs on a helper thread.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, coro).result()
        private: asyncio.AbstractEventLoop | None = getattr(_loop_local, "loop", None)
        if private is None:
            private = asyncio.new_event_loop()
            _loop_local.loop = private
        return private.run_until_complete(coro)

    # ---------------------------------------------------------------------------- call path
    def _make_caller(
        self, name: str, func: wasmtime.Func, params: tuple[ValType, ...],
        results: tuple[ValType, ...],
    ) -> Callable[..., Any]:
        buf = (_ffi.ValRaw * max(len(params), len(results), 1))()
        trapbuf = ctypes.c_void_p()
        signature = _sig(params, results)

        def arity(args: tuple[Any, ...]) -> None:
            raise TypeError(
                f"{self.name}.{name}{signature} takes {len(params)} argument(s), "
                f"got {len(args)}"
            )

        def convert(args: tuple[Any, ...]) -> None:
            for i, (t, value) in enumerate(zip(params, args, strict=True)):
                ok = isinstance(value, int) if t in _INT_TYPES else isinstance(value, int | float)
                if not ok:
                    raise TypeError(
                        f"{self.name}.{name}{signature}: argument {i} must be "
                        f"{'int' if t in _INT_TYPES else 'float'} for {t}, "
                        f"got {type(value).__name__}"
                    )
                if t in _INT_LIMITS and not _INT_LIMITS[t][0] <= value <= _INT_LIMITS[t][1]:
                    lo, hi = _INT_LIMITS[t]
                    raise TypeError(
                        f"{self.name}.{name}{signature}: argument {i} = {value} does not fit "
                        f"{t} (accepted: {lo} .. {hi})"
                    )
            raise TypeError(f"{self.name}.{name}{signature}: cannot convert arguments {args!r}")

        tracked = self.debug or self.limits.fuel is not None or self.limits.timeout is not None
        tmpl = _caller_template(params, results, tracked)
        nslots = max(len(params), len(results))
        c = ctypes.c_void_p
        call = tmpl(
            self, name, self._lock.acquire, self._lock.release, self.call_stack, c(self._ctx),
            c(ctypes.addressof(func._func)), buf, c(ctypes.addressof(buf)), trapbuf,
            c(ctypes.addressof(trapbuf)), ctypes.c_size_t(nslots), _ffi.call_unchecked,
            self._call_failed, convert, arity,
        )
        self._keepalive.append((func, buf, trapbuf))
        return cast(Callable[..., Any], call)

    def _update_guard(self) -> None:
        """Install the per-call pre-check: only Spirits with limits or a fault pay for one."""
        lim = self.limits
        if self._terminated:
            self._guard = self._refuse
        elif lim.fuel is not None or lim.timeout is not None:
            self._guard = self._arm_limits
        else:
            self._guard = None

    def _refuse(self, function: str) -> None:
        raise SpiritTerminated(self.name, function, self.termination_cause or "terminated")

    def _arm_limits(self, function: str) -> None:
        lim = self.limits
        if lim.fuel is not None and not self.call_stack:
            self.store.set_fuel(lim.fuel)
        if lim.timeout is not None and not self.call_stack:
            self._deadline = time.monotonic() + lim.timeout

    def _on_epoch(self, _ctx: Any, _env: Any, delta: Any, kind: Any) -> int:
        """Epoch tick while this Spirit runs: carry on, or interrupt (timeout, dismissal)."""
        try:
            if self._cancelled:
                self._interrupt = "cancelled"
            elif self._deadline is not None and time.monotonic() >= self._deadline:
                self._interrupt = "timeout"
            else:
                delta[0] = 1
                kind[0] = 0
                return 0
        except KeyboardInterrupt:  # Ctrl-C while wasm spins: stop the call, re-raise after
            self._interrupt = "keyboard"
        except BaseException:  # never let an exception escape into wasmtime
            delta[0] = 1
            kind[0] = 0
            return 0
        return _ffi.error_new(f"interrupted: {self._interrupt}")

    def _call_failed(self, function: str, err: int | None, trapbuf: ctypes.c_void_p) -> None:
        """Turn a failed call into the right exception (always raises)."""
        message, code, frames = "", None, []
        if trapbuf.value:
            trap = _ffi.take_trap(trapbuf.value)
            trapbuf.value = None
            message = _trap_cause(trap.message)
            code = trap.trap_code
            frames = [
                f"{f.func_name or f'func[{f.func_index}]'} @ 0x{f.module_offset:x}"
                for f in trap.frames
            ]
        if err:
            message = _ffi.error_message(err)
        pending, self._pending = self._pending, None
        interrupt, self._interrupt = self._interrupt, None
        if not self.call_stack:
            self._deadline = None
        exc: BaseException
        if pending is not None:
            exc = pending
            if getattr(exc, "function", None) == "<host>" and isinstance(
                exc, SpiritAssertionError | SpiritPanic | HostFunctionError
            ):
                # Lean call paths keep no call stack: name the export now.
                named = type(exc)(exc.spirit, function, exc.message)
                named.__cause__ = exc.__cause__
                exc = named
            if isinstance(exc, SpiritPanic | SpiritTerminated):
                cause = f"panic: {exc.message}" if isinstance(exc, SpiritPanic) else exc.cause
                self.terminate(cause)
        elif interrupt == "keyboard":
            raise KeyboardInterrupt(f"interrupted Spirit {self.name!r} in {function}")
        elif interrupt == "timeout":
            exc = SpiritTimeout(self.name, function, "timeout", f"{self.limits.timeout}s")
        elif interrupt == "cancelled":
            exc = SpiritTerminated(self.name, function, self.termination_cause or "dismissed")
        elif code == wasmtime.TrapCode.OUT_OF_FUEL:
            exc = FuelExhausted(self.name, function, "fuel", self.limits.fuel)
        elif self._at_memory_limit():
            exc = MemoryLimitExceeded(self.name, function, "max_memory", self.limits.max_memory)
            exc.__cause__ = SpiritTrap(self.name, function, message, backtrace=frames)
        else:
            exc = SpiritTrap(
                self.name, function, message,
                trap_code=code.name if code is not None else None, backtrace=frames,
            )
        if isinstance(exc, LimitExceeded) and self.limits.terminate_on_limit:
            self.terminate(str(exc))
        if isinstance(exc, VudoError) and exc is pending:
            exc.add_note(f"while calling {function!r} on Spirit {self.name!r}")
        raise exc

    def _at_memory_limit(self) -> bool:
        cap = self.limits.max_memory
        return cap is not None and self._memory is not None and self._memory.size + PAGE_SIZE > cap

    # ---------------------------------------------------------------------------- public API
    @property
    def functions(self) -> list[str]:
        """Names of the exported functions."""
        return list(self._callers)

    def has_function(self, name: str) -> bool:
        """Whether the Spirit exports a function called ``name``."""
        return name in self._callers

    def signature(self, name: str) -> tuple[tuple[ValType, ...], tuple[ValType, ...]]:
        """The wasm ``(params, results)`` of an exported function."""
        try:
            return self._signatures[name]
        except KeyError:
            raise UnknownExportError(self.name, name, self.functions) from None

    def call(self, name: str, *args: Any) -> Any:
        """Call export ``name``; Python values are converted to its declared wasm types.

        Returns ``None``, one value, or a tuple for multi-value results.
        """
        try:
            fn = self._callers[name]
        except KeyError:
            raise UnknownExportError(self.name, name, self.functions) from None
        return fn(*args)

    def function(self, name: str) -> Callable[..., Any]:
        """The precompiled call path of export ``name`` (the fastest way to call it)."""
        try:
            return self._callers[name]
        except KeyError:
            raise UnknownExportError(self.name, name, self.functions) from None

    @overload
    def as_(self, protocol: None = None) -> SpiritProxy: ...
    @overload
    def as_(self, protocol: Callable[..., T]) -> T: ...
    # Callable, not type[T]: mypy refuses a Protocol class where type[T] is expected.
    def as_(self, protocol: Callable[..., T] | None = None) -> T | SpiritProxy:
        """A typed proxy: ``spirit.as_(Calculator).add(1, 2)``.

        With a Protocol, every method it declares must be exported (checked now, with an error
        listing the missing ones). Gene methods ``Counter.add`` are ``proxy.Counter.add``.
        """
        if protocol is not None:
            if not isinstance(protocol, type):
                raise TypeError(f"as_() expects a class (a typing.Protocol), got {protocol!r}")
            wanted = _protocol_methods(protocol)
            missing = [m for m in wanted if m not in self._callers]
            if missing:
                raise UnknownExportError(self.name, ", ".join(missing), self.functions)
        return SpiritProxy(self, "")

    @property
    def memory(self) -> WasmMemory:
        """The Spirit's linear memory (``VudoError`` if the module has none)."""
        memory: WasmMemory | None = getattr(self, "_memory", None)
        if memory is None:
            if not hasattr(self, "_memory"):
                raise VudoError(
                    f"Spirit {self.name!r} is still linking: its memory does not exist yet "
                    "(a host function factory should read ctx.memory inside the function)"
                )
            raise VudoError(f"Spirit {self.name!r} has no memory")
        return memory

    @property
    def has_memory(self) -> bool:
        """Whether the Spirit has a linear memory."""
        return self._memory is not None

    @property
    def memory_or_null(self) -> WasmMemory:
        """The memory, or a stand-in on which every access is out of bounds."""
        if self._memory is not None:
            return self._memory
        assert self._null_memory is not None
        return self._null_memory

    @property
    def current_function(self) -> str:
        """The export currently executing (innermost), or ``"<host>"``."""
        return self.call_stack[-1] if self.call_stack else "<host>"

    @property
    def terminated(self) -> bool:
        """Whether the Spirit was terminated (panic, TERMINATE, dismissal, fatal limit)."""
        return self._terminated

    def terminate(self, cause: str) -> None:
        """End the Spirit: later calls raise ``SpiritTerminated``; its inbox is closed."""
        if self._terminated:
            return
        self._terminated = True
        self.termination_cause = cause
        self._update_guard()
        self.broker.unregister(self.name)
        _log.debug("Spirit %r terminated: %s", self.name, cause)

    def interrupt(self) -> None:
        """Stop a running call at the next epoch tick (from any thread) and terminate."""
        self._cancelled = True
        self._wake.set()  # a Spirit paused in vudo_sleep wakes up now
        self.terminate(self.termination_cause or "dismissed")

    def deliver(self, from_: str, payload: bytes, channel: int = 0) -> bool:
        """Queue a message for this Spirit (thread-safe); ``False`` if full or closed."""
        from .abi import ResultCode

        return self.broker.post(from_, self.name, payload, channel) == ResultCode.OK

    def close(self) -> None:
        """Terminate the Spirit and release its inbox (and the bus and effect handler it made
        for itself)."""
        self.terminate(self.termination_cause or "closed")
        if self._owns_broker:
            self.broker.close()
        if self._owns_effects and isinstance(self.effect_handler, StandardEffectHandler):
            self.effect_handler.close()

    def __enter__(self) -> Spirit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "terminated" if self._terminated else "live"
        n = len(self._callers)
        return f"<Spirit {self.name!r} from {self.source} ({state}, {n} functions)>"


def _trap_cause(message: str) -> str:
    """The cause of a wasmtime trap message, without the backtrace it embeds."""
    _, sep, cause = message.partition("Caused by:")
    text = cause if sep else message
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _protocol_methods(protocol: type) -> list[str]:
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass in (object,) or klass.__module__ == "typing":
            continue
        for attr, value in vars(klass).items():
            if not attr.startswith("_") and callable(value) and attr not in names:
                names.append(attr)
    return names


class SpiritProxy:
    """Attribute access to a Spirit's exports; ``proxy.Counter`` groups ``Counter.*`` methods.

    Each attribute is resolved once, then cached on the proxy, so ``proxy.add(1, 2)`` costs no
    more than the call itself.
    """

    def __init__(self, spirit: Spirit, prefix: str) -> None:
        self._spirit = spirit
        self._prefix = prefix

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        full = self._prefix + attr
        callers = self._spirit._callers
        found: Any = callers.get(full)
        if found is None:
            group = full + "."
            if not any(n.startswith(group) for n in callers):
                raise UnknownExportError(self._spirit.name, full, self._spirit.functions)
            found = SpiritProxy(self._spirit, group)
        self.__dict__[attr] = found
        return found

    def __dir__(self) -> list[str]:
        names = {n[len(self._prefix):].split(".")[0] for n in self._spirit._callers
                 if n.startswith(self._prefix)}
        return sorted(names)

    def __repr__(self) -> str:
        return f"<SpiritProxy {self._spirit.name}{'.' + self._prefix[:-1] if self._prefix else ''}>"


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------
def load_spirit(
    source: Source,
    *,
    name: str | None = None,
    logger: Logger | None = None,
    time_provider: TimeProvider | None = None,
    random_provider: RandomProvider | None = None,
    effect_handler: EffectHandler | None = None,
    debug_handler: DebugHandler | None = None,
    loas: LoaRegistry | None = None,
    imports: Mapping[str | tuple[str, str], HostCallable | HostFunction] | None = None,
    memory: MemoryOptions | Mapping[str, int] | None = None,
    debug: bool = False,
    limits: Limits | None = None,
    permissions: Permissions | None = None,
    broker: MessageBroker | None = None,
    allocator: str = "freelist",
    trace: bool = False,
    cache: bool = True,
    wasi: _wasi.WasiOptions | None = None,
) -> Spirit:
    """Load, link and instantiate a Spirit.

    ``source`` is a path (``.wasm`` or ``.wat``), ``bytes``, WAT text, or a compiled
    ``wasmtime.Module``. Compiled modules are cached in memory and on disk (under the user cache
    directory; ``VUDO_CACHE_DIR`` overrides it, empty disables), keyed by the module's hash and
    the engine configuration. Raises :class:`~vudo.errors.LoadError` or
    :class:`~vudo.errors.LinkError`.
    """
    module, label, default_name = compile_source(source, cache=cache)
    return Spirit(
        module, name=name or default_name, source_label=label, logger=logger,
        time_provider=time_provider, random_provider=random_provider,
        effect_handler=effect_handler, debug_handler=debug_handler, loas=loas,
        imports=imports, memory=memory, debug=debug, limits=limits, permissions=permissions,
        broker=broker, allocator=allocator, trace=trace, wasi=wasi,
    )


async def aload_spirit(source: Source, **options: Any) -> Spirit:
    """:func:`load_spirit` for asyncio code: reading and compiling run off the event loop."""
    return await asyncio.to_thread(load_spirit, source, **options)
