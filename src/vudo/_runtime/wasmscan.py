"""A small reader of a module's binary: function signatures, exports, memories and tables.

wasmtime-py describes value types through the wasm C API, which *aborts the process*
(``unimplemented!``) on a type it has no C name for (``v128``, ``anyref``, ``exnref``, typed
function references, GC types...). So vudo never asks wasmtime for a signature it has not
first read here, from the bytes: a module is only described by wasmtime once every function
import and export uses a type vudo can pass. Also used to size the instance for ``max_memory``
(all memories and tables) and to look exports up by name without wasmtime's quadratic walk.

The module was validated by wasmtime before it is read here, so this reader only needs to be
correct for valid modules; anything it does not understand is reported, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModuleShape", "ScanError", "scan"]

_NUMERIC = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
# Abstract heap types, by their one-byte (negative s33) encoding.
_HEAP = {
    0x70: "func", 0x6F: "extern", 0x6E: "any", 0x6D: "eq", 0x6C: "i31", 0x6B: "struct",
    0x6A: "array", 0x69: "exn", 0x68: "cont", 0x73: "nofunc", 0x72: "noextern", 0x71: "none",
    0x74: "noexn", 0x75: "nocont",
}
# Nullable shorthands: funcref, externref, anyref...
_SHORTHAND = {
    b: ("nullfuncref" if h == "nofunc" else "nullexternref" if h == "noextern"
        else "nullref" if h == "none" else "nullexnref" if h == "noexn"
        else "nullcontref" if h == "nocont" else f"{h}ref")
    for b, h in _HEAP.items()
}
_PAGE = 65536


class ScanError(ValueError):
    """The bytes use an encoding this reader does not know (or are not a valid module)."""


@dataclass(slots=True)
class ModuleShape:
    """What vudo needs to know about a module before wasmtime describes any of it."""

    #: ``(module, name, params, results)`` of each function import, in order.
    func_imports: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=list)
    #: ``name -> (params, results)`` of each exported function, in export order.
    func_exports: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict)
    #: Every export name, in order, with its kind (``func``, ``table``, ``memory``...).
    exports: list[tuple[str, str]] = field(default_factory=list)
    #: ``(minimum bytes, maximum bytes or None)`` of each memory, imported ones first.
    memories: list[tuple[int, int | None]] = field(default_factory=list)
    #: ``(minimum elements, maximum elements or None)`` of each table, imported ones first.
    tables: list[tuple[int, int | None]] = field(default_factory=list)
    #: How many of ``memories`` are imported (they come first).
    imported_memories: int = 0
    #: Data segments and their total bytes (read only when ``scan(..., data=True)``).
    data_segments: int = 0
    data_bytes: int = 0


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ScanError("unexpected end of section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > bits + 7:
                raise ScanError("integer too long")
        return result

    def s33(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 40:
                raise ScanError("integer too long")
        if b & 0x40:
            result -= 1 << shift
        return result

    def skip_leb(self) -> None:
        """Pass over one LEB128 of up to 64 bits, signed or not."""
        for _ in range(10):
            if not self.byte() & 0x80:
                return
        raise ScanError("integer too long")

    def name(self) -> str:
        n = self.uleb()
        if self.pos + n > self.end:
            raise ScanError("name runs past its section")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")


def _heap(r: _Reader) -> str:
    value = r.s33()
    if value >= 0:
        return f"${value}"
    try:
        return _HEAP[value + 0x80]  # a one-byte negative s33 is the abstract type's byte
    except KeyError:
        raise ScanError(f"unknown heap type {value}") from None


def _valtype(r: _Reader) -> str:
    b = r.byte()
    if b in _NUMERIC:
        return _NUMERIC[b]
    if b in _SHORTHAND:
        return _SHORTHAND[b]
    if b in (0x63, 0x64):
        heap = _heap(r)
        if b == 0x63 and heap in ("func", "extern"):
            return f"{heap}ref"  # (ref null func) is funcref
        return f"(ref {'null ' if b == 0x63 else ''}{heap})"
    raise ScanError(f"unknown value type 0x{b:02x}")


def _limits(r: _Reader) -> tuple[int, int | None, int]:
    flags = r.byte()
    if flags & ~0x0F:
        raise ScanError(f"unknown limits flags 0x{flags:02x}")
    bits = 64 if flags & 0x04 else 32
    minimum = r.uleb(bits)
    maximum = r.uleb(bits) if flags & 0x01 else None
    page = 1 << r.uleb() if flags & 0x08 else _PAGE
    return minimum, maximum, page


def _memory(r: _Reader) -> tuple[int, int | None]:
    minimum, maximum, page = _limits(r)
    return minimum * page, None if maximum is None else maximum * page


def _table(r: _Reader) -> tuple[int, int | None]:
    _valtype(r)
    minimum, maximum, _ = _limits(r)
    return minimum, maximum


def _types(r: _Reader) -> list[tuple[tuple[str, ...], tuple[str, ...]] | None]:
    """Every type of the type section (``None`` for non-function types)."""
    out: list[tuple[tuple[str, ...], tuple[str, ...]] | None] = []
    for _ in range(r.uleb()):
        b = r.data[r.pos] if r.pos < r.end else -1
        if b == 0x4E:  # a recursion group
            r.byte()
            for _ in range(r.uleb()):
                out.append(_subtype(r))
        else:
            out.append(_subtype(r))
    return out


def _subtype(r: _Reader) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    b = r.byte()
    if b in (0x50, 0x4F):  # sub / sub final: supertypes, then the composite type
        for _ in range(r.uleb()):
            r.uleb()
        b = r.byte()
    if b == 0x60:
        params = tuple(_valtype(r) for _ in range(r.uleb()))
        results = tuple(_valtype(r) for _ in range(r.uleb()))
        return params, results
    if b == 0x5F:  # struct
        for _ in range(r.uleb()):
            _field(r)
        return None
    if b == 0x5E:  # array
        _field(r)
        return None
    if b == 0x5D:  # continuation
        r.s33()
        return None
    raise ScanError(f"unknown composite type 0x{b:02x}")


def _field(r: _Reader) -> None:
    if r.pos < r.end and r.data[r.pos] in (0x78, 0x77):  # packed i8 / i16
        r.byte()
    else:
        _valtype(r)
    r.byte()  # mutability


_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


def scan(wasm: bytes, *, data: bool = False) -> ModuleShape:
    """Read the signatures, exports, memories and tables of a (valid) module's bytes.

    With ``data``, also count the data segments and their bytes (``vudo inspect``; loading
    does not need them). Raises :class:`ScanError` for an encoding it does not know.
    """
    if wasm[:4] != b"\0asm" or len(wasm) < 8:
        raise ScanError("not a WebAssembly module")
    if wasm[4:8] != b"\x01\0\0\0":
        raise ScanError("not a core WebAssembly module (a component?)")
    shape = ModuleShape()
    types: list[tuple[tuple[str, ...], tuple[str, ...]] | None] = []
    funcs: list[tuple[tuple[str, ...], tuple[str, ...]] | None] = []
    exports: list[tuple[str, int, int]] = []
    top = _Reader(wasm, 8)
    while top.pos < top.end:
        sid = top.byte()
        size = top.uleb()
        end = top.pos + size
        if end > top.end:
            raise ScanError("section runs past the end of the module")
        r = _Reader(wasm, top.pos, end)
        if sid == 1:
            types = _types(r)
        elif sid == 2:
            for _ in range(r.uleb()):
                mod, name = r.name(), r.name()
                kind = r.byte()
                if kind == 0:
                    sig = _type_at(types, r.uleb())
                    funcs.append(sig)
                    if sig is not None:
                        shape.func_imports.append((mod, name, *sig))
                elif kind == 1:
                    shape.tables.append(_table(r))
                elif kind == 2:
                    shape.memories.append(_memory(r))
                    shape.imported_memories += 1
                elif kind == 3:
                    _valtype(r)
                    r.byte()
                elif kind == 4:
                    r.byte()
                    r.uleb()
                else:
                    raise ScanError(f"unknown import kind {kind}")
        elif sid == 3:
            funcs.extend(_type_at(types, r.uleb()) for _ in range(r.uleb()))
        elif sid == 4:
            _tables(r, shape)
        elif sid == 5:
            shape.memories.extend(_memory(r) for _ in range(r.uleb()))
        elif sid == 7:
            for _ in range(r.uleb()):
                name = r.name()
                kind = r.byte()
                exports.append((name, kind, r.uleb()))
        elif sid == 11 and data:
            _data(r, shape)
        top.pos = end
    for name, kind, index in exports:
        shape.exports.append((name, _KINDS.get(kind, "unknown")))
        if kind == 0:
            if index >= len(funcs) or funcs[index] is None:
                raise ScanError(f"export {name!r} names function {index}, which has no type")
            sig = funcs[index]
            assert sig is not None
            shape.func_exports[name] = sig
    return shape


def _type_at(
    types: list[tuple[tuple[str, ...], tuple[str, ...]] | None], index: int
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if index >= len(types):
        raise ScanError(f"type index {index} out of range")
    return types[index]


def _data(r: _Reader, shape: ModuleShape) -> None:
    shape.data_segments = count = r.uleb()
    for _ in range(count):
        kind = r.uleb()
        if kind == 2:
            r.uleb()  # memory index
        if kind in (0, 2):
            _const_expr(r)
        length = r.uleb()
        shape.data_bytes += length
        r.pos += length


def _const_expr(r: _Reader) -> None:
    while True:
        op = r.byte()
        if op == 0x0B:  # end
            return
        if op in (0x41, 0x42):  # i32.const, i64.const
            r.skip_leb()
        elif op == 0x23:  # global.get
            r.uleb()
        elif op not in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const arithmetic
            raise ScanError(f"unsupported opcode 0x{op:02x} in a constant expression")


def _tables(r: _Reader, shape: ModuleShape) -> None:
    count = r.uleb()
    for i in range(count):
        if r.pos < r.end and r.data[r.pos] == 0x40:
            # A table with an initialiser expression: the expression's length is not encoded,
            # so this and the remaining tables count as unbounded (the safe side).
            r.byte()
            r.byte()
            shape.tables.append((_table(r)[0], None))
            shape.tables.extend((0, None) for _ in range(count - i - 1))
            return
        shape.tables.append(_table(r))
