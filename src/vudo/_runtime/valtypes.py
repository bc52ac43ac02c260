"""Which wasm value types a Spirit may use, checked from the bytes before wasmtime sees them.

A signature with a type vudo cannot pass is a :class:`~vudo.errors.LoadError` naming the
function and the type, raised by :func:`check_module` when the module is compiled: wasmtime-py
would otherwise abort the whole process the first time it describes that signature.

References: an export may take and return ``funcref`` and ``externref``. From Python, a null
reference is ``None``; a non-null ``funcref`` result is a :class:`FuncRef`, which only the
Spirit that returned it accepts back (another Spirit's store would run the first Spirit's code
on its memory, outside its lock). A non-null ``externref`` result is an opaque
:class:`ExternRef`: vudo does not root wasm references, so it cannot be passed back. Host
function imports take numbers only.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Iterable
from typing import Any

import wasmtime
from wasmtime import _ffi as wffi

from ..errors import ForeignReferenceError, LoadError
from .wasmscan import ModuleShape, ScanError, scan

__all__ = [
    "EXPORT_TYPES",
    "IMPORT_TYPES",
    "REF_TYPES",
    "TEMPLATE_NAMES",
    "ExternRef",
    "FuncRef",
    "check_arg",
    "check_module",
    "exports_by_name",
    "param_stmt",
    "result_expr",
    "shape_of",
    "type_name",
]

IMPORT_TYPES = ("i32", "i64", "f32", "f64")
REF_TYPES = frozenset({"funcref", "externref"})
EXPORT_TYPES = (*IMPORT_TYPES, *sorted(REF_TYPES))
_MAX_LISTED = 5

_shapes: weakref.WeakKeyDictionary[wasmtime.Module, ModuleShape] = weakref.WeakKeyDictionary()


def check_module(module: wasmtime.Module, wasm: bytes, label: str) -> ModuleShape:
    """Read ``wasm`` (the bytes of ``module``) and refuse signatures vudo cannot pass.

    Remembered per module, so a cache hit costs a dictionary lookup. Raises ``LoadError``.
    """
    shape = _shapes.get(module)
    if shape is not None:
        return shape
    try:
        shape = scan(wasm)
    except (ScanError, IndexError) as exc:
        raise LoadError(label, f"cannot read the module's signatures: {exc}") from None
    problems = [
        f"import {mod}.{name} uses {t}" for mod, name, p, r in shape.func_imports
        for t in _odd(p, r, IMPORT_TYPES)
    ]
    problems += [
        f"export {name!r} uses {t}" for name, (p, r) in shape.func_exports.items()
        for t in _odd(p, r, EXPORT_TYPES)
    ]
    if problems:
        more = len(problems) - _MAX_LISTED
        listed = "; ".join(problems[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
        raise LoadError(
            label,
            f"unsupported value type: {listed} (host functions take {', '.join(IMPORT_TYPES)}; "
            f"exports also take funcref and externref)",
        )
    _shapes[module] = shape
    return shape


def _odd(params: Iterable[str], results: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    seen: list[str] = []
    for t in (*params, *results):
        if t not in allowed and t not in seen:
            seen.append(t)
    return seen


def shape_of(module: wasmtime.Module) -> ModuleShape | None:
    """The checked shape of a module compiled by vudo (``None`` for a foreign Module)."""
    return _shapes.get(module)


def type_name(t: wasmtime.ValType) -> str:
    """vudo's name of a checked value type (wasmtime-py calls ``externref`` "anyref")."""
    name = str(t)
    return "externref" if name == "anyref" else name


def exports_by_name(
    instance: wasmtime.Instance, store: wasmtime.Store, names: Iterable[str]
) -> dict[str, Any]:
    """The instance's exports, looked up by name.

    ``Instance.exports`` walks the export list from the start for each index (quadratic: 16,000
    exports took seconds); a lookup by name does not.
    """
    out: dict[str, Any] = {}
    ctx = store._context()
    inst = ctypes.byref(instance._instance)
    for name in names:
        raw = name.encode("utf-8")
        item = wffi.wasmtime_extern_t()
        if wffi.wasmtime_instance_export_get(ctx, inst, raw, len(raw), ctypes.byref(item)):
            out[name] = wasmtime._extern.wrap_extern(item)
    return out


# ------------------------------------------------------------------------------------------
# References across the Python boundary
# ------------------------------------------------------------------------------------------
class FuncRef:
    """A non-null ``funcref`` returned by a Spirit; only that Spirit accepts it back."""

    __slots__ = ("_raw", "_spirit")

    def __init__(self, spirit: Any, raw: int) -> None:
        self._spirit = spirit  # keeps the store (which owns the function) alive
        self._raw = raw

    @property
    def spirit(self) -> str:
        """The name of the Spirit the function belongs to."""
        return str(self._spirit.name)

    def __repr__(self) -> str:
        return f"<FuncRef of Spirit {self.spirit!r}>"


class ExternRef:
    """A non-null ``externref`` returned by a Spirit (opaque: it cannot be passed back)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<ExternRef (opaque)>"


def funcref_in(spirit: Any, value: object) -> int | None:
    """The raw funcref to pass for ``value`` (``None`` or a FuncRef of ``spirit``)."""
    if value is None:
        return None
    if isinstance(value, FuncRef):
        if value._spirit is spirit:
            return value._raw
        raise ForeignReferenceError(
            f"a funcref of Spirit {value.spirit!r} cannot be passed to Spirit {spirit.name!r}: "
            "a function reference only works in the store that made it"
        )
    raise TypeError(f"a funcref is None or a FuncRef, not {type(value).__name__}")


def externref_in(_spirit: Any, value: object) -> int:
    """The raw externref to pass for ``value``: only ``None`` (null) can be passed."""
    if value is None:
        return 0
    raise TypeError(
        f"an externref argument must be None (null), not {type(value).__name__}: "
        "vudo does not pass host objects as wasm references"
    )


def funcref_out(spirit: Any, raw: int | None) -> FuncRef | None:
    """A funcref result as a Python value."""
    return FuncRef(spirit, raw) if raw else None


def externref_out(raw: int) -> ExternRef | None:
    """An externref result as a Python value."""
    return ExternRef() if raw else None


def check_arg(spirit: Any, t: str, value: object) -> None:
    """Raise the ``TypeError`` for a reference argument that cannot be passed."""
    (funcref_in if t == "funcref" else externref_in)(spirit, value)


#: Names the generated call paths use (merged into their namespace).
TEMPLATE_NAMES: dict[str, Any] = {
    "_funcref_in": funcref_in, "_externref_in": externref_in,
    "_funcref_out": funcref_out, "_externref_out": externref_out,
}


def param_stmt(t: str, slot: str, arg: str) -> str:
    """The generated statement storing argument ``arg`` of type ``t`` in ``slot``."""
    if t in REF_TYPES:
        return f"{slot}.{t} = _{t}_in(state, {arg})"
    return f"{slot}.{t} = {arg}"


def result_expr(t: str, slot: str) -> str:
    """The generated expression reading a result of type ``t`` from ``slot``."""
    if t == "funcref":
        return f"_funcref_out(state, {slot}.funcref)"
    if t == "externref":
        return f"_externref_out({slot}.externref)"
    return f"{slot}.{t}"
