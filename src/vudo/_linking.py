"""Linking: how a module's imports are satisfied, decided once into a :class:`LinkPlan`.

:func:`plan_imports` resolves every import of a compiled module against a Loa registry (and
``imports=`` given by the caller) without creating anything: the plan lists, in import order,
what serves each import, or why nothing can. ``vudo inspect`` reports the plan; loading raises
one :class:`~vudo.errors.LinkError` listing every unresolved import, then instantiates Spirits
from the plan (:func:`bind_host_function` turns each planned import into the callable the Spirit
calls).
Plans of the same module and registry are cached, so summoning many Spirits links once.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import wasmtime

from ._config import Limits, MemoryOptions
from ._host import HostContext, HostFunction, Inbox, LoaRegistry, Marshal, marshal_for
from ._host.context import make_inbox
from ._host.loas.foreign import ENGINE_WASI, toolchain_import
from ._host.wasi_context import WASI_MODULE
from ._memory import WasmMemory
from ._runtime import valtypes
from ._runtime.asyncbridge import AsyncBridge
from .abi import HOST_FUNCTIONS_BY_NAME, NAMESPACES, ValType
from .errors import LinkError, LoadError, UnresolvedImport

__all__ = [
    "HostCallable",
    "ImportSpec",
    "LinkPlan",
    "PlannedImport",
    "bind_host_function",
    "extern_kind",
    "plan_imports",
    "signature_text",
    "valtype",
]

HostCallable = Callable[..., Any]
#: What ``imports=`` accepts: ``{name: fn}`` or ``{(module, name): fn}``.
ImportSpec = Mapping[str | tuple[str, str], HostCallable | HostFunction]
Status = Literal["ok", "variant", "unresolved"]

_trace_log = logging.getLogger("vudo.trace")


def valtype(t: wasmtime.ValType) -> ValType:
    """The name of a wasm value type (``i32``, ``f64``, ``funcref``...)."""
    return cast(ValType, valtypes.type_name(t))


def signature_text(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    """``(i32, i32) -> ()``."""
    return f"({', '.join(params)}) -> {', '.join(results) if results else '()'}"


@dataclass(frozen=True, slots=True)
class PlannedImport:
    """How one import is satisfied (``status`` ``ok``/``variant``) or why not (``unresolved``).

    ``host`` is the Loa function (or ``HostFunction`` given in ``imports=``) serving it, ``user``
    a plain callable from ``imports=``; ``derive`` marks a Loa function whose signature comes
    from the annotations of the callable its factory returns (checked when a Spirit binds it).
    """

    module: str
    name: str
    kind: str
    declared: str
    status: Status
    detail: str
    params: tuple[ValType, ...] = ()
    results: tuple[ValType, ...] = ()
    loa: str | None = None
    offered: str | None = None
    host: HostFunction | None = None
    user: HostCallable | None = None
    marshal: Marshal | None = None
    extra_result: bool = False
    derive: bool = False
    memory_type: wasmtime.MemoryType | None = None
    #: Served by the engine's own WASI implementation (not a host function).
    engine_wasi: bool = False

    @property
    def unresolved(self) -> UnresolvedImport:
        """This import as an entry of a :class:`~vudo.errors.LinkError`."""
        return UnresolvedImport(self.module, self.name, self.declared, self.offered)


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """Every import of a module, in order, with how it is satisfied."""

    source: str
    imports: tuple[PlannedImport, ...]

    @property
    def problems(self) -> list[UnresolvedImport]:
        """The imports the host cannot satisfy."""
        return [p.unresolved for p in self.imports if p.status == "unresolved"]

    def check(self) -> None:
        """Raise one :class:`~vudo.errors.LinkError` listing every unresolved import."""
        problems = self.problems
        if problems:
            raise LinkError(self.source, problems)


# ------------------------------------------------------------------------------ planning
def extern_kind(ty: object) -> str:
    """``func``, ``memory``, ``global``, ``table`` (or the type's own name) of an extern type."""
    if isinstance(ty, wasmtime.FuncType):
        return "func"
    if isinstance(ty, wasmtime.MemoryType):
        return "memory"
    if isinstance(ty, wasmtime.GlobalType):
        return "global"
    if isinstance(ty, wasmtime.TableType):
        return "table"
    return type(ty).__name__.replace("Type", "").lower()


def _plan_memory(
    mod: str, name: str, ty: wasmtime.MemoryType, options: MemoryOptions | None
) -> PlannedImport:
    lim = ty.limits
    declared = f"memory {lim.min}..{lim.max}"
    if name != "memory" or mod not in NAMESPACES:
        return PlannedImport(
            mod, name, "memory", "memory", "unresolved",
            f'the host provides a memory only as "memory" from {", ".join(NAMESPACES)}',
        )
    initial = lim.min if options is None or options.initial is None else options.initial
    maximum = lim.max if options is None or options.maximum is None else options.maximum
    if initial < lim.min or (maximum is not None and maximum < initial):
        return PlannedImport(
            mod, name, "memory", declared, "unresolved",
            f"memory options {initial}..{maximum} do not fit the declared {lim.min}..{lim.max}",
            offered=f"memory {initial}..{maximum}",
        )
    return PlannedImport(
        mod, name, "memory", declared, "ok", f"memory created by the host ({initial}..{maximum})",
        memory_type=wasmtime.MemoryType(wasmtime.Limits(initial, maximum)),
    )


def _plan_user(
    mod: str, name: str, params: tuple[ValType, ...], results: tuple[ValType, ...],
    fn: HostCallable,
) -> PlannedImport:
    declared = signature_text(params, results)
    m: Marshal | None = None
    if getattr(fn, "__annotations__", None):  # unannotated: called with the raw values
        try:
            m = marshal_for(fn, name)
        except TypeError:
            m = None
    if m is not None and (m.params, m.results) != (params, results):
        return PlannedImport(
            mod, name, "func", declared, "unresolved", "imports= callable does not match",
            params, results, offered=signature_text(m.params, m.results),
        )
    return PlannedImport(
        mod, name, "func", declared, "ok", "given in imports=", params, results, user=fn,
        marshal=m,
    )


_FOREIGN = {"env": "AssemblyScript runtime (vudo)", WASI_MODULE: "WASI preview 1 (vudo)"}


def _plan_func(
    mod: str, name: str, ty: wasmtime.FuncType,
    loa_fns: Mapping[tuple[str, str], tuple[str | None, HostFunction]], imports: ImportSpec,
) -> PlannedImport:
    params = tuple(valtype(t) for t in ty.params)
    results = tuple(valtype(t) for t in ty.results)
    declared = signature_text(params, results)
    user = imports.get((mod, name), imports.get(name) if mod in NAMESPACES else None)
    if user is not None and not isinstance(user, HostFunction):
        return _plan_user(mod, name, params, results, user)
    loa: str | None
    if isinstance(user, HostFunction):
        hf, loa = user, None
    else:
        found = loa_fns.get((mod, name))
        foreign = toolchain_import(mod, name) if found is None else None
        if foreign == ENGINE_WASI:  # taken from the Spirit's WASI linker when it loads
            return PlannedImport(mod, name, "func", declared, "ok", "WASI preview 1 (wasmtime)",
                                 params, results, engine_wasi=True)
        if isinstance(foreign, HostFunction):  # AssemblyScript's env, WASI vudo routes
            found = (None, foreign)
        if found is None:
            spec = HOST_FUNCTIONS_BY_NAME.get(name)
            detail = (
                f"{name} is a host function, but only under {', '.join(NAMESPACES)}, "
                f"not {mod!r}" if spec is not None
                else f"the host provides no function {mod}.{name}"
            )
            return PlannedImport(mod, name, "func", declared, "unresolved", detail, params,
                                 results)
        loa, hf = found
    if hf.params is None or hf.results is None:
        try:
            derived = _derive(hf)
        except TypeError as exc:
            return PlannedImport(mod, name, "func", declared, "unresolved", str(exc), params,
                                 results, loa=loa, offered=f"<{exc}>")
        if isinstance(derived, str):  # the factory needs a real Spirit: checked at load
            return PlannedImport(
                mod, name, "func", declared, "ok", f"signature from annotations ({derived})",
                params, results, loa=loa, host=hf, derive=True,
            )
        offered = signature_text(derived.params, derived.results)
        if (derived.params, derived.results) != (params, results):
            return PlannedImport(
                mod, name, "func", declared, "unresolved",
                f"declared {declared}, the host offers {offered}", params, results, loa=loa,
                offered=offered,
            )
        return PlannedImport(mod, name, "func", declared, "ok", "host function (annotated)",
                             params, results, loa=loa, offered=offered, host=hf, derive=True)
    offered = signature_text(hf.params, hf.results)
    where = f"host function ({loa})" if loa else _FOREIGN.get(mod, "host function")
    if (hf.params, hf.results) == (params, results):
        return PlannedImport(mod, name, "func", declared, "ok", where, params, results,
                             loa=loa, offered=offered, host=hf)
    if (hf.params, hf.results) == (params, ()) and results == ("i32",):
        return PlannedImport(
            mod, name, "func", declared, "variant",
            f"{where}; extra i32 result, host returns 0", params, results, loa=loa,
            offered=offered, host=hf, extra_result=True,
        )
    spec = HOST_FUNCTIONS_BY_NAME.get(name)
    named = spec.signature if spec is not None and hf is spec_fn(spec) else offered
    return PlannedImport(
        mod, name, "func", declared, "unresolved", f"declared {declared}, the host offers "
        f"{named}", params, results, loa=loa, offered=offered,
    )


def _derive(hf: HostFunction) -> Marshal | str:
    """The signature of an annotated host function, read from the callable its factory returns
    for a stand-in context; a reason string when the factory cannot run without a Spirit."""
    try:
        fn = hf.factory(_probe_context())
    except Exception as exc:
        return f"checked at load: {type(exc).__name__}"
    return marshal_for(fn, hf.name)  # TypeError: annotations that map to no wasm type


def _probe_context() -> HostContext:
    from ._effects import DefaultEffectHandler
    from ._providers import (
        DefaultDebugHandler,
        MessageBus,
        StdLogger,
        SystemRandomProvider,
        SystemTimeProvider,
    )
    bus = MessageBus()
    bus.register(_PROBE)
    probe = _ProbeContext()
    probe.memory = WasmMemory(name=_PROBE)
    probe.logger = StdLogger(_PROBE)
    probe.time = SystemTimeProvider()
    probe.random = SystemRandomProvider()
    probe.effects = DefaultEffectHandler()
    probe.debugger = DefaultDebugHandler()
    probe.inbox = make_inbox(bus, _PROBE)
    return probe


_PROBE = "<link>"


class _ProbeContext:
    """A stand-in context for reading a factory's signature at link time: inert providers,
    a memory on which every access is out of bounds, an inbox nobody else sees."""

    name = _PROBE
    limits = Limits()
    permissions = None
    debug = False
    current_function = _PROBE
    call_stack: list[str] = []  # noqa: RUF012 - read-only by protocol
    terminated = False
    termination_cause = None
    wasi = None
    memory: WasmMemory
    logger: Any
    time: Any
    random: Any
    effects: Any
    debugger: Any
    inbox: Inbox

    def sleep(self, ms: int) -> None:
        """Never sleeps."""

    def deliver(self, from_: str, payload: bytes, /) -> bool:
        """Nothing is delivered."""
        return False

    def terminate(self, cause: str, /) -> None:
        """Nothing to terminate."""


def spec_fn(spec: object) -> HostFunction | None:
    """The core Loa's implementation of an ABI table entry."""
    from ._host.loas import CORE_LOA

    return CORE_LOA.functions.get(getattr(spec, "name", ""))


def _loa_functions(registry: LoaRegistry) -> dict[tuple[str, str], tuple[str, HostFunction]]:
    """``(namespace, name) -> (group, function)``: the core Loa's functions under every ABI
    namespace, every Loa's under its own name too."""
    table: dict[tuple[str, str], tuple[str, HostFunction]] = {}
    for i, loa in enumerate(registry.all()):
        for fname, fn in loa.functions.items():
            spec = HOST_FUNCTIONS_BY_NAME.get(fname) if i == 0 else None
            group = spec.loa if spec is not None else loa.name
            for ns in (*NAMESPACES, loa.name):
                table[(ns, fname)] = (group, fn)
    return table


_PLANS: weakref.WeakKeyDictionary[wasmtime.Module, dict[tuple[Any, ...], LinkPlan]] = (
    weakref.WeakKeyDictionary()
)


def plan_imports(
    module: wasmtime.Module,
    registry: LoaRegistry,
    *,
    imports: ImportSpec | None = None,
    memory: MemoryOptions | None = None,
    source: str = "<module>",
) -> LinkPlan:
    """The link plan of ``module`` (cached per module, registry version and memory options
    when no ``imports=`` are given). Never raises for unresolved imports: see
    :meth:`LinkPlan.check`."""
    key = (id(registry), registry.version, memory, source)
    if not imports:
        cached = _PLANS.get(module, {}).get(key)
        if cached is not None:
            return cached
    loa_fns = _loa_functions(registry)
    planned: list[PlannedImport] = []
    for imp in module.imports:
        mod, name, ty = imp.module, imp.name or "", imp.type
        if isinstance(ty, wasmtime.MemoryType):
            planned.append(_plan_memory(mod, name, ty, memory))
        elif isinstance(ty, wasmtime.FuncType):
            planned.append(_plan_func(mod, name, ty, loa_fns, imports or {}))
        else:
            kind = extern_kind(ty)
            planned.append(PlannedImport(mod, name, kind, kind, "unresolved",
                                         f"the host provides no {kind} imports"))
    plan = LinkPlan(source, tuple(planned))
    if not imports:
        try:
            _PLANS.setdefault(module, {})[key] = plan
        except TypeError:  # pragma: no cover - a module type that cannot be weakly referenced
            pass
    return plan


# ------------------------------------------------------------------------------ binding
def bind_host_function(
    entry: PlannedImport, ctx: HostContext, bridge: AsyncBridge, *, trace: bool
) -> HostCallable | UnresolvedImport:
    """The callable a Spirit calls for ``entry``: the factory's (or user's) function wrapped
    for marshalling, coroutines, the extra-result variant and tracing. A derived signature that
    does not match the import comes back as an :class:`~vudo.errors.UnresolvedImport`."""
    marshal = entry.marshal
    if entry.user is not None:
        fn = entry.user
    else:
        assert entry.host is not None
        fn = entry.host.factory(ctx)
        if entry.derive:
            try:
                marshal = marshal_for(fn, entry.name)
            except TypeError as exc:
                return UnresolvedImport(entry.module, entry.name, entry.declared, f"<{exc}>")
            if (marshal.params, marshal.results) != (entry.params, entry.results):
                return UnresolvedImport(entry.module, entry.name, entry.declared,
                                        signature_text(marshal.params, marshal.results))
    if not callable(fn):
        raise LoadError(entry.module, f"host function {entry.name}'s factory returned {fn!r}")
    if inspect.iscoroutinefunction(fn):
        coro_fn, run = fn, bridge.run

        def run_async(*args: Any) -> Any:
            return run(coro_fn(*args))

        fn = run_async
    if marshal is not None and not marshal.is_plain:
        fn = _marshalled(fn, marshal, ctx)
    if entry.extra_result:
        inner = fn

        def with_code(*args: Any) -> int:
            inner(*args)
            return 0

        fn = with_code
    if trace:
        traced, hname, spirit_name = fn, entry.name, ctx.name

        def traced_call(*args: Any) -> Any:
            result = traced(*args)
            _trace_log.info("%s: %s%r -> %r", spirit_name, hname, args, result)
            return result

        fn = traced_call
    return fn


def _marshalled(fn: HostCallable, m: Marshal, ctx: HostContext) -> HostCallable:
    kinds, rkind = m.param_kinds, m.result_kind
    mem = ctx.memory

    def marshalled(*raw: Any) -> Any:
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
