"""Genes: structs laid out in a Spirit's linear memory (host-abi.md, "Genes").

``GeneLayout`` describes where each field lives; :func:`gene_layout` computes the default layout
(declaration order, natural alignment, size rounded up to the largest alignment).
:meth:`vudo.WasmMemory.read_gene` and :meth:`~vudo.WasmMemory.write_gene` use it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args, overload

__all__ = ["GeneField", "GeneLayout", "GeneType", "gene_layout"]

GeneType = Literal["i32", "i64", "f32", "f64", "bool", "string"]

#: (size, struct format) of each field type; ``string`` is an i32 pointer.
FIELD_FORMATS: dict[str, tuple[int, str]] = {
    "i32": (4, "<i"),
    "i64": (8, "<q"),
    "f32": (4, "<f"),
    "f64": (8, "<d"),
    "bool": (4, "<i"),
    "string": (4, "<I"),
}
_TYPES = frozenset(get_args(GeneType))


@dataclass(frozen=True, slots=True)
class GeneField:
    """One field: its name, type and byte offset from the start of the gene."""

    name: str
    type: GeneType
    offset: int

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(
                f"gene field {self.name!r}: unknown type {self.type!r} "
                f"(expected one of {', '.join(sorted(_TYPES))})"
            )
        if self.offset < 0:
            raise ValueError(f"gene field {self.name!r}: negative offset {self.offset}")

    @property
    def size(self) -> int:
        """Bytes the field occupies."""
        return FIELD_FORMATS[self.type][0]


@dataclass(frozen=True, slots=True)
class GeneLayout:
    """A gene: name, fields, total size and alignment (all in bytes)."""

    name: str
    fields: tuple[GeneField, ...]
    size: int
    alignment: int = 8
    # Compiled once: one struct reading every field at once (None if fields overlap), and the
    # runs of adjacent scalar fields a complete write packs at once (None with string fields).
    _reader: struct.Struct | None = field(default=None, init=False, repr=False, compare=False)
    _runs: tuple[_Run, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __init__(
        self, name: str, fields: Iterable[GeneField], size: int, alignment: int = 8
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "alignment", alignment)
        if alignment < 1 or alignment & (alignment - 1):
            raise ValueError(f"gene {name}: alignment {alignment} is not a power of two")
        seen: set[str] = set()
        for f in self.fields:
            if f.name in seen:
                raise ValueError(f"gene {name}: duplicate field {f.name!r}")
            seen.add(f.name)
            if f.offset + f.size > size:
                raise ValueError(
                    f"gene {name}: field {f.name!r} ({f.type} at {f.offset}) "
                    f"does not fit in {size} bytes"
                )
        object.__setattr__(self, "_reader", _compile_reader(self.fields, size))
        plain = self._reader is not None and all(f.type != "string" for f in self.fields)
        object.__setattr__(self, "_runs", _compile_runs(self.fields) if plain else None)

    def field(self, name: str) -> GeneField:
        """The field called ``name`` (``KeyError`` if absent)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"gene {self.name} has no field {name!r}")


def _compile_reader(fields: tuple[GeneField, ...], size: int) -> struct.Struct | None:
    """One little-endian struct reading every field, in declaration order.

    ``None`` when fields overlap or are not declared in offset order (read field by field).
    """
    fmt, pos = "<", 0
    for f in fields:
        if f.offset < pos:
            return None
        fmt += f"{f.offset - pos}x" if f.offset > pos else ""
        fmt += FIELD_FORMATS[f.type][1][1:]
        pos = f.offset + f.size
    return struct.Struct(fmt + (f"{size - pos}x" if size > pos else ""))


@dataclass(frozen=True, slots=True)
class _Run:
    """Adjacent scalar fields written with one struct (no padding between them)."""

    offset: int
    packer: struct.Struct
    fields: tuple[GeneField, ...]


def _compile_runs(fields: tuple[GeneField, ...]) -> tuple[_Run, ...]:
    runs: list[list[GeneField]] = []
    for f in fields:
        if runs and runs[-1][-1].offset + runs[-1][-1].size == f.offset:
            runs[-1].append(f)
        else:
            runs.append([f])
    return tuple(
        _Run(run[0].offset,
             struct.Struct("<" + "".join(FIELD_FORMATS[f.type][1][1:] for f in run)),
             tuple(run))
        for run in runs
    )


def pack_complete(
    layout: GeneLayout, values: Mapping[str, object]
) -> list[tuple[int, bytes]] | None:
    """Pack a complete set of plain values run by run, or ``None`` when the careful path must
    decide (a missing field, a string field, a value of another type or out of range)."""
    runs = layout._runs
    if runs is None or len(values) != len(layout.fields):
        return None
    out: list[tuple[int, bytes]] = []
    try:
        for run in runs:
            args: list[object] = []
            for f in run.fields:
                v = values[f.name]
                t = type(v)
                if f.type == "bool":
                    if t is not bool and t is not int:
                        return None
                    v = 1 if v else 0
                elif t is not int and (t is not float or f.type in ("i32", "i64")):
                    return None
                args.append(v)
            out.append((run.offset, run.packer.pack(*args)))
    except (KeyError, struct.error, OverflowError):
        return None
    return out


# Overloads, because mypy cannot infer a dict literal's value type against the union.
@overload
def gene_layout(name: str, fields: Mapping[str, GeneType]) -> GeneLayout: ...
@overload
def gene_layout(name: str, fields: Iterable[tuple[str, GeneType]]) -> GeneLayout: ...
def gene_layout(
    name: str, fields: Iterable[tuple[str, GeneType]] | Mapping[str, GeneType]
) -> GeneLayout:
    """The default layout of a gene: fields in order, each at its natural alignment.

    >>> gene_layout("Point", [("x", "i64"), ("y", "i64")]).size
    16
    """
    items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    offset = 0
    alignment = 1
    out: list[GeneField] = []
    for fname, ftype in items:
        if ftype not in _TYPES:
            raise ValueError(f"gene {name}: field {fname!r} has unknown type {ftype!r}")
        size = FIELD_FORMATS[ftype][0]
        offset = (offset + size - 1) & ~(size - 1)
        out.append(GeneField(fname, ftype, offset))
        offset += size
        alignment = max(alignment, size)
    total = (offset + alignment - 1) & ~(alignment - 1)
    return GeneLayout(name, out, total, alignment)


_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)


def encode_scalar(layout: GeneLayout, f: GeneField, value: object) -> bytes:
    """Validate ``value`` for field ``f`` and pack it (not for ``string`` fields)."""
    where = f"gene {layout.name}.{f.name} ({f.type})"
    if f.type == "bool":
        if not isinstance(value, bool | int):
            raise TypeError(f"{where}: expected bool, got {type(value).__name__}")
        return struct.pack("<i", 1 if value else 0)
    if f.type in ("i32", "i64"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{where}: expected int, got {type(value).__name__}")
        lo, hi = _I32 if f.type == "i32" else _I64
        if not lo <= value <= hi:
            raise ValueError(f"{where}: {value} is out of range [{lo}, {hi}]")
        return struct.pack(FIELD_FORMATS[f.type][1], value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{where}: expected float, got {type(value).__name__}")
    try:
        return struct.pack(FIELD_FORMATS[f.type][1], float(value))
    except OverflowError as exc:
        raise ValueError(f"{where}: {value} does not fit in {f.type}") from exc
