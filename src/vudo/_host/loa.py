"""Loas: named groups of host functions, and how a Python signature maps to wasm.

A host function is a *factory*: given a :class:`~vudo.HostContext` (the Spirit's name, memory,
providers, inbox) it returns the Python callable the Spirit will call. The wasm signature comes
from the callable's annotations (``int`` -> i32, ``vudo.i64`` -> i64, ``float`` -> f64,
``str``/``bytes`` parameters -> a ``(ptr, len)`` pair read from memory, a ``str``/``bytes``
result -> a pointer to a length-prefixed block in the host heap), or is given explicitly.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from ..abi import ValType
from ..errors import ConfigError
from .context import HostContext

__all__ = [
    "Factory",
    "HostFunction",
    "Loa",
    "Marshal",
    "create_loa",
    "f32",
    "f64",
    "i32",
    "i64",
    "marshal_for",
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


#: A host function factory: given the calling Spirit's context, the callable it will call.
Factory = Callable[[HostContext], Callable[..., Any]]


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
                raise ConfigError(f"Loa {self.name}: function key {key!r} != name {fn.name!r}")


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
