"""Loas: named groups of host functions, and the registry a Spirit is linked against.

A host function is a *factory*: given a :class:`LoaContext` (the Spirit, its memory, its
providers) it returns the Python callable the Spirit will call. The wasm signature comes from the
callable's annotations (``int`` -> i32, ``vudo.i64`` -> i64, ``float`` -> f64, ``str``/``bytes``
parameters -> a ``(ptr, len)`` pair read from memory, a ``str``/``bytes`` result -> a pointer to a
length-prefixed block in the host heap), or is given explicitly.
"""

from __future__ import annotations

import inspect
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from .abi import ValType

if TYPE_CHECKING:
    from .memory import WasmMemory
    from .providers import DebugHandler, EffectHandler, Logger, RandomProvider, TimeProvider
    from .spirit import Spirit

__all__ = [
    "HostFunction",
    "Loa",
    "LoaContext",
    "LoaRegistry",
    "create_loa",
    "f32",
    "f64",
    "i32",
    "i64",
]


@dataclass(frozen=True, slots=True)
class _Wasm:
    type: ValType


#: Annotate a custom host function's parameter or result as wasm ``i32`` (the default for int).
i32 = Annotated[int, _Wasm("i32")]
#: Annotate as wasm ``i64``.
i64 = Annotated[int, _Wasm("i64")]
#: Annotate as wasm ``f32``.
f32 = Annotated[float, _Wasm("f32")]
#: Annotate as wasm ``f64`` (the default for float).
f64 = Annotated[float, _Wasm("f64")]


class LoaContext:
    """What a host function factory receives: the calling Spirit and its providers."""

    __slots__ = ("spirit",)

    def __init__(self, spirit: Spirit) -> None:
        self.spirit = spirit

    @property
    def memory(self) -> WasmMemory:
        """The Spirit's memory (raises if the Spirit has none)."""
        return self.spirit.memory

    @property
    def logger(self) -> Logger:
        """The Spirit's logger."""
        return self.spirit.logger

    @property
    def time(self) -> TimeProvider:
        """The Spirit's time provider."""
        return self.spirit.time_provider

    @property
    def random(self) -> RandomProvider:
        """The Spirit's random provider."""
        return self.spirit.random_provider

    @property
    def effects(self) -> EffectHandler:
        """The Spirit's effect handler."""
        return self.spirit.effect_handler

    @property
    def debugger(self) -> DebugHandler:
        """The Spirit's debug handler."""
        return self.spirit.debug_handler

    @property
    def debug(self) -> bool:
        """Whether the Spirit was loaded with ``debug=True``."""
        return self.spirit.debug


