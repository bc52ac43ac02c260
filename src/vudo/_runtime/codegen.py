"""Code generation for the pure-Python fast paths: one call path and one host trampoline per
wasm signature, generated once and cached.

Generated sources are registered in :mod:`linecache` under a ``<vudo-generated ...>`` file name,
so tracebacks through them show the real lines instead of ``<string>``.
"""

from __future__ import annotations

import ctypes
import linecache
import struct
from collections.abc import Callable
from typing import Any, cast

from . import signals, stackcheck, valtypes

__all__ = ["INT_LIMITS", "caller_template", "generate", "trampoline_template"]

#: Accepted Python ints per wasm int type: signed or unsigned interpretations of the width.
INT_LIMITS = {"i32": (-(2**31), 2**32 - 1), "i64": (-(2**63), 2**64 - 1)}

_CALLER_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Callable[..., Any]] = {}
_TRAMPOLINE_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], Callable[..., Any]] = {}


def generate(kind: str, key: str, source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Compile ``source`` as a module of its own, visible to tracebacks through linecache."""
    # The prefix is how .signals recognises a call path (a signal there is deferred).
    filename = f"{signals.CALL_PATH_FILE} {kind} {key}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # generated from wasm type names only
    return namespace


def _sig_key(params: tuple[str, ...], results: tuple[str, ...]) -> str:
    return f"({','.join(params)})->({','.join(results)})"


def caller_template(
    params: tuple[str, ...], results: tuple[str, ...], tracked: bool
) -> Callable[..., Any]:
    """The generated call path of one wasm signature: a factory ``make(...)`` returning it.

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
        "def make(state, name, acquire, release, stack, ctx, faddr, buf, baddr, trapbuf,"
        " taddr, nslots, call_unchecked, failed, convert, arity):",
        *(f"    {slot} = buf[{i}]" for i, slot in enumerate(slots)),
        "    def call(*args):",
        f"        if len(args) != {n}:",
        "            arity(args)",
    ]
    if n:
        lines.append(f"        {', '.join(names)}{',' if n == 1 else ''} = args")
    lines += [
        "        if not stack_checked.ok:",
        "            stack_check(state, name)",
        "        if not acquire(False):",  # contended: the deadlock-checked wait
        "            state.lock.acquire()",
        "        try:",
        "            guard = state.guard",
        "            if guard is not None:",
        "                guard(name)",
    ]
    if n:
        # ctypes checks the types (TypeError for a str, a float for an int...) and wraps
        # integers to the field's width like wasm does: 2**32 - 1 passed as i32 is -1.
        lines.append("            try:")
        for i, t in enumerate(params):
            if t in INT_LIMITS:
                lo, hi = INT_LIMITS[t]
                lines.append(f"                if not {lo} <= {names[i]} <= {hi}:")
                lines.append("                    convert(args)")
            lines.append(f"                {valtypes.param_stmt(t, f's{i}', names[i])}")
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
        lines.append(f"            return {valtypes.result_expr(results[0], 's0')}")
    else:
        values = ", ".join(valtypes.result_expr(t, f"s{i}") for i, t in enumerate(results))
        lines.append(f"            return ({values},)")
    lines += [
        "        finally:",
        "            release()",
        "    return call",
        "",
    ]
    label = _sig_key(params, results) + (" tracked" if tracked else "")
    namespace = {**valtypes.TEMPLATE_NAMES, "stack_check": stackcheck.check,
                 "stack_checked": stackcheck.checked}
    ns = generate("caller", label, "\n".join(lines), namespace)
    tmpl = cast(Callable[..., Any], ns["make"])
    _CALLER_CACHE[key] = tmpl
    return tmpl


_SLOT_FORMAT = {"i32": "i12x", "i64": "q8x", "f32": "f12x", "f64": "d8x"}
_RESULT_FORMAT = {"i32": "I12x", "i64": "Q8x", "f32": "f12x", "f64": "d8x"}
_RESULT_MASK = {"i32": " & 0xFFFFFFFF", "i64": " & 0xFFFFFFFFFFFFFFFF", "f32": "", "f64": ""}


def trampoline_template(params: tuple[str, ...], results: tuple[str, ...]) -> Callable[..., Any]:
    """The generated host callback of one wasm signature: ``make(fail, fn) -> callback``.

    wasmtime passes the arguments as an array of 16-byte slots of ``max(params, results)``
    entries whose address is the same from one call to the next at a given stack depth, so a
    memoryview of it is rebuilt only when the address changes, and the arguments are read with
    one ``struct.unpack``. The view is taken per call from the address (never kept across a
    nested call), so a re-entrant call of the same import cannot see the outer call's slots.
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
        "    cached = None",
        "    def cb(env, caller, addr, n):",
        "        nonlocal last, cached",
        "        try:",
        "            if addr != last:",
        "                cached = memoryview(slots.from_address(addr)).cast('B')",
        "                last = addr",
        "            view = cached",
        *body,
        # A signal deferred while the host function ran (see .signals) is handled as it returns.
        "            if pending_signals:",
        "                run_deferred()",
        "            return 0",
        "        except BaseException as e:",
        "            return fail(e)",
        "    return cb",
        "",
    ])
    ns: dict[str, Any] = {
        "slots": ctypes.c_char * (16 * nslots),
        "unpack": struct.Struct("<" + "".join(_SLOT_FORMAT[t] for t in params)).unpack_from,
        "pack_into": struct.Struct("<" + "".join(_RESULT_FORMAT[t] for t in results)).pack_into,
        "pending_signals": signals.PENDING, "run_deferred": signals.run_deferred,
    }
    generate("trampoline", _sig_key(params, results), src, ns)
    tmpl = cast(Callable[..., Any], ns["make"])
    _TRAMPOLINE_CACHE[key] = tmpl
    return tmpl
