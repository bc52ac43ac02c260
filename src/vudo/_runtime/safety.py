"""Last lines of defence on vudo's error paths, which run inside ctypes callbacks.

An exception escaping a callback becomes an uninitialised return value that wasmtime reads
as a trap pointer. So the text of a user exception is taken without trusting its ``__str__``,
and a failure to build the error at all still ends in a real trap.
"""

from __future__ import annotations

import resource
import sys
import threading

from ..errors import StackExhausted
from . import ffi as _ffi

__all__ = ["HEADROOM_FRAMES", "ensure_headroom", "last_resort_trap", "text_of",
           "wasm_stack_budget"]

#: Python frames a call must leave free below the recursion limit: its epoch callback and
#: host functions run as ctypes callbacks, and one that cannot even start returns garbage.
HEADROOM_FRAMES = 50

_WASMTIME_DEFAULT_STACK = 512 * 1024
_MIN_WASM_STACK = 64 * 1024


def text_of(exc: BaseException) -> str:
    """``str(exc)``, or a description of it when its ``__str__`` raises or returns junk."""
    try:
        text = str(exc)
        if isinstance(text, str):
            return text
    except BaseException:  # any failure means: describe it another way
        pass
    try:
        return f"<{type(exc).__name__} whose str() failed>"
    except BaseException:
        return "<an exception whose str() failed>"


def last_resort_trap() -> int:
    """A trap to return when reporting a host function's failure itself failed."""
    try:
        return _ffi.trap_new("host function failed (and its error could not be reported)")
    except BaseException:
        return 0


def wasm_stack_budget() -> int:
    """How deep wasm may recurse, in bytes: wasmtime's default, or half the smallest native
    stack this process gives a thread (``ulimit -s``, ``threading.stack_size``), whichever is
    less. wasmtime checks only its own frames against the budget: the other half is for the
    host frames under it (the Python host function a deep Spirit calls)."""
    sizes = []
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        sizes.append(soft)
    configured = threading.stack_size()
    if configured:
        sizes.append(configured)
    budget = min([_WASMTIME_DEFAULT_STACK, *(s // 2 for s in sizes)])
    return max(budget, _MIN_WASM_STACK)


def ensure_headroom(spirit: str, function: str) -> None:
    """Raise :class:`~vudo.errors.StackExhausted` when the Python stack is too deep to call.

    Costs a frame walk (a few hundred ns), so only the call path of Spirits with limits pays it
    (where an epoch callback that cannot start would make the timeout never fire).
    """
    depth_needed = sys.getrecursionlimit() - HEADROOM_FRAMES
    try:
        sys._getframe(depth_needed)
    except ValueError:
        return  # the stack is shallower than that: room enough
    raise StackExhausted(
        f"cannot call {function!r} on Spirit {spirit!r}: the Python stack is within "
        f"{HEADROOM_FRAMES} frames of the recursion limit ({sys.getrecursionlimit()})"
    )