Factory = Callable[[LoaContext], Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class HostFunction:
    """A host function: import name, factory, and (optionally) an explicit wasm signature.

    Without ``params``/``results`` the signature is read from the annotations of the callable
    the factory returns.
    """

    name: str
    factory: Factory
    params: tuple[ValType, ...] | None = None
    results: tuple[ValType, ...] | None = None


@dataclass(slots=True)
class Loa:
    """A named, versioned group of host functions (a service)."""

    name: str
    version: str
    functions: dict[str, HostFunction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, fn in self.functions.items():
            if key != fn.name:
                raise ValueError(f"Loa {self.name}: function key {key!r} != name {fn.name!r}")


def create_loa(
    name: str,
    version: str,
    functions: Mapping[str, Factory | HostFunction],
) -> Loa:
    """Build a :class:`Loa` from ``{import_name: factory}`` (or ready ``HostFunction``\\ s)."""
    built: dict[str, HostFunction] = {}
    for import_name, item in functions.items():
        if isinstance(item, HostFunction):
            built[import_name] = item
        elif callable(item):
            built[import_name] = HostFunction(import_name, item)
        else:
            raise TypeError(f"Loa {name}: {import_name!r} must be a factory or HostFunction")
    return Loa(name, version, built)


class LoaRegistry:
    """The Loas a Spirit or session links against. The core Loa is always present."""

    def __init__(self, loas: Iterable[Loa] = ()) -> None:
        from .loas import CORE_LOA  # the core Loa imports this module

        self._core = CORE_LOA
        self._loas: dict[str, Loa] = {CORE_LOA.name: CORE_LOA}
        self._lock = threading.Lock()
        for loa in loas:
            self.register(loa)

    def register(self, loa: Loa) -> None:
        """Add ``loa``; a name already registered is refused with ``ValueError``."""
        with self._lock:
            if loa.name in self._loas:
                raise ValueError(f"a Loa named {loa.name!r} is already registered")
            self._loas[loa.name] = loa

    def unregister(self, name: str) -> None:
        """Remove a Loa; the core Loa cannot be removed."""
        if name == self._core.name:
            raise ValueError(f"the core Loa {name!r} cannot be unregistered")
        with self._lock:
            if self._loas.pop(name, None) is None:
                raise KeyError(f"no Loa named {name!r}")

    def get(self, name: str) -> Loa | None:
        """The Loa called ``name``, or ``None``."""
        return self._loas.get(name)

    def has(self, name: str) -> bool:
        """Whether a Loa called ``name`` is registered."""
        return name in self._loas

    def all(self) -> list[Loa]:
        """Every registered Loa, the core first, then in registration order."""
        with self._lock:
            return list(self._loas.values())

    def copy(self) -> LoaRegistry:
        """An independent registry with the same Loas."""
        reg = LoaRegistry()
        for loa in self.all()[1:]:
            reg.register(loa)
        return reg

    def __iter__(self) -> typing.Iterator[Loa]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._loas)


_PY_TO_WASM: dict[object, ValType] = {int: "i32", bool: "i32", float: "f64"}


class Marshal:
    """How a custom host function's Python signature maps to wasm (``str``/``bytes`` aware)."""

    __slots__ = ("param_kinds", "params", "result_kind", "results")

    def __init__(
        self, params: tuple[ValType, ...], results: tuple[ValType, ...],
        param_kinds: tuple[str, ...], result_kind: str,
    ) -> None:
        self.params = params
        self.results = results
        self.param_kinds = param_kinds  # per Python parameter: a ValType, "str" or "bytes"
        self.result_kind = result_kind  # a ValType, "str", "bytes" or "none"

    @property
    def is_plain(self) -> bool:
        """True when no parameter or result needs memory marshalling."""
        return "str" not in self.param_kinds and "bytes" not in self.param_kinds and \
            self.result_kind not in ("str", "bytes")


def _kind(annotation: object, where: str) -> str:
    if typing.get_origin(annotation) is Annotated:
        for meta in typing.get_args(annotation)[1:]:
            if isinstance(meta, _Wasm):
                return meta.type
        annotation = typing.get_args(annotation)[0]
    if annotation is str:
        return "str"
    if annotation is bytes:
        return "bytes"
    if annotation in _PY_TO_WASM:
        return _PY_TO_WASM[annotation]
    raise TypeError(
        f"{where}: cannot map annotation {annotation!r} to a wasm type; use int, float, bool, "
        "str, bytes or vudo.i32/i64/f32/f64, or give the signature explicitly"
    )


def marshal_for(fn: Callable[..., Any], name: str) -> Marshal:
    """Derive the wasm signature of ``fn`` from its annotations."""
    target = fn
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # unresolvable forward references
        raise TypeError(f"host function {name}: cannot read annotations: {exc}") from exc
    sig = inspect.signature(target)
    kinds: list[str] = []
    params: list[ValType] = []
    for pname, p in sig.parameters.items():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise TypeError(f"host function {name}: parameter {pname!r} must be positional")
        if pname not in hints:
            raise TypeError(f"host function {name}: parameter {pname!r} has no annotation")
        kind = _kind(hints[pname], f"host function {name}, parameter {pname!r}")
        kinds.append(kind)
        if kind in ("str", "bytes"):
            params += ["i32", "i32"]
        else:
            params.append(typing.cast(ValType, kind))
    ret = hints.get("return", type(None))
    results: tuple[ValType, ...]
    if ret is type(None) or ret is None:
        rkind, results = "none", ()
    else:
        rkind = _kind(ret, f"host function {name}, result")
        results = ("i32",) if rkind in ("str", "bytes") else (typing.cast(ValType, rkind),)
    return Marshal(tuple(params), tuple(results), tuple(kinds), rkind)
