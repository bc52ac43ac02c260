"""Turning command-line text into wasm values: signatures, arguments and sizes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import click
import wasmtime

from ._errors import UsageFailure

__all__ = ["convert_args", "format_signature", "func_signature", "parse_size", "size_option"]

_INT_RANGES = {"i32": (-(2**31), 2**32 - 1), "i64": (-(2**63), 2**64 - 1)}


def func_signature(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``(params, results)`` wasm type names of a function type."""
    return tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results)


def format_signature(params: Sequence[str], results: Sequence[str]) -> str:
    """``(i64, i64) -> i64``; ``() -> ()``; several results as ``(i32, i64)``."""
    res = results[0] if len(results) == 1 else f"({', '.join(results)})"
    return f"({', '.join(params)}) -> {res}"


def _int_from_text(text: str) -> int | None:
    t = text.strip().lower()
    if t in ("true", "false"):
        return int(t == "true")
    for base in (10, 0):
        try:
            return int(t, base)
        except ValueError:
            continue
    return None


def convert_args(function: str, params: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """Convert command-line text (or JSON/TOML values) to the wasm parameter types.

    Integers accept decimal, ``0x``/``0o``/``0b`` and ``true``/``false``; floats accept
    anything :class:`float` does (``1e3``, ``inf``, ``nan``). Raises :class:`UsageFailure`.
    """
    if len(values) != len(params):
        wanted = f"({', '.join(params)})"
        raise UsageFailure(
            f"{function}{wanted} takes {len(params)} argument(s), got {len(values)}"
        )
    out: list[Any] = []
    for i, (t, value) in enumerate(zip(params, values, strict=True)):
        where = f"argument {i} of {function} ({t})"
        if t in _INT_RANGES:
            number: int | None
            if isinstance(value, bool):
                number = int(value)
            elif isinstance(value, int):
                number = value
            elif isinstance(value, str):
                number = _int_from_text(value)
            else:
                number = None
            if number is None:
                raise UsageFailure(f"{where}: {value!r} is not an integer")
            lo, hi = _INT_RANGES[t]
            if not lo <= number <= hi:
                raise UsageFailure(f"{where}: {number} is out of range [{lo}, {hi}]")
            out.append(number)
        elif t in ("f32", "f64"):
            if isinstance(value, bool):
                out.append(float(value))
                continue
            try:
                if not isinstance(value, int | float | str):
                    raise TypeError
                out.append(float(value))
            except (TypeError, ValueError, OverflowError):
                raise UsageFailure(f"{where}: {value!r} is not a number") from None
        else:
            raise UsageFailure(f"{where}: parameters of type {t} cannot be given from here")
    return out


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
    "p": 65536, "page": 65536, "pages": 65536,
}


def parse_size(text: str | int) -> int:
    """Bytes from ``65536``, ``64KiB``, ``16M``, ``1G`` or ``10pages`` (units are binary).

    Raises ``ValueError``.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        m = _SIZE_RE.match(str(text))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise ValueError(
                f"{text!r} is not a size (examples: 65536, 64KiB, 16M, 1G, 10pages)"
            )
        size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return size


def size_option(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> int | None:
    """Click callback turning a ``SIZE`` option into bytes (see :func:`parse_size`)."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


