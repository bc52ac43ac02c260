"""Reading and compiling a Spirit's source: a path, a ``Traversable``, bytes, WAT text or a
compiled ``wasmtime.Module``."""

from __future__ import annotations

import os
import re
from importlib.resources.abc import Traversable
from pathlib import Path

import wasmtime

from .._runtime import valtypes
from .._runtime.cache import get_cache
from .._runtime.engine import get_engine
from .._runtime.wasmcode import note_module
from ..errors import LoadError

__all__ = ["Source", "compile_source", "engine_message", "read_wasm"]

#: What a Spirit can be loaded from.
Source = str | os.PathLike[str] | Traversable | bytes | bytearray | wasmtime.Module

_WASM_MAGIC = b"\0asm"


def _read_source(source: Source) -> tuple[bytes | wasmtime.Module, str, str]:
    """Return (wasm bytes or module, a label for errors, a default Spirit name)."""
    if isinstance(source, wasmtime.Module):
        return source, "<wasmtime.Module>", "spirit"
    return read_wasm(source)


def read_wasm(
    source: str | os.PathLike[str] | Traversable | bytes | bytearray,
) -> tuple[bytes, str, str]:
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
    if isinstance(source, Traversable) and not isinstance(source, os.PathLike):
        return _read_traversable(source)
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
            module = get_cache().get_or_compile(data)
        else:
            module = wasmtime.Module(get_engine(), data)
    except wasmtime.WasmtimeError as exc:
        raise LoadError(label, f"invalid WebAssembly module: {engine_message(exc)}") from None
    valtypes.check_module(module, data, label)  # before wasmtime-py describes any signature
    note_module(module, data)  # does it grow memory itself? (host-abi.md)
    return module, label, default_name


def _read_traversable(source: Traversable) -> tuple[bytes, str, str]:
    """A resource inside a package (``files("vudo") / "examples" / ...``) or a zip."""
    label = str(source)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise LoadError(label, "no such file") from None
    except OSError as exc:
        raise LoadError(label, exc.strerror or str(exc)) from None
    stem = source.name.rsplit(".", 1)[0]
    if source.name.endswith(".wat") or (not data.startswith(_WASM_MAGIC) and b"(module" in data):
        return _wat(data.decode("utf-8", "replace"), label), label, stem
    if not data.startswith(_WASM_MAGIC):
        raise LoadError(label, "not a WebAssembly module (missing the \\0asm header)")
    return data, label, stem
